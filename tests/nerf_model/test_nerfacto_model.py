"""NerfactoModel: config, forward/backward on a tiny setting, a toy fit."""

import math
import re
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from config.errors import ConfigError
from data.nerf.rays import RayBundle
from models.nerfacto.config import NerfactoConfig, ProposalNetArgs
from models.nerfacto.model import NerfactoModel

SEED = Path("/work/shared/seeds/000_4dc30611ef88277c.txt")

TINY = dict(implementation="torch", num_levels=4, base_res=4, max_res=32, log2_hashmap_size=10,
            hidden_dim=16, hidden_dim_color=16, appearance_embed_dim=4, num_proposal_samples_per_ray=[16, 8],
            num_nerf_samples_per_ray=8, near_plane=1.0, far_plane=5.0,
            proposal_net_args_list=[dict(hidden_dim=8, log2_hashmap_size=8, num_levels=2, max_res=16, use_linear=False),
                                    dict(hidden_dim=8, log2_hashmap_size=8, num_levels=2, max_res=32, use_linear=True)])


def _rays(n, seed=0, num_cameras=3):
    g = torch.Generator().manual_seed(seed)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    target = torch.randn(n, 3, generator=g) * 0.4
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    return RayBundle(origins, dirs, torch.full((n, 1), 1e-6),
                     torch.randint(0, num_cameras, (n, 1), generator=g))


def test_config_defaults_match_the_seed():
    if not SEED.exists():
        pytest.skip("nerfstudio seed help not available")
    text = SEED.read_text()
    flat = " ".join(line.strip().strip("│╭╰─").strip() for line in text.splitlines())
    flat = re.sub(r"\s+", " ", flat)
    options = dict(re.findall(r"--pipeline\.model\.([a-z0-9-]+) (?:(?!--).)*?\(default: ([^)]*)\)", flat))
    cfg = NerfactoConfig()
    names = {f.name for f in fields(cfg)}
    for opt, default in options.items():
        name = opt.replace("-", "_")
        if opt.startswith("proposal-net-args-list") or opt.startswith("loss-coefficients"):
            continue
        assert name in names, opt
        value = getattr(cfg, name)
        if isinstance(value, bool):
            assert str(value) == default, opt
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            assert value == float(default), opt
        elif isinstance(value, tuple):
            assert list(value) == [int(v) for v in default.split()], opt
        elif value is None:
            assert default == "None", opt
        elif isinstance(value, str):
            assert value == default, opt
    assert cfg.collider_params == {"near_plane": 2.0, "far_plane": 6.0}
    assert cfg.loss_coefficients == {"rgb_loss_coarse": 1.0, "rgb_loss_fine": 1.0}
    assert cfg.proposal_net_args_list == [ProposalNetArgs(16, 17, 5, 128, False), ProposalNetArgs(16, 17, 5, 256, False)]
    assert len(options) >= 36


def test_config_is_an_omegaconf_schema_and_instantiates():
    from hydra.utils import instantiate

    schema = OmegaConf.structured(NerfactoConfig)
    cfg = OmegaConf.merge(schema, {k: v for k, v in TINY.items()})
    model = instantiate(cfg, num_train_cameras=3, scene_box=None)
    assert isinstance(model, NerfactoModel)
    assert model.config.num_proposal_samples_per_ray == (16, 8)
    assert model.config.proposal_net_args_list[1].use_linear is True
    with pytest.raises(ConfigError, match="background_color"):
        NerfactoModel(3, None, **{**TINY, "background_color": "pink"})
    with pytest.raises(ConfigError, match="use_same_proposal_network"):
        NerfactoModel(3, None, **{**TINY, "use_same_proposal_network": True})


@pytest.mark.parametrize("extra", [{}, {"predict_normals": True, "use_gradient_scaling": True,
                                        "background_color": "random", "proposal_initial_sampler": "uniform"},
                                   {"use_same_proposal_network": True, "disable_scene_contraction": True,
                                    "proposal_net_args_list": [TINY["proposal_net_args_list"][0]],
                                    "background_color": "white"}])
def test_forward_backward_reaches_every_param_group(extra):
    torch.manual_seed(0)
    cam = {"mode": "SE3"} if extra.get("background_color") == "white" else None
    model = NerfactoModel(3, torch.tensor([[-2.0] * 3, [2.0] * 3]), camera_optimizer=cam, **{**TINY, **extra})
    model.train()
    rays = _rays(32)
    batch = {"image": torch.rand(32, 4 if extra.get("background_color") == "random" else 3)}
    total, logs = model.loss(rays, batch, step=0)
    assert torch.isfinite(total)
    expected = {"rgb_loss", "interlevel_loss", "distortion_loss", "psnr"}
    if extra.get("predict_normals"):
        expected |= {"orientation_loss", "pred_normal_loss"}
    assert set(logs) == expected and all(math.isfinite(v) for v in logs.values())
    total.backward()
    for group, params in model.get_param_groups().items():
        assert params, group
        grads = [p.grad for p in params if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), group
        assert sum(g.abs().sum() for g in grads) > 0, group
    out = model(rays)
    for key in ("rgb", "depth", "accumulation", "expected_depth", "prop_depth_0", "prop_depth_1"):
        assert out[key].shape[0] == 32 and torch.isfinite(out[key]).all(), key
    assert len(out["weights_list"]) == len(out["ray_samples_list"]) == 3


def test_render_image_in_chunks_matches_one_pass():
    torch.manual_seed(0)
    model = NerfactoModel(3, None, **{**TINY, "predict_normals": True}).eval()
    rays = _rays(50)
    full = model.render_image(rays, chunk=1000)
    chunked = model.render_image(rays, chunk=7)
    assert set(full) >= {"rgb", "depth", "accumulation", "normals", "pred_normals"}
    for k in full:
        assert full[k].shape[0] == 50
        torch.testing.assert_close(full[k], chunked[k], atol=1e-5, rtol=1e-4)
    # eval uses the average appearance code: the camera index does not matter
    other = RayBundle(rays.origins, rays.directions, rays.pixel_area, torch.zeros_like(rays.camera_indices))
    torch.testing.assert_close(model.render_image(other)["rgb"], full["rgb"])


def test_step_callback_anneals_and_schedules():
    model = NerfactoModel(3, None, **TINY)
    model.step_callback(0)
    assert model.proposal_sampler.anneal == 0.0
    model.step_callback(100)  # frac 0.1: 10 * 0.1 / (9 * 0.1 + 1)
    assert model.proposal_sampler.anneal == pytest.approx(1.0 / 1.9)
    model.step_callback(5000)
    assert model.proposal_sampler.anneal == 1.0 and model.proposal_sampler._step == 4999


def _sphere_target(rays, radius=0.6, color=(0.9, 0.3, 0.1)):
    """Colour of a constant-colour sphere at the origin on a black background."""
    oc = rays.origins
    b = (oc * rays.directions).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius**2)
    hit = (disc > 0) & (-b > 0)
    return hit[:, None].float() * torch.tensor(color)


def test_toy_sphere_fit_reduces_rgb_loss():
    torch.manual_seed(0)
    model = NerfactoModel(1, None, camera_optimizer={"mode": "off"},
                          **{**TINY, "background_color": "black", "proposal_warmup": 50,
                             "proposal_weights_anneal_max_num_iters": 50, "max_res": 64, "log2_hashmap_size": 12})
    groups = model.get_param_groups()
    opt = torch.optim.Adam([{"params": groups["fields"]}, {"params": groups["proposal_networks"]}],
                           lr=1e-2, eps=1e-15)
    eval_rays = _rays(256, seed=123, num_cameras=1)
    eval_target = _sphere_target(eval_rays)

    def eval_loss():
        model.eval()
        with torch.no_grad():
            rgb = model.render_image(eval_rays)["rgb"]
        model.train()
        return torch.mean((rgb - eval_target) ** 2).item()

    before = eval_loss()
    model.train()
    for step in range(120):  # ~10 s on a loaded 2-core CPU; the eval mse falls ~0.13 -> ~0.006
        rays = _rays(128, seed=step + 1, num_cameras=1)
        total, logs = model.loss(rays, {"image": _sphere_target(rays)}, step)
        opt.zero_grad()
        total.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.2 * before, (before, after)
    assert after < 0.02


def test_a_checkpoint_of_a_scene_with_other_image_counts_names_the_shapes(tmp_path):
    """A warm start onto a scene with another number of training images: the error names the appearance
    embedding (and the camera optimizer) and says the shapes depend on that number; never 'corrupt'."""
    from training import checkpoint as ck

    path = ck.save_checkpoint(tmp_path, 1, NerfactoModel(5, **TINY), {"step": 1}, "")
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_weights(path, NerfactoModel(3, **TINY))
    text = str(e.value)
    assert "its shapes do not fit this run's model" in text and "\n" not in text
    assert "field.embedding_appearance.embedding.weight is [5, 4] there and [3, 4] here" in text
    assert "one row per training image: the checkpoint's scene had 5 training images, this one has 3" in text
    assert "camera_optimizer.pose_adjustment is [5, 6] there and [3, 6] here" in text
    assert "corrupt" not in text and "policy" not in text
    with pytest.raises(ck.CheckpointError, match=r"embedding.weight is \[5, 4\] there and \[5, 8\] here "
                                                 r"\(model.appearance_embed_dim differs\)"):
        ck.load_weights(path, NerfactoModel(5, **{**TINY, "appearance_embed_dim": 8}))
    ck.load_weights(path, NerfactoModel(5, **TINY))  # the same shapes load


def test_average_init_density_scales_the_initial_density(compose):
    """nerfstudio's average_init_density (default 1.0): a schema key of model=nerfacto that scales the
    field's and the proposal networks' densities at initialisation."""
    cfg = compose(["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto",
                   "data=synthetic", "model.average_init_density=0.25"])
    assert cfg.model.average_init_density == 0.25 and NerfactoConfig().average_init_density == 1.0
    positions = torch.rand(2, 5, 3) - 0.5
    densities = {}
    for value in (1.0, 0.25):
        torch.manual_seed(0)
        model = NerfactoModel(3, **{**TINY, "average_init_density": value})
        assert model.config.average_init_density == value
        densities[value] = [model.field.density_fn(positions), *(p(positions) for p in model.proposal_networks)]
    for full, quarter in zip(densities[1.0], densities[0.25]):
        assert float(full.abs().max()) > 0
        torch.testing.assert_close(quarter, 0.25 * full)
    with pytest.raises(ConfigError, match="average_init_density=0.0 is out of range: must be > 0"):
        NerfactoModel(3, **{**TINY, "average_init_density": 0.0})


def test_render_image_runs_the_eager_forward_of_a_compiled_model():
    """machine.compile compiles the training step; renders (varying chunk and image sizes) stay eager, so
    they never wait for a compilation: Dynamo sees no frame during render_image."""
    import torch._dynamo

    torch.manual_seed(0)
    model = NerfactoModel(3, torch.tensor([[-2.0] * 3, [2.0] * 3]), **TINY)
    model.compile(backend="eager")
    model.eval()
    torch._dynamo.reset()
    before = torch._dynamo.utils.counters["frames"]["total"]
    out = model.render_image(_rays(40), chunk=16)
    assert out["rgb"].shape == (40, 3)
    assert torch._dynamo.utils.counters["frames"]["total"] == before
    model(_rays(8))  # the compiled call itself does go through Dynamo
    assert torch._dynamo.utils.counters["frames"]["total"] > before
