"""The UNet's 1-D convolutions as one matrix multiply each (``policy.unet_conv=matmul``).

The Diffusion Policy UNet convolves along an action chunk of 16 steps (8, 4 further down) with up to
2048 channels and a kernel of 5: a convolution over very few positions and many channels, which is a
plain GEMM of (batch x positions, channels x kernel) by (channels x kernel, out channels) once the
windows are laid out. ``MatmulConv1d`` does exactly that: ``Tensor.unfold`` takes the windows, one
copy lays them out, ``F.linear`` multiplies them by the weight viewed as a matrix (no copy of it).
It keeps ``nn.Conv1d``'s parameters and names, so state dicts, checkpoints and LeRobot's layout are
unchanged; its outputs and gradients are the convolution's to float rounding (tested).
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
        out = F.linear(rows, self.weight.view(self.out_channels, channels * k), self.bias)
        return out.view(batch, length, self.out_channels).transpose(1, 2)


def conv1d_class(unet_conv: str) -> type[nn.Conv1d]:
    """The Conv1d class for ``policy.unet_conv``."""
    return MatmulConv1d if unet_conv == "matmul" else nn.Conv1d
