"""Which code computes the hash grid: `model.implementation` = torch | triton | auto | tcnn.

`triton` asks for the fused kernels (`_triton_hash.py`) and refuses, in one line, a machine where they
cannot run; `auto` uses them for CUDA inputs where Triton imports and the torch ops elsewhere. Both
keep the torch encoding's parameters, so checkpoints move between torch, triton and auto. The SH
encoding and the MLPs are torch ops under triton and auto (profiling left them off the hot path).
"""

from __future__ import annotations

import os

import torch

from config.errors import ConfigError

IMPLEMENTATIONS = ("auto", "tcnn", "torch", "triton")
TRITON_UNAVAILABLE = ("model.implementation=triton needs a CUDA GPU and the triton package ({why}); "
                      "use model.implementation=auto (triton on CUDA, torch elsewhere) or torch")


def check_implementation(implementation: str) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ConfigError(f"model.implementation={implementation!r} is not one of {', '.join(IMPLEMENTATIONS)}")


def interpreting() -> bool:
    """Triton's interpreter (TRITON_INTERPRET=1) runs the kernels on CPU tensors: the tests use it."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_kernels(required: bool):
    """The kernels module, or None where it cannot run (a ConfigError instead when `required`)."""
    why = None
    if not (torch.cuda.is_available() or interpreting()):
        why = "torch.cuda.is_available() is False here"
    else:
        try:
            from models.fields import _triton_hash
        except ImportError as err:  # no triton wheel for this platform, or a broken install
            why = f"import failed: {err}"
        else:
            return _triton_hash
    if required:
        raise ConfigError(TRITON_UNAVAILABLE.format(why=why))
    return None
