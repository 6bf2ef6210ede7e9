"""The UNet's 1-D convolutions as one matrix multiply each (``policy.unet_conv=matmul``, and on CUDA ``auto``).

The Diffusion Policy UNet convolves along an action chunk of 16 steps (8, 4 further down) with up to
2048 channels and a kernel of 5: a convolution over very few positions and many channels, which is a
plain GEMM of (batch x positions, channels x kernel) by (channels x kernel, out channels) once the
windows are laid out. ``MatmulConv1d`` does exactly that: ``Tensor.unfold`` takes the windows, one
copy lays them out, ``F.linear`` multiplies them by the weight reshaped to a matrix (a view of a
contiguous weight, no copy).
It keeps ``nn.Conv1d``'s parameters and names, so state dicts, checkpoints and LeRobot's layout are
unchanged; its outputs and gradients are the convolution's to float rounding (tested).

Why: on CUDA, cuDNN runs these convolutions channels-last and converts every activation and gradient
to that layout and back; on an H100 the conversions were 62% of an evaluation plan's kernel time and
37% of a training step's, and the matrix multiplies made a plan 2.1x and the captured training step
1.34x faster (docs/ROBOT_LEARNING.md, "Kernels against the GPU's limits"). On a CPU, torch's own
conv1d is 1.3-2x faster than the unfolded windows, so ``auto`` (the default) picks per input device.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MatmulConv1d(nn.Conv1d):
    """``nn.Conv1d`` (zero padding, no dilation, one group) computed as unfold + one matrix multiply."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or self.dilation != (1,) or self.groups != 1 or isinstance(self.padding, str):
            raise ValueError("MatmulConv1d supports zero padding given as a number, dilation 1 and groups 1 only")

    def forward(self, x: Tensor) -> Tensor:
        (k,), (stride,), (pad,) = self.kernel_size, self.stride, self.padding
        if pad:
            x = F.pad(x, (pad, pad))
        windows = x.unfold(2, k, stride)  # (B, C, T_out, k): a view
        batch, channels, length = windows.shape[:3]
        rows = windows.permute(0, 2, 1, 3).reshape(batch * length, channels * k)
        out = F.linear(rows, self.weight.reshape(self.out_channels, channels * k), self.bias)
        return out.view(batch, length, self.out_channels).transpose(1, 2)


class AutoConv1d(MatmulConv1d):
    """A matrix multiply for CUDA inputs, torch's conv1d for any other device (``policy.unet_conv=auto``)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) if x.is_cuda else nn.Conv1d.forward(self, x)


CONV_CLASSES = {"auto": AutoConv1d, "native": nn.Conv1d, "matmul": MatmulConv1d}


def conv1d_class(unet_conv: str) -> type[nn.Conv1d]:
    """The Conv1d class for ``policy.unet_conv``."""
    return CONV_CLASSES[unet_conv]
