"""int8 decoding on a CPU: torch's dynamic quantization of a trained model's linear and recurrent layers.

Weights become int8 once (per tensor); each matmul quantizes its input on the fly from the batch's range
and accumulates in int32 (torch.ao.quantization.quantize_dynamic with fbgemm/x86 or qnnpack kernels; torch
marks this API as moving to torchao, which seqtool does not depend on yet). Dynamic quantization has no
Conv1d, but seqtool's convolutions (ConvS2S, GCNN) are linear layers over windows, so they become int8
too once their weight normalization is folded in; embeddings and norms stay fp32. A model trained with
fake quantization (train.quantize) is folded to its quantized weights first. CUDA has no such kernels:
refused.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from seqtool.errors import SeqtoolError
from seqtool.models.quantize import fold_quantization

INT8_LAYERS = {nn.Linear, nn.LSTM, nn.GRU}


def int8_model(model: nn.Module, device: torch.device | str) -> nn.Module:
    """The model with int8 linear and LSTM/GRU layers, in eval mode, on the CPU."""
    if torch.device(device).type != "cpu":
        raise SeqtoolError(f"decode.precision int8: dynamic quantization runs on a CPU only and this model is on "
                           f"{torch.device(device).type} (use --device cpu, or decode.precision fp32/bf16 there)")
    float_model = fold_quantization(model).eval()
    with warnings.catch_warnings():  # torch's notices that this API moves to torchao: not the user's concern
        warnings.filterwarnings("ignore", message=r"(?s).*(torch\.ao\.quantization|quantized tensor creation).*")
        return torch.ao.quantization.quantize_dynamic(float_model, INT8_LAYERS, dtype=torch.qint8)
