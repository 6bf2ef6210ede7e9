"""Samples along rays: uniform / uniform-then-disparity initial samplers, PDF resampling, the
proposal-network sampler of mip-NeRF 360 / nerfacto.

Bins are drawn in a normalised "spacing" s in [0, 1] and mapped to Euclidean distance with
t = g^-1(s * g(far) + (1 - s) * g(near)); g is the identity (uniform) or nerfstudio's piecewise
g(x) = x/2 for x < 1 else 1 - 1/(2x) (linear up to distance 1, linear in disparity beyond).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from data.nerf.rays import RayBundle
from models.fields.renderers import weights_from_densities


@dataclass
class RaySamples:
    origins: torch.Tensor  # (N, 3)
    directions: torch.Tensor  # (N, 3)
    starts: torch.Tensor  # (N, S, 1) Euclidean distance along the ray
    ends: torch.Tensor  # (N, S, 1)
    spacing_starts: torch.Tensor  # (N, S, 1) in [0, 1]
    spacing_ends: torch.Tensor  # (N, S, 1)
    spacing_to_euclidean_fn: Callable[[torch.Tensor], torch.Tensor]
    camera_indices: torch.Tensor | None = None  # (N, 1)

    @property
    def num_samples(self) -> int:
        return self.starts.shape[1]

    @property
    def deltas(self) -> torch.Tensor:
        return self.ends - self.starts

    @property
    def midpoints(self) -> torch.Tensor:
        return (self.starts + self.ends) / 2

    def positions(self) -> torch.Tensor:
        """(N, S, 3) the midpoint of each interval."""
        return self.origins[:, None, :] + self.directions[:, None, :] * self.midpoints

    def sdist(self) -> torch.Tensor:
        """(N, S+1) bin edges in spacing units (what the proposal and distortion losses compare)."""
        return torch.cat([self.spacing_starts[..., 0], self.spacing_ends[:, -1:, 0]], dim=-1)

    def get_weights(self, densities: torch.Tensor) -> torch.Tensor:
        """(N, S, 1) densities -> (N, S, 1) volume-rendering weights."""
        return weights_from_densities(densities, self.deltas)


def make_ray_samples(ray_bundle: RayBundle, spacing_bins: torch.Tensor, spacing_to_euclidean_fn) -> RaySamples:
    euclid = spacing_to_euclidean_fn(spacing_bins)
    return RaySamples(origins=ray_bundle.origins, directions=ray_bundle.directions,
                      starts=euclid[:, :-1, None], ends=euclid[:, 1:, None],
                      spacing_starts=spacing_bins[:, :-1, None], spacing_ends=spacing_bins[:, 1:, None],
                      spacing_to_euclidean_fn=spacing_to_euclidean_fn, camera_indices=ray_bundle.camera_indices)


def _identity(x):
    return x


def _piecewise(x):
    return torch.where(x < 1, x / 2, 1 - 1 / (2 * x))


def _piecewise_inv(s):
    return torch.where(s < 0.5, 2 * s, 1 / (2 - 2 * s))


class SpacedSampler(nn.Module):
    """num_samples bins between each ray's near and far, evenly spaced in g(t); jittered in training
    (one offset per ray with `single_jitter`, else one per bin edge)."""

    def __init__(self, spacing_fn, spacing_fn_inv, single_jitter: bool = False, train_stratified: bool = True):
        super().__init__()
        self.spacing_fn, self.spacing_fn_inv = spacing_fn, spacing_fn_inv
        self.single_jitter, self.train_stratified = single_jitter, train_stratified

    def forward(self, ray_bundle: RayBundle, num_samples: int) -> RaySamples:
        if ray_bundle.nears is None or ray_bundle.fars is None:
            raise ValueError("the ray bundle has no nears/fars: run a collider first")
        n = len(ray_bundle)
        device = ray_bundle.origins.device
        bins = torch.linspace(0.0, 1.0, num_samples + 1, device=device)[None, :].expand(n, -1)
        if self.train_stratified and self.training:
            t_rand = torch.rand((n, 1) if self.single_jitter else (n, num_samples + 1), device=device)
            centers = (bins[:, 1:] + bins[:, :-1]) / 2.0
            upper = torch.cat([centers, bins[:, -1:]], -1)
            lower = torch.cat([bins[:, :1], centers], -1)
            bins = lower + (upper - lower) * t_rand
        s_near, s_far = self.spacing_fn(ray_bundle.nears.clone()), self.spacing_fn(ray_bundle.fars.clone())
        inv = self.spacing_fn_inv

        def spacing_to_euclidean(s):
            return inv(s * s_far + (1 - s) * s_near)

        return make_ray_samples(ray_bundle, bins, spacing_to_euclidean)


class UniformSampler(SpacedSampler):
    def __init__(self, single_jitter: bool = False, train_stratified: bool = True):
        super().__init__(_identity, _identity, single_jitter, train_stratified)


class UniformLinDispPiecewiseSampler(SpacedSampler):
    """Uniform up to distance 1 from the origin, uniform in disparity beyond (unbounded scenes)."""

    def __init__(self, single_jitter: bool = False, train_stratified: bool = True):
        super().__init__(_piecewise, _piecewise_inv, single_jitter, train_stratified)


class PDFSampler(nn.Module):
    """Inverse-transform sampling of new bins from the weights of existing ones (in spacing units).

    Weights get `histogram_padding` added before normalising; training draws stratified u
    (`single_jitter`: one offset per ray), eval uses bin centres u = (k + 1/2) / (num_samples + 1).
    """

    def __init__(self, single_jitter: bool = False, train_stratified: bool = True, include_original: bool = False,
                 histogram_padding: float = 0.01, eps: float = 1e-5):
        super().__init__()
        self.single_jitter, self.train_stratified = single_jitter, train_stratified
        self.include_original, self.histogram_padding, self.eps = include_original, histogram_padding, eps

    def sample_spacing(self, existing_bins: torch.Tensor, weights: torch.Tensor, num_samples: int) -> torch.Tensor:
        """existing_bins (N, S+1), weights (N, S) -> new bin edges (N, num_samples+1), sorted."""
        num_bins = num_samples + 1
        w = weights + self.histogram_padding
        w_sum = w.sum(dim=-1, keepdim=True)
        padding = torch.relu(self.eps - w_sum)
        w = w + padding / w.shape[-1]
        pdf = w / (w_sum + padding)
        cdf = torch.clamp(torch.cumsum(pdf, dim=-1), max=1.0)
        cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1)
        n = cdf.shape[0]
        if self.train_stratified and self.training:
            u = torch.linspace(0.0, 1.0 - 1.0 / num_bins, num_bins, device=cdf.device).expand(n, num_bins)
            rand = torch.rand((n, 1) if self.single_jitter else (n, num_bins), device=cdf.device) / num_bins
            u = (u + rand).contiguous()
        else:
            u = torch.linspace(0.0, 1.0 - 1.0 / num_bins, num_bins, device=cdf.device) + 1.0 / (2 * num_bins)
            u = u.expand(n, num_bins).contiguous()
        inds = torch.searchsorted(cdf.contiguous(), u, side="right")
        below = torch.clamp(inds - 1, 0, existing_bins.shape[-1] - 1)
        above = torch.clamp(inds, 0, existing_bins.shape[-1] - 1)
        cdf0, cdf1 = torch.gather(cdf, -1, below), torch.gather(cdf, -1, above)
        b0, b1 = torch.gather(existing_bins, -1, below), torch.gather(existing_bins, -1, above)
        t = torch.clip(torch.nan_to_num((u - cdf0) / (cdf1 - cdf0), 0), 0, 1)
        bins = b0 + t * (b1 - b0)
        if self.include_original:
            bins, _ = torch.sort(torch.cat([existing_bins, bins], -1), -1)
        return bins.detach()

    def forward(self, ray_bundle: RayBundle, ray_samples: RaySamples, weights: torch.Tensor,
                num_samples: int) -> RaySamples:
        bins = self.sample_spacing(ray_samples.sdist(), weights[..., 0], num_samples)
        return make_ray_samples(ray_bundle, bins, ray_samples.spacing_to_euclidean_fn)


class ProposalNetworkSampler(nn.Module):
    """Initial sampler -> (proposal density -> PDF resample) x num_proposal_iterations -> NeRF samples.

    Proposal densities run with gradients only on "update" steps: every step for the first 10, then
    when more steps than update_sched(step) have passed since the last update
    (update_sched ramps 1 -> proposal_update_every over proposal_warmup steps). Weights are raised to
    `anneal` (set by the model each step) before resampling. The anneal lives in a device tensor and
    `decide_update` can settle the update ahead of the forward, so that a training step replayed from a
    CUDA graph (machine.cuda_graph) reads both without any host value frozen into it.
    """

    def __init__(self, num_proposal_samples_per_ray: Sequence[int] = (256, 96), num_nerf_samples_per_ray: int = 48,
                 num_proposal_network_iterations: int = 2, single_jitter: bool = True,
                 initial_sampler: nn.Module | None = None, update_sched: Callable[[int], float] | None = None):
        super().__init__()
        self.num_proposal_samples_per_ray = tuple(num_proposal_samples_per_ray)
        self.num_nerf_samples_per_ray = num_nerf_samples_per_ray
        self.num_proposal_network_iterations = num_proposal_network_iterations
        if len(self.num_proposal_samples_per_ray) < num_proposal_network_iterations:
            raise ValueError("num_proposal_samples_per_ray needs one entry per proposal iteration")
        self.initial_sampler = initial_sampler or UniformLinDispPiecewiseSampler(single_jitter=single_jitter)
        self.pdf_sampler = PDFSampler(include_original=False, single_jitter=single_jitter)
        self.update_sched = update_sched or (lambda step: 1)
        self.register_buffer("_anneal", torch.ones(()), persistent=False)
        self._steps_since_update = 0
        self._step = 0
        self._decided: bool | None = None  # decide_update's answer for the step under way

    @property
    def anneal(self) -> float:
        return float(self._anneal)

    def set_anneal(self, anneal: float) -> None:
        self._anneal.fill_(float(anneal))  # no read-back: a fill from a host value

    def step_cb(self, step: int) -> None:
        self._step = step
        self._steps_since_update += 1

    def _due(self) -> bool:
        return self._steps_since_update > self.update_sched(self._step) or self._step < 10

    def let_forward_decide(self) -> None:
        """Drops a decision of decide_update: each training forward decides, as nerfstudio's sampler does."""
        self._decided = None

    def decide_update(self) -> bool:
        """Settles, on the host and once, whether this step updates the proposal networks (and restarts
        the count if so); every forward until the next decision follows it."""
        self._decided = self._due()
        if self._decided:
            self._steps_since_update = 0
        return self._decided

    def forward(self, ray_bundle: RayBundle, density_fns: Sequence[Callable[[torch.Tensor], torch.Tensor]]):
        weights_list, ray_samples_list = [], []
        n = self.num_proposal_network_iterations
        updated = self._due() if self._decided is None else self._decided
        weights = ray_samples = None
        for i_level in range(n + 1):
            is_prop = i_level < n
            num = self.num_proposal_samples_per_ray[i_level] if is_prop else self.num_nerf_samples_per_ray
            if i_level == 0:
                ray_samples = self.initial_sampler(ray_bundle, num)
            else:
                annealed = torch.pow(weights, self._anneal)
                ray_samples = self.pdf_sampler(ray_bundle, ray_samples, annealed, num)
            if is_prop:
                if updated:
                    density = density_fns[i_level](ray_samples.positions())
                else:
                    with torch.no_grad():
                        density = density_fns[i_level](ray_samples.positions())
                weights = ray_samples.get_weights(density)
                weights_list.append(weights)
                ray_samples_list.append(ray_samples)
        if updated and self.training and self._decided is None:
            self._steps_since_update = 0
        return ray_samples, weights_list, ray_samples_list


def proposal_update_schedule(proposal_warmup: int, proposal_update_every: int) -> Callable[[int], float]:
    """clip(interp(step, [0, warmup], [0, every]), 1, every): how many steps between proposal updates."""

    def sched(step: int) -> float:
        return float(np.clip(np.interp(step, [0, proposal_warmup], [0, proposal_update_every]), 1,
                             proposal_update_every))

    return sched
