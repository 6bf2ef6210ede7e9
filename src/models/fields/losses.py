"""Losses of nerfacto: proposal (interlevel, mip-NeRF 360 eq. 13), distortion (eq. 15), orientation
and predicted-normal losses (Ref-NeRF); depth-nerfacto's depth losses (DS-NeRF, Urban Radiance
Fields). Bin edges are in spacing units (RaySamples.sdist)."""

from __future__ import annotations

import torch


def outer(t0_starts, t0_ends, t1_starts, t1_ends, y1) -> torch.Tensor:
    """For each interval of t0, the sum of the y1 weights of t1's intervals that overlap it."""
    cy1 = torch.cat([torch.zeros_like(y1[..., :1]), torch.cumsum(y1, dim=-1)], dim=-1)
    idx_lo = torch.searchsorted(t1_starts.contiguous(), t0_starts.contiguous(), side="right") - 1
    idx_lo = torch.clamp(idx_lo, min=0, max=y1.shape[-1] - 1)
    idx_hi = torch.searchsorted(t1_ends.contiguous(), t0_ends.contiguous(), side="right")
    idx_hi = torch.clamp(idx_hi, min=0, max=y1.shape[-1] - 1)
    cy1_lo = torch.take_along_dim(cy1[..., :-1], idx_lo, dim=-1)
    cy1_hi = torch.take_along_dim(cy1[..., 1:], idx_hi, dim=-1)
    return cy1_hi - cy1_lo


def lossfun_outer(t, w, t_env, w_env) -> torch.Tensor:
    """Penalise NeRF weights w (edges t) that the proposal histogram (t_env, w_env) does not bound."""
    eps = torch.finfo(t.dtype).eps
    w_outer = outer(t[..., :-1], t[..., 1:], t_env[..., :-1], t_env[..., 1:], w_env)
    return torch.clip(w - w_outer, min=0) ** 2 / (w + eps)


def interlevel_loss(weights_list, ray_samples_list) -> torch.Tensor:
    """Sum over proposal levels of mean(lossfun_outer); the NeRF level is the (detached) target."""
    c = ray_samples_list[-1].sdist().detach()
    w = weights_list[-1][..., 0].detach()
    loss = torch.zeros((), device=c.device)
    for ray_samples, weights in zip(ray_samples_list[:-1], weights_list[:-1]):
        loss = loss + torch.mean(lossfun_outer(c, w, ray_samples.sdist(), weights[..., 0]))
    return loss


def lossfun_distortion(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (t_{i+1} - t_i); t (N, S+1), w (N, S) -> (N,)."""
    ut = (t[..., 1:] + t[..., :-1]) / 2
    dut = torch.abs(ut[..., :, None] - ut[..., None, :])
    loss_inter = torch.sum(w * torch.sum(w[..., None, :] * dut, dim=-1), dim=-1)
    loss_intra = torch.sum(w**2 * (t[..., 1:] - t[..., :-1]), dim=-1) / 3
    return loss_inter + loss_intra


def distortion_loss(weights_list, ray_samples_list) -> torch.Tensor:
    """Mean distortion of the last (NeRF) level."""
    return torch.mean(lossfun_distortion(ray_samples_list[-1].sdist(), weights_list[-1][..., 0]))


def orientation_loss(weights: torch.Tensor, normals: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
    """(N,) sum_i w_i * min(0, n_i . (-v))^2: penalises normals that face away from the camera."""
    n_dot_v = (normals * -viewdirs[:, None, :]).sum(dim=-1)
    return (weights[..., 0] * torch.fmin(torch.zeros_like(n_dot_v), n_dot_v) ** 2).sum(dim=-1)


def pred_normal_loss(weights: torch.Tensor, normals: torch.Tensor, pred_normals: torch.Tensor) -> torch.Tensor:
    """(N,) sum_i w_i * (1 - n_i . n_pred_i)."""
    return (weights[..., 0] * (1.0 - torch.sum(normals * pred_normals, dim=-1))).sum(dim=-1)


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((pred - target) ** 2)


DEPTH_EPS = 1e-7  # nerfstudio's EPS in the DS-NeRF log
URF_SIGMA_SCALE_FACTOR = 3.0
DEPTH_LOSS_TYPES = ("DS_NERF", "URF")


def ds_nerf_depth_loss(weights, termination_depth, steps, lengths, sigma) -> torch.Tensor:
    """DS-NeRF (Deng et al. 2022) as nerfstudio 1.1.5 writes it: mean over rays of
    sum_i -log(w_i + eps) exp(-(t_i - d)^2 / (2 sigma)) (t_{i+1} - t_i), rays without depth (d <= 0)
    counted as 0. nerfstudio divides by 2 sigma, not 2 sigma^2; kept. weights, steps, lengths (N, S, 1);
    termination_depth (N, 1)."""
    mask = termination_depth > 0
    loss = -torch.log(weights + DEPTH_EPS) * torch.exp(-((steps - termination_depth[:, None]) ** 2) / (2 * sigma)) \
        * lengths
    return torch.mean(loss.sum(-2) * mask)


def urban_radiance_field_depth_loss(weights, termination_depth, predicted_depth, steps, sigma) -> torch.Tensor:
    """Urban Radiance Fields' lidar losses (Rematas et al. 2022), nerfstudio 1.1.5's: the expected-depth
    error plus line-of-sight terms (weights near the depth follow a normal of std sigma / 3, weights in
    front of it go to 0); rays without depth masked."""
    mask = termination_depth > 0
    expected = (termination_depth - predicted_depth) ** 2
    target = torch.distributions.normal.Normal(0.0, sigma / URF_SIGMA_SCALE_FACTOR)
    d = termination_depth[:, None]
    near = torch.logical_and(steps <= d + sigma, steps >= d - sigma)
    near_loss = (near * (weights - torch.exp(target.log_prob(steps - d))) ** 2).sum(-2)
    empty_loss = ((steps < d - sigma) * weights ** 2).sum(-2)
    return torch.mean((expected + near_loss + empty_loss) * mask)


def depth_loss(weights, ray_samples, termination_depth, predicted_depth, sigma, directions_norm,
               is_euclidean: bool, depth_loss_type: str) -> torch.Tensor:
    """One level's depth loss; a z-depth becomes a distance along the ray (x directions_norm) unless
    `is_euclidean`."""
    if not is_euclidean:
        termination_depth = termination_depth * directions_norm
    steps = ray_samples.midpoints
    if depth_loss_type == "DS_NERF":
        return ds_nerf_depth_loss(weights, termination_depth, steps, ray_samples.deltas, sigma)
    if depth_loss_type == "URF":
        return urban_radiance_field_depth_loss(weights, termination_depth, predicted_depth, steps, sigma)
    raise ValueError(f"depth_loss_type={depth_loss_type!r} is not one of {DEPTH_LOSS_TYPES}")
