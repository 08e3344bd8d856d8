"""Device and precision, chosen once at start (nanoGPT's one autocast context)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from softloss_cli.errors import SoftlossError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if name not in DEVICES and not str(name).startswith("cuda:"):
        raise SoftlossError(f"trainer.device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise SoftlossError("trainer.device=cuda but no CUDA device is available; use trainer.device=auto or cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA that supports it, fp16 (+ GradScaler) on older CUDA, fp32 on CPU."""
    if name not in PRECISIONS:
        raise SoftlossError(f"trainer.precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise SoftlossError("trainer.precision=fp16 needs a CUDA device; on the CPU use fp32 or bf16")
        return name
    if device.type == "cuda":
        return "bf16" if native_bf16(device) else "fp16"
    return "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (compute capability 8.0+: A100, H100, ...).

    Not ``torch.cuda.is_bf16_supported()`` alone: by default it also counts emulated bf16,
    which makes a V100 or T4 pick a slow bf16 path where fp16 + GradScaler is the fast one;
    and it asks about the *current* device, not necessarily the one the run uses.
    """
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index) >= (8, 0)


@dataclass
class Precision:
    """The autocast context for forward passes and the GradScaler (enabled only for fp16)."""

    name: str
    device: torch.device

    def __post_init__(self):
        self.dtype = _DTYPES[self.name]
        enabled = self.name == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=enabled)

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)
