"""Volume rendering: weights from densities, then RGB / depth / accumulation / normals renderers."""

from __future__ import annotations

import torch

BACKGROUND_COLORS = ("random", "last_sample", "black", "white")


def weights_from_densities(densities: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """w_i = (1 - exp(-sigma_i delta_i)) * exp(-sum_{j<i} sigma_j delta_j); inputs (N, S, 1)."""
    delta_density = deltas * densities
    alphas = 1 - torch.exp(-delta_density)
    acc = torch.cumsum(delta_density[:, :-1], dim=-2)
    transmittance = torch.exp(-torch.cat([torch.zeros_like(acc[:, :1]), acc], dim=-2))
    return torch.nan_to_num(alphas * transmittance)


def background_tensor(color: str, like: torch.Tensor) -> torch.Tensor:
    if color == "white":
        return torch.ones_like(like)
    if color == "black":
        return torch.zeros_like(like)
    if color == "random":
        return torch.rand_like(like)
    raise ValueError(f"background_color={color!r} is not one of {BACKGROUND_COLORS}")


class RGBRenderer(torch.nn.Module):
    """sum_i w_i c_i + (1 - sum_i w_i) * background.

    last_sample: the colour of the last sample; black/white: constants; random: no blending here
    (the prediction is composited on black) -- the loss blends prediction and an RGBA target with the
    same random colour (`blend_for_loss`), and eval renders it on black.
    """

    def __init__(self, background_color: str = "last_sample"):
        super().__init__()
        if background_color not in BACKGROUND_COLORS:
            raise ValueError(f"background_color={background_color!r} is not one of {BACKGROUND_COLORS}")
        self.background_color = background_color

    def forward(self, rgb: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if not self.training:
            rgb = torch.nan_to_num(rgb)
        comp = torch.sum(weights * rgb, dim=-2)
        acc = torch.sum(weights, dim=-2)
        if self.background_color == "last_sample":
            comp = comp + rgb[..., -1, :] * (1.0 - acc)
        elif self.background_color in ("black", "white"):
            comp = comp + background_tensor(self.background_color, comp) * (1.0 - acc)
        if not self.training:
            comp = torch.clamp(comp, 0.0, 1.0)
        return comp

    def blend_for_loss(self, pred_rgb: torch.Tensor, accumulation: torch.Tensor, gt: torch.Tensor):
        """(pred, gt (..., 3)) for the rgb loss; an RGBA gt is composited on the background (nerfstudio's
        blend_background_for_loss_computation: on black for last_sample, on the prediction's random
        colour for random)."""
        color = self.background_color
        if color == "last_sample":
            return pred_rgb, self.blend_background(gt, "black")
        bg = background_tensor(color, pred_rgb)
        if color == "random":
            pred_rgb = pred_rgb + bg * (1.0 - accumulation)
        if gt.shape[-1] == 4:
            alpha = gt[..., 3:]
            gt = alpha * gt[..., :3] + (1 - alpha) * bg
        return pred_rgb, gt

    def blend_background(self, image: torch.Tensor, color: str | None = None) -> torch.Tensor:
        """An RGBA image composited on `color` (default: the background, black for last_sample and random,
        as nerfstudio's blend_background); RGB is returned as it is."""
        if image.shape[-1] < 4:
            return image
        color = color or ("black" if self.background_color in ("last_sample", "random") else self.background_color)
        alpha = image[..., 3:]
        return image[..., :3] * alpha + background_tensor(color, image[..., :3]) * (1 - alpha)


def render_accumulation(weights: torch.Tensor) -> torch.Tensor:
    return weights.sum(dim=-2)


def render_depth(weights: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, method: str = "median",
                 eps: float = 1e-10) -> torch.Tensor:
    """(N, 1) depth: the median (where cumulative weight passes 0.5) or the expected distance."""
    steps = (starts + ends) / 2
    if method == "expected":
        depth = torch.sum(weights * steps, dim=-2) / (torch.sum(weights, dim=-2) + eps)
        return torch.clip(depth, steps.min(), steps.max())
    if method != "median":
        raise ValueError(f"depth method {method!r} is not one of median, expected")
    cumulative = torch.cumsum(weights[..., 0], dim=-1)
    # the first sample whose cumulative weight reaches 0.5: a count, as searchsorted(side="left") finds it
    # in the nondecreasing cumulative sum, written so torch.compile fuses it (its searchsorted of a
    # constant failed to compile in torch 2.11's Inductor)
    idx = torch.clamp((cumulative < 0.5).sum(dim=-1, keepdim=True), 0, steps.shape[-2] - 1)
    return torch.gather(steps[..., 0], dim=-1, index=idx)


def render_normals(normals: torch.Tensor, weights: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    n = torch.sum(weights * normals, dim=-2)
    return torch.nn.functional.normalize(n, dim=-1) if normalize else n
