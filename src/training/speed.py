"""Speed levers of a training run, each a `machine.*` option, applied in one place.

- `tf32` / `cudnn_benchmark` (CUDA): deliberate backend choices. TF32 keeps fp32's range with a
  10-bit mantissa in matmuls and convolutions (PyTorch already uses it for cuDNN convolutions by
  default; this also turns it on for matmuls); cudnn.benchmark times the convolution algorithms once
  per input shape. LeRobot's training script sets both; tests run on CPU, where neither applies.
- `channels_last`: the model's 4-D weights in NHWC, the layout cuDNN's fastest kernels use (and
  oneDNN's on CPU); image encoders write their crops in their weights' layout (models/common/vision.py).
- `compile`: `torch.compile` of the model in place (`nn.Module.compile`, so its state_dict keys and
  checkpoints do not change); the first steps compile. null compiles on CUDA a model that declares
  `compile_on_cuda = True`, where it was measured faster and a captured step may hold it (nerfacto:
  its step's hundreds of small elementwise kernels fuse; docs/NEURAL_FIELDS.md). Random draws inside
  compiled code go through the eager ops (Inductor's `fallback_random`): a compiled run draws the
  same samples as an eager one, from the generator a captured step keeps graph-safe.
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

log = logging.getLogger(__name__)


def apply_backend_choices(machine, device: torch.device) -> None:
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = bool(machine.tf32)
    torch.backends.cudnn.allow_tf32 = bool(machine.tf32)
    torch.backends.cudnn.benchmark = bool(machine.cudnn_benchmark)


def compiles(model: torch.nn.Module, machine, device: torch.device) -> bool:
    """machine.compile resolved: true or false as set; null on CUDA for a model that declares compile_on_cuda."""
    asked = machine.get("compile", None)
    if asked is None:
        return device.type == "cuda" and bool(getattr(model, "compile_on_cuda", False))
    return bool(asked)


def prepare_model(model: torch.nn.Module, machine, device: torch.device) -> torch.nn.Module:
    """Memory format and compilation of a built model (in place; returns it)."""
    if machine.get("channels_last", False):
        model.to(memory_format=torch.channels_last)
    if compiles(model, machine, device):
        import torch._inductor.config as inductor

        inductor.fallback_random = True
        log.info("compiling the model with torch.compile (machine.compile=%s): the first steps take longer",
                 machine.get("compile", None))
        model.compile()
    return model
