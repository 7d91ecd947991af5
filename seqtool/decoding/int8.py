"""int8 decoding on a CPU: torch's dynamic quantization of a trained model's linear and recurrent layers.

Weights become int8 once (per tensor, symmetric); each matmul quantizes its input on the fly from the
batch's range and accumulates in int32 (torch.ao.quantization.quantize_dynamic, fbgemm/x86 or qnnpack
kernels). Embeddings, convolutions and norms stay fp32: dynamic quantization has no Conv1d, so ConvS2S
gains only on its linear layers (attention projections, output). A model trained with fake quantization
(train.quantize) is first folded to its quantized float weights. CUDA has no such kernels: refused.
"""

from __future__ import annotations

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
    return torch.ao.quantization.quantize_dynamic(float_model, INT8_LAYERS, dtype=torch.qint8)
