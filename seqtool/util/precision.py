"""Which autocast dtype a run uses on its device.

A CPU only gains from bf16 when it multiplies bf16 natively (AVX512-BF16 or AMX tiles): there
oneDNN's bf16 matmuls run about 4x the fp32 rate on this project's machine; elsewhere they are
emulated and slower than fp32, so a bf16 recipe falls back to fp32 there.
"""

from __future__ import annotations

import contextlib

import torch

from seqtool.errors import SeqtoolError


def cpu_has_native_bf16() -> bool:
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for plain fp32; `precision` is a recipe's train.precision (auto, fp32, bf16, fp16)."""
    if device.type == "cuda":
        return {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if device.type == "cpu" and precision == "bf16" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype matmuls run in under `precision` here: the autocast dtype, else fp32 (for reports)."""
    return autocast_dtype(precision, device) or torch.float32


def check_precision(recipe, device: torch.device) -> None:
    """fp16 autocast on a CPU is not what a recipe asking for it means: refuse it rather than run fp32."""
    for key, spec in (("train.precision", recipe.train), ("decode.precision", recipe.decode)):
        if spec.precision == "fp16" and device.type != "cuda":
            raise SeqtoolError(f"{key}: fp16 needs a CUDA device and this run is on {device.type} "
                               "(use fp32, or bf16 on a CPU that computes bf16 natively)")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(precision, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
