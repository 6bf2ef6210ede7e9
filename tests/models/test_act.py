"""ACT: config checks, shapes, loss semantics, action queue, temporal ensembling, param groups,
pretrained backbone weights. Tiny sizes (dim_model 32, one layer each, 3x64x64 images) keep the
file to seconds on a CPU; the full-size model is built once on the meta device to count parameters.
"""

import math

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from data.features import FeatureType, PolicyFeature
from models.act.config import ACTConfig
from models.act.modeling import ACTPolicy, TemporalEnsembler, sinusoidal_table

TINY = dict(
    pretrained_backbone_weights=None, dim_model=32, n_heads=4, dim_feedforward=64, n_encoder_layers=1,
    n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=8, chunk_size=6, n_action_steps=6,
)


def make_features(images=("observation.images.top",), state_dim=3, env_dim=None, action_dim=2, shape=(3, 64, 64)):
    features = {}
    if state_dim:
        features["observation.state"] = PolicyFeature(FeatureType.STATE, (state_dim,))
    if env_dim:
        features["observation.environment_state"] = PolicyFeature(FeatureType.ENV, (env_dim,))
    for key in images:
        features[key] = PolicyFeature(FeatureType.VISUAL, shape)
    features["action"] = PolicyFeature(FeatureType.ACTION, (action_dim,))
    return features


def make_stats(features):
    stats = {}
    for key, ft in features.items():
        n = ft.shape[0]
        shape = (n, 1, 1) if ft.type == FeatureType.VISUAL else (n,)
        stats[key] = {"mean": np.full(shape, 0.5), "std": np.full(shape, 2.0), "min": np.zeros(shape),
                      "max": np.ones(shape)}
    return stats


def make_batch(features, batch_size=4, chunk=6, generator=None):
    g = generator or torch.Generator().manual_seed(0)
    batch = {}
    for key, ft in features.items():
        if ft.type == FeatureType.ACTION:
            batch[key] = torch.randn(batch_size, chunk, *ft.shape, generator=g)
            batch[f"{key}_is_pad"] = torch.zeros(batch_size, chunk, dtype=torch.bool)
        elif ft.type == FeatureType.VISUAL:
            batch[key] = torch.rand(batch_size, *ft.shape, generator=g)
        else:
            batch[key] = torch.randn(batch_size, *ft.shape, generator=g)
    return batch


def make_policy(features=None, **overrides):
    features = features or make_features()
    return ACTPolicy(features, stats=make_stats(features), **{**TINY, **overrides})


# ----------------------------------------------------------------------------- config
def test_defaults_are_lerobots():
    c = ACTConfig(pretrained_backbone_weights=None)
    assert (c.n_obs_steps, c.chunk_size, c.n_action_steps) == (1, 100, 100)
    assert (c.dim_model, c.n_heads, c.dim_feedforward, c.feedforward_activation) == (512, 8, 3200, "relu")
    assert (c.n_encoder_layers, c.n_decoder_layers, c.pre_norm, c.dropout) == (4, 1, False, 0.1)
    assert (c.use_vae, c.latent_dim, c.n_vae_encoder_layers, c.kl_weight) == (True, 32, 4, 10.0)
    assert c.temporal_ensemble_coeff is None and c.optimizer_lr_backbone == 1e-5
    assert c.normalization_mapping == {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    assert ACTConfig.__dataclass_fields__["pretrained_backbone_weights"].default == "ResNet18_Weights.IMAGENET1K_V1"
    assert c.observation_delta_indices is None and c.action_delta_indices == list(range(100))


def test_full_size_parameter_count_is_lerobots():
    """LeRobot's ACT for ALOHA (one 480x640 camera, 14-D state and action) has 51,613,582 parameters."""
    features = make_features(state_dim=14, action_dim=14, shape=(3, 480, 640))
    with torch.device("meta"):
        policy = ACTPolicy(features, stats=None, pretrained_backbone_weights=None)
    assert sum(p.numel() for p in policy.parameters()) == 51_613_582


@pytest.mark.parametrize("overrides, message", [
    (dict(n_action_steps=7), "policy.n_action_steps=7 exceeds policy.chunk_size=6"),
    (dict(temporal_ensemble_coeff=0.01, n_action_steps=2), "set policy.n_action_steps=1"),
    (dict(n_obs_steps=2), "policy.n_obs_steps=2 is out of range: must be in [1, 1] (ACT conditions on the current"),
    (dict(dim_model=30, n_heads=4), "not divisible by policy.n_heads=4"),
    (dict(feedforward_activation="tanh"), "policy.feedforward_activation='tanh' is not one of relu, gelu, glu"),
    (dict(dropout=1.0), "policy.dropout=1.0 is out of range: must be in [0, 1)"),
    (dict(vision_backbone="vit_b_16"), "policy.vision_backbone='vit_b_16' is not one of resnet18"),
    (dict(temporal_ensemble_coeff=-0.9, n_action_steps=1, chunk_size=100), "use a coefficient >= -0.808"),
    (dict(use_vae=True, n_vae_encoder_layers=0), "must be >= 1 with policy.use_vae=true"),
    (dict(replace_final_stride_with_dilation=True), "needs a bottleneck ResNet"),
    (dict(normalization_mapping={"STATE": "Z"}), "policy.normalization_mapping.STATE=Z is unknown"),
    (dict(pretrained_backbone_weights="/nowhere/r18.pth"), "neither a file nor a torchvision weights name"),
])
def test_bad_options_fail_with_one_line(overrides, message):
    with pytest.raises(ValueError) as err:
        ACTConfig(**{**TINY, **overrides})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_cached_weights_say_where_the_file_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ValueError) as err:
        ACTConfig(pretrained_backbone_weights="ResNet18_Weights.IMAGENET1K_V1")
    text = str(err.value)
    assert str(tmp_path / "checkpoints" / "resnet18-f37072fd.pth") in text
    assert "policy.pretrained_backbone_weights=null" in text


def test_needs_a_camera_or_environment_state():
    with pytest.raises(ValueError, match="at least one camera"):
        make_policy(make_features(images=()))
    make_policy(make_features(images=(), env_dim=4))  # state + environment state only: fine


# ----------------------------------------------------------------------------- model
def test_sinusoidal_table_matches_the_formula():
    table = sinusoidal_table(5, 6)
    pos, j = 3, 4
    assert math.isclose(table[pos, j].item(), math.sin(pos / 10000 ** (2 * (j // 2) / 6)), rel_tol=1e-6)
    assert math.isclose(table[pos, j + 1].item(), math.cos(pos / 10000 ** (2 * (j // 2) / 6)), rel_tol=1e-6)


def test_forward_loss_parts_and_shapes():
    features = make_features(images=("observation.images.top", "observation.images.wrist"))
    policy = make_policy(features)
    batch = make_batch(features)
    loss, info = policy(batch)
    assert loss.ndim == 0 and set(info) == {"l1_loss", "kld_loss", "loss"}
    assert math.isclose(info["loss"], info["l1_loss"] + 10.0 * info["kld_loss"], rel_tol=1e-5)
    chunk, (mu, log_var) = policy.predict_chunk(policy.normalizer.normalize(batch))
    assert chunk.shape == (4, 6, 2) and mu.shape == log_var.shape == (4, 8)
    policy.eval()
    assert policy.predict_chunk(policy.normalizer.normalize(batch))[1] == (None, None)  # zero latent

    no_vae = make_policy(features, use_vae=False)
    _, info = no_vae(batch)
    assert set(info) == {"l1_loss", "loss"} and not hasattr(no_vae, "vae_encoder")


def test_padded_actions_do_not_count():
    features = make_features()
    policy = make_policy(features, use_vae=False, dropout=0.0)
    batch = make_batch(features)
    batch["action_is_pad"][:, 3:] = True
    loss, _ = policy(batch)
    changed = dict(batch, action=batch["action"].clone())
    changed["action"][:, 3:] += 100.0  # padded targets: no effect
    assert torch.equal(policy(changed)[0], loss)
    changed["action"][0, 0, 0] += 1.0  # a real target: the loss moves
    assert not torch.equal(policy(changed)[0], loss)


def test_fixed_batch_loss_falls():
    torch.manual_seed(0)
    features = make_features()
    policy = make_policy(features)
    batch = make_batch(features)
    opt = torch.optim.AdamW(policy.get_optim_params(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss, _ = policy(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_param_groups_put_the_backbone_at_its_own_lr():
    policy = make_policy(optimizer_lr_backbone=3e-6)
    groups = policy.get_optim_params()
    backbone = {id(p) for p in policy.backbone.parameters()}
    assert {id(p) for p in groups[1]["params"]} == backbone and groups[1]["lr"] == 3e-6
    assert not backbone & {id(p) for p in groups[0]["params"]} and "lr" not in groups[0]
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(policy.parameters()))
    opt = torch.optim.AdamW(groups, lr=1e-5, weight_decay=1e-4)
    assert [g["lr"] for g in opt.param_groups] == [1e-5, 3e-6]
    no_camera = make_policy(make_features(images=(), env_dim=4))
    assert len(no_camera.get_optim_params()) == 1


def test_backbone_batchnorm_is_frozen():
    policy = make_policy()
    norms = [m for m in policy.backbone.modules() if isinstance(m, torchvision.ops.misc.FrozenBatchNorm2d)]
    assert norms and not any(isinstance(m, torch.nn.BatchNorm2d) for m in policy.backbone.modules())


def test_pretrained_weights_from_a_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    torch.nn.init.normal_(reference.conv1.weight)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    policy = make_policy(pretrained_backbone_weights=str(path))
    assert torch.equal(policy.backbone[0].weight, reference.conv1.weight)
    assert torch.equal(policy.backbone[4][0].bn1.running_var, reference.layer1[0].bn1.running_var)


# ----------------------------------------------------------------------------- rollouts
def test_action_queue_predicts_every_n_action_steps():
    features = make_features()
    policy = make_policy(features, n_action_steps=3).eval()
    calls = []
    original = policy.predict_chunk
    policy.predict_chunk = lambda batch: calls.append(1) or original(batch)
    obs = {k: v for k, v in make_batch(features, batch_size=2).items() if not k.startswith("action")}
    actions = [policy.select_action(obs) for _ in range(7)]
    assert len(calls) == 3 and actions[0].shape == (2, 2)
    chunk = policy.normalizer.unnormalize({"action": original(policy.normalizer.normalize(obs))[0]})["action"]
    assert torch.allclose(torch.stack(actions[:3], 1), chunk[:, :3], atol=1e-5)  # the chunk's first 3, in order
    planned, taken = policy.action_plan()  # the third chunk, of which the 7th action was the first
    assert planned.shape == (2, 3, 2) and taken == 1 and torch.equal(planned[:, 0], actions[6])
    policy.reset()
    policy.select_action(obs)
    assert len(calls) == 4  # a new episode predicts afresh


def test_temporal_ensemble_weights_against_a_hand_computation():
    coeff, chunk_size = 0.5, 4
    ensembler = TemporalEnsembler(coeff, chunk_size)
    chunks = [torch.randn(1, chunk_size, 1) for _ in range(6)]
    for t, chunk in enumerate(chunks):
        got = ensembler.update(chunk.clone())
        # predictions for step t: chunk s (made at step s) holds it at index t - s; oldest first
        preds = [chunks[s][0, t - s, 0].item() for s in range(max(0, t - chunk_size + 1), t + 1)]
        weights = [math.exp(-coeff * i) for i in range(len(preds))]
        expected = sum(w * p for w, p in zip(weights, preds)) / sum(weights)
        assert math.isclose(got.item(), expected, rel_tol=1e-5, abs_tol=1e-6), t


def test_select_action_with_temporal_ensembling():
    features = make_features()
    policy = make_policy(features, n_action_steps=1, temporal_ensemble_coeff=0.01).eval()
    g = torch.Generator().manual_seed(1)
    obs = [{k: v for k, v in make_batch(features, batch_size=2, generator=g).items() if not k.startswith("action")}
           for _ in range(2)]
    first = policy.select_action(obs[0])
    chunk0 = policy.normalizer.unnormalize({"action": policy.predict_chunk(policy.normalizer.normalize(obs[0]))[0]})
    chunk1 = policy.normalizer.unnormalize({"action": policy.predict_chunk(policy.normalizer.normalize(obs[1]))[0]})
    assert torch.allclose(first, chunk0["action"][:, 0], atol=1e-5)
    second = policy.select_action(obs[1])
    w0, w1 = 1.0, math.exp(-0.01)
    expected = (w0 * chunk0["action"][:, 1] + w1 * chunk1["action"][:, 0]) / (w0 + w1)
    assert torch.allclose(second, expected, atol=1e-5)
    assert policy.action_plan() is None  # every step blends all chunks: none is being executed


def test_compose_and_instantiate(compose):
    from hydra.utils import instantiate

    cfg = compose(["policy=act", "env=aloha", "dataset=aloha_insertion", "policy.pretrained_backbone_weights=null",
                   "policy.dim_model=32", "policy.n_heads=4", "policy.chunk_size=5", "policy.n_action_steps=5"])
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer.lr == 1e-5
    assert cfg.optimizer.weight_decay == 1e-4 and cfg.scheduler.name == "constant"
    features = make_features(state_dim=14, action_dim=14, shape=(3, 32, 32))
    policy = instantiate(cfg.policy, features=features, stats=make_stats(features), _convert_="all")
    assert isinstance(policy, ACTPolicy) and policy.config.chunk_size == 5
    assert OmegaConf.to_object(cfg.policy).n_action_steps == 5


def test_default_weights_name_is_read_from_torchvisions_cache(tmp_path, monkeypatch):
    """LeRobot's default (ResNet18_Weights.IMAGENET1K_V1) loads from the file torchvision would have
    downloaded, put in place by hand, and is never fetched."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    policy = make_policy(pretrained_backbone_weights="ResNet18_Weights.IMAGENET1K_V1")
    assert torch.equal(policy.backbone[7][1].conv2.weight, reference.layer4[1].conv2.weight)
