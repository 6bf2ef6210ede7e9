"""Device choice and mixed precision, kept in one place so the loop and evaluation agree."""

from __future__ import annotations

import contextlib
import logging

import torch

from config.errors import ConfigError

log = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def select_device(device_type: str = "auto") -> torch.device:
    """`auto` prefers CUDA, then Apple's MPS, then the CPU; an explicit choice must exist."""
    if device_type == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("machine.device_type=cuda but no CUDA device is visible; use machine.device_type=cpu or auto")
    if device_type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("machine.device_type=mps but MPS is not available; use machine.device_type=cpu or auto")
    if device_type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"machine.device_type={device_type!r} is not one of auto, cpu, cuda, mps")
    return torch.device(device_type)


def amp_dtype(name: str) -> torch.dtype:
    if name not in _AMP_DTYPES:
        raise ConfigError(f"amp_dtype={name!r} is not one of {', '.join(sorted(_AMP_DTYPES))}; pick one, e.g. amp_dtype=bf16")
    return _AMP_DTYPES[name]


def acting_dtype(cfg) -> torch.dtype | None:
    """The autocast dtype a run's policy acts under in evaluation and rollouts (`use_amp`'s `amp_dtype`), or None."""
    return amp_dtype(cfg.amp_dtype) if cfg.use_amp else None


def check_device_options(device_type: str, dtype_name: str) -> None:
    """Raises ConfigError for a device or AMP dtype this machine cannot use (checked before a run starts)."""
    select_device(device_type)
    amp_dtype(dtype_name)


def autocast(device: torch.device, use_amp: bool, dtype_name: str, cache_enabled: bool = True):
    """A real autocast region when AMP is on, a no-op otherwise. `cache_enabled=False` inside a CUDA
    graph capture (torch.cuda.graphs asks it: cached casts would outlive the capture)."""
    if not use_amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(dtype_name), cache_enabled=cache_enabled)


def grad_scaler(device: torch.device, use_amp: bool, dtype_name: str, force: bool = False) -> torch.amp.GradScaler:
    """fp16 needs loss scaling to keep small gradients; bf16 has fp32's range and does not.
    `force` (use_grad_scaler, nerfstudio's --use-grad-scaler) scales the loss on any device and dtype."""
    enabled = force or (use_amp and amp_dtype(dtype_name) == torch.float16 and device.type == "cuda")
    return torch.amp.GradScaler(device.type, enabled=enabled)
