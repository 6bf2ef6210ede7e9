"""VQ-BeT: LeRobot's defaults, config checks, both training phases and the switch between them,
rollout queues, the optimizer groups, the vqbet schedule and the seed's flags.

Tiny configs (a 1-layer GPT of width 16, 8 codes per layer, 3x48x48 images cropped to 40) keep the
file to seconds on a CPU.
"""

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from data.features import FeatureType, PolicyFeature
from models.vqbet.config import VQBeTConfig
from models.vqbet.layers import focal_loss
from models.vqbet.modeling import VQBeTPolicy
from training.schedulers import vqbet_scheduler

ACTION_LOW, ACTION_HIGH = 10.0, 500.0
TINY = dict(
    n_obs_steps=2, n_action_pred_token=2, action_chunk_size=3, crop_shape=(40, 40), spatial_softmax_num_keypoints=4,
    n_vqvae_training_steps=3, vqvae_n_embed=8, vqvae_embedding_dim=16, vqvae_enc_hidden_dim=16, gpt_block_size=16,
    gpt_input_dim=16, gpt_output_dim=16, gpt_n_layer=1, gpt_n_head=2, gpt_hidden_dim=16,
)


def make_features(cameras=("observation.image",), state_dim=2, action_dim=2):
    features = {"observation.state": PolicyFeature(FeatureType.STATE, (state_dim,))}
    for key in cameras:
        features[key] = PolicyFeature(FeatureType.VISUAL, (3, 48, 48))
    features["action"] = PolicyFeature(FeatureType.ACTION, (action_dim,))
    return features


def make_stats(features):
    stats = {}
    for key, ft in features.items():
        if ft.type == FeatureType.VISUAL:
            stats[key] = {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25),
                          "min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1))}
        else:
            dim = ft.shape[0]
            stats[key] = {"mean": np.full(dim, 250.0), "std": np.full(dim, 100.0),
                          "min": np.full(dim, ACTION_LOW), "max": np.full(dim, ACTION_HIGH)}
    return stats


def make_policy(features=None, **overrides):
    torch.manual_seed(0)
    features = features or make_features()
    return VQBeTPolicy(features, make_stats(features), **{**TINY, **overrides})


def make_batch(policy, batch_size=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cfg = policy.config
    batch = {policy.state_key: torch.rand(batch_size, cfg.n_obs_steps, 2, generator=gen) * 500}
    for key in policy.image_keys:
        batch[key] = torch.rand(batch_size, cfg.n_obs_steps, 3, 48, 48, generator=gen)
    # smooth trajectories, so that action chunks have structure to quantise
    n = len(cfg.action_delta_indices)
    start = ACTION_LOW + torch.rand(batch_size, 1, 2, generator=gen) * 400
    step = (torch.rand(batch_size, 1, 2, generator=gen) - 0.5) * 20
    batch["action"] = start + step * torch.arange(n).view(1, n, 1)
    return batch


def end_vqvae_phase(policy):
    for _ in range(policy.config.n_vqvae_training_steps):
        policy.on_optimizer_step()
    assert policy.discretized


def test_defaults_match_lerobot():
    cfg = VQBeTConfig()
    assert (cfg.n_obs_steps, cfg.n_action_pred_token, cfg.action_chunk_size) == (5, 3, 5)
    assert cfg.normalization_mapping == {"VISUAL": "IDENTITY", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
    assert (cfg.vision_backbone, cfg.crop_shape, cfg.crop_is_random) == ("resnet18", (84, 84), True)
    assert cfg.pretrained_backbone_weights is None and cfg.use_group_norm and cfg.spatial_softmax_num_keypoints == 32
    assert (cfg.n_vqvae_training_steps, cfg.vqvae_n_embed, cfg.vqvae_embedding_dim, cfg.vqvae_enc_hidden_dim) == (
        20000, 16, 256, 128)
    assert (cfg.gpt_block_size, cfg.gpt_input_dim, cfg.gpt_output_dim, cfg.gpt_n_layer, cfg.gpt_n_head,
            cfg.gpt_hidden_dim, cfg.dropout) == (500, 512, 512, 8, 8, 512, 0.1)
    assert (cfg.offset_loss_weight, cfg.primary_code_loss_weight, cfg.secondary_code_loss_weight) == (10000.0, 5.0, 0.5)
    assert cfg.bet_softmax_temperature == 0.1 and not cfg.sequentially_select
    assert (cfg.optimizer_vqvae_lr, cfg.optimizer_vqvae_weight_decay) == (1e-3, 1e-4)
    assert cfg.mlp_hidden_dim is None  # LeRobot's heads are linear whatever its unread mlp_hidden_dim says


def test_presets_match_lerobot(compose):
    cfg = compose(["policy=vqbet"])
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert (cfg.optimizer.lr, list(cfg.optimizer.betas), cfg.optimizer.eps, cfg.optimizer.weight_decay,
            cfg.optimizer.grad_clip_norm) == (1e-4, [0.95, 0.999], 1e-8, 1e-6, 10.0)
    assert cfg.scheduler._target_ == "training.schedulers.vqbet_scheduler"
    assert (cfg.scheduler.num_warmup_steps, cfg.scheduler.num_vqvae_training_steps, cfg.scheduler.num_cycles) == (
        500, 20000, 0.5)
    # the schedule follows the policy's phase length
    assert compose(["policy=vqbet", "policy.n_vqvae_training_steps=7"]).scheduler.num_vqvae_training_steps == 7
    exp = compose(["experiment=vqbet_pusht"])
    assert (exp.steps, exp.batch_size, exp.seed, exp.policy.n_action_pred_token) == (250000, 64, 100000, 7)


def test_delta_indices():
    cfg = VQBeTConfig()
    assert cfg.observation_delta_indices == [-4, -3, -2, -1, 0]
    assert cfg.action_delta_indices == list(range(-4, 7))  # n_action_pred_token + action_chunk_size - 1 = 7
    assert cfg.reward_delta_indices is None


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"gpt_n_head": 3}, "policy.gpt_hidden_dim=16 is not divisible by policy.gpt_n_head=3"),
    ({"gpt_block_size": 4}, "policy.gpt_block_size=4 is shorter than the 7 tokens"),
    ({"dropout": 1.0}, "policy.dropout=1.0 is out of range"),
    ({"bet_softmax_temperature": 0.0}, "policy.bet_softmax_temperature=0.0 is out of range"),
    ({"vqvae_n_embed": 0}, "policy.vqvae_n_embed=0 is out of range"),
    ({"normalization_mapping": {"ACTION": "SCALE"}}, "policy.normalization_mapping.ACTION=SCALE is unknown"),
    ({"pretrained_backbone_weights": "ResNet18_Weights.IMAGENET1K_V1"}, "set policy.use_group_norm=false"),
])
def test_config_errors_are_one_line(overrides, fragment):
    with pytest.raises(Exception) as e:
        VQBeTConfig(**{**TINY, **overrides})
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_features_it_needs_are_named():
    features = make_features()
    del features["observation.state"]
    with pytest.raises(ValueError, match="exactly one STATE feature"):
        make_policy(features)
    with pytest.raises(ValueError, match="at least one camera"):
        make_policy(make_features(cameras=()))
    with pytest.raises(ValueError, match="policy.gpt_block_size=8 is shorter than the 9 tokens 2 cameras need"):
        make_policy(make_features(cameras=("a", "b")), gpt_block_size=8)
    with pytest.raises(ValueError, match="not an option of the vqbet policy"):
        make_policy(horizon=8)


def _grad_owners(policy):
    return {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("action_head") else "")
            for name, p in policy.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_phase_one_trains_only_the_vqvae_and_reports_codes():
    policy = make_policy()
    loss, info = policy(make_batch(policy))
    loss.backward()
    assert torch.isfinite(loss) and not policy.discretized
    assert _grad_owners(policy) == {"action_head.vqvae_model"}
    assert 1 <= info["n_different_codes"] <= 2 * 8 and 1 <= info["n_different_combinations"] <= 8 * 8
    assert "recon_l1_error" in info and "offset_loss" not in info


def test_phase_switch_after_n_optimizer_steps_freezes_the_codebooks():
    policy = make_policy()
    batch = make_batch(policy)
    embed = policy.vqvae.vq_layer.layers[0].embed
    before = embed.clone()
    policy(batch)  # a phase 1 forward moves the EMA codebook
    assert not torch.equal(before, embed)
    for expected in (1, 2):
        policy.on_optimizer_step()
        assert int(policy.vqvae.steps) == expected and not policy.discretized
    policy.on_optimizer_step()
    assert policy.discretized and int(policy.vqvae.steps) == 3
    policy.on_optimizer_step()  # phase 2 no longer counts
    assert int(policy.vqvae.steps) == 3
    frozen = {k: v.clone() for k, v in policy.vqvae.state_dict().items()}
    loss, info = policy(batch)
    loss.backward()
    assert all(torch.equal(frozen[k], v) for k, v in policy.vqvae.state_dict().items())
    owners = _grad_owners(policy)
    assert {"policy", "rgb_encoder", "state_projector", "rgb_feature_projector", "action_token",
            "action_head.map_to_cbet_preds_bin", "action_head.map_to_cbet_preds_offset"} == owners
    assert {"classification_loss", "offset_loss", "equal_primary_code_rate", "vq_action_error"} <= set(info)


@pytest.mark.parametrize("sequentially_select", [False, True])
def test_each_phase_lowers_the_loss_on_a_fixed_batch(sequentially_select):
    """60 VQ-VAE steps (cheap: no images) leave the unused codes near zero, as a real run's many steps
    do (their EMA decays); a near-greedy code choice keeps phase 2's loss free of sampling noise."""
    policy = make_policy(sequentially_select=sequentially_select, n_vqvae_training_steps=60, dropout=0.0,
                         bet_softmax_temperature=1e-3)
    batch = make_batch(policy, batch_size=4)
    optimizer = torch.optim.Adam(policy.get_optim_params(), lr=1e-3)
    losses = {1: [], 2: []}
    for _ in range(75):
        phase = 2 if policy.discretized else 1
        loss, _ = policy(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        policy.on_optimizer_step()
        losses[phase].append(loss.item())
    assert len(losses[1]) == 60 and len(losses[2]) == 15
    for phase in (1, 2):
        assert np.mean(losses[phase][-3:]) < 0.7 * losses[phase][0], (phase, losses[phase])


def test_optimizer_groups_are_lerobots():
    policy = make_policy()
    groups = policy.get_optim_params()
    assert [g["name"] for g in groups] == ["decay", "vqvae", "no_decay"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in policy.parameters()}
    assert (groups[1]["lr"], groups[1]["weight_decay"], groups[2]["weight_decay"]) == (1e-3, 1e-4, 0.0)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in policy.vqvae.parameters()}
    no_decay = {id(p) for p in groups[2]["params"]}
    assert id(policy.policy.transformer.wpe.weight) in no_decay and id(policy.policy.lm_head.weight) not in no_decay


def test_select_action_queues_one_chunk_and_uses_the_codebook():
    policy = make_policy()
    end_vqvae_phase(policy)
    policy.eval()
    calls = []
    original = policy.predict_action_chunk
    policy.predict_action_chunk = lambda batch: calls.append(batch) or original(batch)
    obs = {k: v[:, -1] for k, v in make_batch(policy, batch_size=3).items() if k in policy.observation_keys}
    actions = [policy.select_action(obs) for _ in range(7)]
    assert all(a.shape == (3, 2) for a in actions)
    assert len(calls) == 3  # a chunk of 3 actions per prediction: steps 1, 4 and 7
    planned, taken = policy.action_plan()
    assert planned.shape == (3, 3, 2) and taken == 1 and torch.equal(planned[:, 0], actions[6])
    assert calls[0]["observation.state"].shape == (3, 2, 2)  # the first observation fills the window
    assert torch.equal(calls[0]["observation.state"][:, 0], calls[0]["observation.state"][:, 1])
    # a predicted action is a decoded code plus its offset: with zeroed offsets, exactly the decoder's output
    for p in policy.action_head.map_to_cbet_preds_offset.parameters():
        torch.nn.init.zeros_(p)
    policy.reset()
    chunk = policy.predict_action_chunk({k: torch.stack([obs[k]] * 2, 1) for k in policy.observation_keys})
    decoded = {tuple(policy.vqvae.decode(torch.tensor([[i, j]]))[0].flatten().tolist())
               for i in range(8) for j in range(8)}
    normalized = policy.normalizer.normalize({"action": chunk})["action"]
    assert all(min(max(abs(a - b) for a, b in zip(row.flatten().tolist(), d)) for d in decoded) < 1e-4
               for row in normalized)


def test_state_dict_carries_the_phase_and_reproduces_actions(tmp_path):
    policy = make_policy()
    end_vqvae_phase(policy)
    save_file(policy.state_dict(), str(tmp_path / "w.safetensors"))
    fresh = make_policy()
    assert not fresh.discretized
    fresh.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    assert fresh.discretized and int(fresh.vqvae.steps) == 3
    obs = {k: v[:, -1] for k, v in make_batch(policy, batch_size=2).items() if k in policy.observation_keys}
    out = []
    for p in (policy, fresh):
        p.eval()
        p.reset()
        torch.manual_seed(1)
        out.append(p.select_action(obs))
    assert torch.equal(out[0], out[1])


def test_mlp_hidden_dim_adds_a_hidden_layer_to_the_heads():
    assert len(make_policy().action_head.map_to_cbet_preds_offset) == 1
    head = make_policy(mlp_hidden_dim=32).action_head
    assert [m.out_features for m in head.map_to_cbet_preds_bin if isinstance(m, torch.nn.Linear)] == [32, 16]


def test_focal_loss_is_cross_entropy_down_weighted_on_easy_rows():
    logits, target = torch.tensor([[4.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 0])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    p = torch.exp(-ce)
    assert torch.allclose(focal_loss(logits, target), ((1 - p) ** 2 * ce).mean())


def test_vqbet_schedule_is_lerobots():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = vqbet_scheduler(opt, num_training_steps=100, num_warmup_steps=10, num_vqvae_training_steps=20)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:20] == [1.0] * 20 and lrs[20] == 0.0 and lrs[25] == 0.5 and lrs[30] == 1.0
    assert math.isclose(lrs[55], 0.5 * (1 + math.cos(math.pi * 25 / 90)))


def test_hydra_instantiates_it_from_the_composed_config(compose):
    cfg = compose(["policy=vqbet", *(f"policy.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items())])
    features = make_features()
    policy = instantiate(cfg.policy, features=features, stats=make_stats(features), _convert_="all")
    assert isinstance(policy, VQBeTPolicy) and policy.config.n_vqvae_training_steps == 3
    assert OmegaConf.to_object(cfg.policy).action_delta_indices == list(range(-1, 4))


def test_every_vqbet_seed_flag_reaches_its_key(compose):
    from cli.seed_flags import LEROBOT, rule_for, target_key, translate_argv

    flags = [f for f, seed in LEROBOT.items() if "vqbet" in seed.owners and not f.endswith("_features")]
    flags += ["--scheduler.num_vqvae_training_steps", "--scheduler.num_cycles"]
    values = {"int": ["7"], "float": ["0.25"], "bool": ["true"], "Dict": ['{"VISUAL": "MEAN_STD"}'],
              "[int int]": ["40", "40"], "[str]": ["None"], "str": ["resnet34"], "Any": ["0.9", "0.99"]}
    args = [word for flag in flags for word in (flag, *values[LEROBOT[flag].seed_type])]
    out, _ = translate_argv(args)
    cfg = OmegaConf.to_container(compose(["policy=vqbet", "scheduler=vqbet", *out]), resolve=True)
    for flag in flags:  # all at once: one composition
        node = cfg
        for part in target_key(flag, rule_for(flag)).split("."):
            node = node[part]
        expected = {"int": 7, "float": 0.25, "bool": True, "Dict": {"VISUAL": "MEAN_STD"}, "[int int]": [40, 40],
                    "[str]": None, "str": "resnet34", "Any": [0.9, 0.99]}[LEROBOT[flag].seed_type]
        if isinstance(expected, dict):  # a mapping override merges into the defaults
            node = {k: node[k] for k in expected}
        assert node == expected, (flag, node)
