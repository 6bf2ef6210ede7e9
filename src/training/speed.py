"""Speed levers of a training run, each a `machine.*` option, applied in one place.

- `tf32` / `cudnn_benchmark` (CUDA): deliberate backend choices. TF32 keeps fp32's range with a
  10-bit mantissa in matmuls and convolutions (PyTorch already uses it for cuDNN convolutions by
  default; this also turns it on for matmuls); cudnn.benchmark times the convolution algorithms once
  per input shape. LeRobot's training script sets both; tests run on CPU, where neither applies.
- `channels_last`: the model's 4-D weights in NHWC, the layout cuDNN's fastest kernels use (and
  oneDNN's on CPU); image encoders write their crops in their weights' layout (models/common/vision.py).
- `compile`: `torch.compile` of the model in place (`nn.Module.compile`, so its state_dict keys and
  checkpoints do not change); the first steps compile. A model may declare `compile_blocker`: None
  where its compiled step, captured, was measured faster, so that null compiles it wherever its step
  is captured (the Trainer decides that: CUDA, one device, ...; nerfacto: its step's hundreds of small
  elementwise kernels fuse; docs/NEURAL_FIELDS.md), or a reason it cannot be compiled, which true is
  refused with. A model without it is compiled only under true (Diffusion Policy: measured, no faster).
  Random draws inside compiled code go through the eager ops (Inductor's `fallback_random`, for this
  compilation only): a compiled run draws the same samples as an eager one, from the generator a
  captured step keeps graph-safe.
- `uint8_transport`: camera frames travel from the DataLoader as stored (uint8: a quarter of float32's
  bytes in shared and pinned memory and in the host->device copy); the float conversion and the
  dataset's `image_transforms` run on the device, with the same values (data/device_images.py,
  applied by the robot pipeline's `to_device`). null (the default) turns it on for CUDA only: on the
  CPU there is no copy to shrink, and the augmentations would leave the parallel loader workers.
Fused Adam/AdamW (optimizer.fused) is resolved where the optimizer is built (training/optim.py).
"""

from __future__ import annotations

import logging

import torch

from config.errors import ConfigError

log = logging.getLogger(__name__)


def apply_backend_choices(machine, device: torch.device) -> None:
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = bool(machine.tf32)
    torch.backends.cudnn.allow_tf32 = bool(machine.tf32)
    torch.backends.cudnn.benchmark = bool(machine.cudnn_benchmark)


def is_compiled(model: torch.nn.Module) -> bool:
    """Whether `model.compile()` (nn.Module's, in place) has compiled the model."""
    return getattr(model, "_compiled_call_impl", None) is not None


def compiled_capture_measured(model: torch.nn.Module) -> bool:
    """Whether the model declares compile_blocker None: its compiled step, captured, was measured faster."""
    return getattr(model, "compile_blocker", "") is None


def compile_model(model: torch.nn.Module, why: str) -> None:
    """torch.compile of the model in place, its random draws through the eager ops (this compilation's
    `fallback_random`): the same samples as an eager run, from the generator a captured step keeps graph-safe."""
    log.info("compiling the model with torch.compile (%s): the first steps take longer", why)
    model.compile(options={"fallback_random": True})


def prepare_model(model: torch.nn.Module, machine, device: torch.device) -> torch.nn.Module:
    """Memory format of a built model, and its compilation under machine.compile=true (in place; returns it).
    null is resolved by the Trainer, which knows whether the step is captured."""
    if machine.get("channels_last", False):
        model.to(memory_format=torch.channels_last)
    if machine.get("compile", None):
        blocker = getattr(model, "compile_blocker", None)
        if blocker:
            raise ConfigError(f"machine.compile=true needs {blocker}; set machine.compile=false")
        compile_model(model, "machine.compile=true")
    return model
