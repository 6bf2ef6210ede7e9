"""Samplers, volume-rendering weights, renderers, losses."""

import math

import pytest
import torch

from data.nerf.rays import RayBundle
from models.fields import losses as L
from models.fields.renderers import RGBRenderer, render_depth, weights_from_densities
from models.fields.samplers import (PDFSampler, ProposalNetworkSampler, UniformLinDispPiecewiseSampler,
                                    UniformSampler, make_ray_samples, proposal_update_schedule)


def _rays(n=3, near=2.0, far=6.0):
    return RayBundle(origins=torch.zeros(n, 3), directions=torch.tensor([[0.0, 0.0, 1.0]]).repeat(n, 1),
                     pixel_area=torch.ones(n, 1), camera_indices=torch.zeros(n, 1, dtype=torch.long),
                     nears=torch.full((n, 1), near), fars=torch.full((n, 1), far))


def test_uniform_sampler_bins():
    s = UniformSampler().eval()
    rs = s(_rays(), 4)
    torch.testing.assert_close(rs.starts[0, :, 0], torch.tensor([2.0, 3.0, 4.0, 5.0]))
    torch.testing.assert_close(rs.ends[0, :, 0], torch.tensor([3.0, 4.0, 5.0, 6.0]))
    torch.testing.assert_close(rs.positions()[0, :, 2], torch.tensor([2.5, 3.5, 4.5, 5.5]))
    torch.testing.assert_close(rs.sdist()[0], torch.linspace(0, 1, 5))


def test_uniform_sampler_jitter_stays_in_range_and_ordered():
    torch.manual_seed(0)
    for single in (True, False):
        rs = UniformSampler(single_jitter=single).train()(_rays(50), 8)
        edges = torch.cat([rs.starts[..., 0], rs.ends[:, -1:, 0]], -1)
        assert (edges[:, 1:] >= edges[:, :-1]).all()
        assert edges.min() >= 2.0 - 1e-6 and edges.max() <= 6.0 + 1e-6
        assert not torch.allclose(rs.starts, UniformSampler().eval()(_rays(50), 8).starts)


def test_piecewise_sampler_linear_then_disparity():
    s = UniformLinDispPiecewiseSampler().eval()
    rs = s(_rays(1, near=0.0, far=1000.0), 4)
    # g(0) = 0, g(1000) = 0.9995: spacing s -> g^-1(0.9995 s): 0.49975, 0.9995, 1/(2 - 2 * 0.749625), 1000
    expected = torch.tensor([0.49975, 0.9995, 1 / (2 - 2 * 0.749625), 1000.0])
    torch.testing.assert_close(rs.ends[0, :, 0], expected, rtol=1e-3, atol=0)
    assert rs.starts[0, 0, 0] == 0.0


def test_pdf_sampling_reproduces_a_known_distribution():
    """New bin edges are spread like the weights: count how many land in each old bin."""
    existing = torch.linspace(0, 1, 5)[None]  # 4 bins of width 0.25
    weights = torch.tensor([[0.1, 0.6, 0.0, 0.3]])
    s = PDFSampler(histogram_padding=0.0).eval()
    edges = s.sample_spacing(existing, weights, num_samples=9999)
    counts = torch.histc(edges, bins=4, min=0, max=1) / edges.numel()
    torch.testing.assert_close(counts, weights[0], atol=2e-3, rtol=0)
    # inside a bin the samples are uniform: the quantiles of bin 2 are linear
    inside = edges[(edges > 0.25) & (edges < 0.5)]
    assert inside.mean().item() == pytest.approx(0.375, abs=2e-3)


def test_pdf_sampler_returns_sorted_edges_in_training():
    torch.manual_seed(0)
    rs = UniformSampler().eval()(_rays(5), 16)
    w = torch.rand(5, 16, 1)
    new = PDFSampler(single_jitter=True).train()(_rays(5), rs, w, 8)
    assert new.num_samples == 8
    assert (new.sdist()[:, 1:] >= new.sdist()[:, :-1]).all()
    assert new.starts.min() >= 2.0 - 1e-5 and new.ends.max() <= 6.0 + 1e-5


def test_proposal_update_schedule():
    sched = proposal_update_schedule(5000, 5)
    assert sched(0) == 1 and sched(1000) == 1 and sched(2500) == 2.5 and sched(5000) == 5 and sched(10**6) == 5


def test_proposal_sampler_counts_and_gradient_gating():
    sampler = ProposalNetworkSampler((16, 8), 4, 2, single_jitter=True, initial_sampler=UniformSampler(),
                                     update_sched=proposal_update_schedule(10, 5))
    calls = []

    def fn(x):
        calls.append(torch.is_grad_enabled())
        return torch.ones_like(x[..., :1])

    rs, wl, rsl = sampler(_rays(2), [fn, fn])
    assert rs.num_samples == 4 and [r.num_samples for r in rsl] == [16, 8] and len(wl) == 2
    assert calls == [True, True]  # the first 10 steps always update
    sampler._step, sampler._steps_since_update = 100, 1  # after warm-up: update every 5 steps
    calls.clear()
    sampler(_rays(2), [fn, fn])
    assert calls == [False, False]


def test_weights_on_known_densities():
    deltas = torch.ones(1, 3, 1)
    dens = torch.tensor([0.0, math.log(2), math.log(2)]).view(1, 3, 1)
    w = weights_from_densities(dens, deltas)
    torch.testing.assert_close(w.view(-1), torch.tensor([0.0, 0.5, 0.25]))
    # the weights sum to 1 - transmittance through the whole ray
    torch.manual_seed(0)
    dens, deltas = torch.rand(4, 10, 1) * 3, torch.rand(4, 10, 1)
    w = weights_from_densities(dens, deltas)
    torch.testing.assert_close(w.sum(1), 1 - torch.exp(-(dens * deltas).sum(1)))


def test_rgb_renderer_backgrounds_and_depth():
    w = torch.tensor([0.0, 0.5, 0.25]).view(1, 3, 1)
    rgb = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])[None]
    r = RGBRenderer("white")
    torch.testing.assert_close(r(rgb, w), torch.tensor([[0.25, 0.75, 0.5]]))
    torch.testing.assert_close(RGBRenderer("black")(rgb, w), torch.tensor([[0.0, 0.5, 0.25]]))
    torch.testing.assert_close(RGBRenderer("last_sample")(rgb, w), torch.tensor([[0.0, 0.5, 0.5]]))
    pred, gt = RGBRenderer("white").blend_for_loss(torch.zeros(1, 3), torch.zeros(1, 1),
                                                   torch.tensor([[1.0, 0.0, 0.0, 0.5]]))
    torch.testing.assert_close(gt, torch.tensor([[1.0, 0.5, 0.5]]))
    starts, ends = torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1), torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1)
    assert render_depth(w, starts, ends, "median").item() == 1.5  # cumulative weight passes 0.5 at sample 1
    # the median's index is the first sample whose cumulative weight reaches 0.5, as searchsorted finds it;
    # rays whose cumulative weight hits 0.5 exactly, and rays that never reach it (the last sample)
    weights = torch.rand(64, 12, 1, generator=torch.Generator().manual_seed(0)) / 6
    weights[:8] = torch.tensor([0.25, 0.25, 0.5] + [0.0] * 9)[:, None]
    weights[8:16] = 0.01
    edges = torch.cumsum(torch.rand(64, 13, 1, generator=torch.Generator().manual_seed(1)), dim=1)
    cumulative = torch.cumsum(weights[..., 0], dim=-1)
    first = torch.searchsorted(cumulative, torch.full((64, 1), 0.5), side="left").clamp(max=11)
    mids = (edges[:, :-1] + edges[:, 1:])[..., 0] / 2
    torch.testing.assert_close(render_depth(weights, edges[:, :-1], edges[:, 1:], "median"), mids.gather(1, first),
                               rtol=0, atol=0)
    assert (first[:8] == 1).all() and (first[8:16] == 11).all()
    assert render_depth(w, starts, ends, "expected").item() == pytest.approx((0.5 * 1.5 + 0.25 * 2.5) / 0.75)


def _samples(edges):
    edges = torch.as_tensor(edges, dtype=torch.float32)
    rays = _rays(edges.shape[0], 0.0, 1.0)
    return make_ray_samples(rays, edges, lambda s: s)


def test_interlevel_loss():
    rs = _samples([[0.0, 0.25, 0.5, 0.75, 1.0]])
    w = torch.tensor([[0.1, 0.5, 0.3, 0.1]])[..., None]
    assert L.interlevel_loss([w, w], [rs, rs]).item() == pytest.approx(0.0, abs=1e-7)
    # a proposal that puts no weight where the NeRF has it: (w - 0)^2 / w = w, summed then averaged
    w_prop = torch.tensor([[0.0, 0.0, 0.0, 1.0]])[..., None]
    w_nerf = torch.tensor([[0.6, 0.0, 0.0, 0.0]])[..., None]
    assert L.interlevel_loss([w_prop, w_nerf], [rs, rs]).item() == pytest.approx(0.6 / 4, rel=1e-5)
    # a coarse proposal bounding the fine weights costs nothing
    coarse = _samples([[0.0, 0.5, 1.0]])
    assert L.interlevel_loss([torch.tensor([[0.6, 0.4]])[..., None], w],
                             [coarse, rs]).item() == pytest.approx(0.0, abs=1e-7)


def test_distortion_loss_hand_value():
    rs = _samples([[0.0, 1.0, 2.0]])
    w = torch.tensor([[0.5, 0.5]])[..., None]
    # inter: 2 * 0.5 * 0.5 * |0.5 - 1.5| = 0.5; intra: (0.25 + 0.25) / 3
    assert L.distortion_loss([w], [rs]).item() == pytest.approx(0.5 + 1 / 6)


def test_normal_losses_hand_values():
    w = torch.tensor([[0.5, 0.25]])[..., None]
    viewdirs = torch.tensor([[0.0, 0.0, 1.0]])
    normals = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.6, 0.8]]])  # facing the camera, then away
    assert L.orientation_loss(w, normals, viewdirs).item() == pytest.approx(0.25 * 0.8**2)
    pred = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]]])
    assert L.pred_normal_loss(w, normals, pred).item() == pytest.approx(0.25 * (1 - 0.8))
