"""TD-MPC: LeRobot's defaults and one-line config errors, the latent model on known inputs, each loss
term against a closed form, a fixed batch's losses falling, the target network's moving average, the
planner on a toy quadratic, action repeats and steps. Tiny sizes (latent 8, width 16, 40x40 images)
keep the file to seconds on a CPU; the full-size model is built on the meta device to count parameters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from data.features import FeatureType, PolicyFeature
from models.tdmpc import planning
from models.tdmpc.config import SMALLEST_IMAGE, TDMPCConfig
from models.tdmpc.modeling import TDMPCPolicy, random_shift
from models.tdmpc.told import two_of

TINY = dict(latent_dim=8, mlp_dim=16, state_encoder_hidden_dim=16, image_encoder_hidden_dim=4, q_ensemble_size=3,
            horizon=3, n_gaussian_samples=16, n_pi_samples=4, n_elites=4, cem_iterations=2)
ACTION_MIN, ACTION_MAX = np.array([0.0, -2.0]), np.array([10.0, 2.0])


def make_features(image=(3, 40, 40), state_dim=3, env_dim=None, action_dim=2):
    features = {}
    if image:
        features["observation.image"] = PolicyFeature(FeatureType.VISUAL, image)
    if env_dim:
        features["observation.environment_state"] = PolicyFeature(FeatureType.ENV, (env_dim,))
    if state_dim:
        features["observation.state"] = PolicyFeature(FeatureType.STATE, (state_dim,))
    features["action"] = PolicyFeature(FeatureType.ACTION, (action_dim,))
    return features


def make_policy(features=None, **overrides):
    features = features or make_features()
    dim = features["action"].shape[0] if "action" in features else 2
    stats = {"action": {"min": ACTION_MIN[:dim], "max": ACTION_MAX[:dim]}}
    return TDMPCPolicy(features, stats=stats, **{**TINY, **overrides})


def make_batch(features, batch_size=4, horizon=3, generator=None):
    """Windows as the dataset returns them: observations (B, H + 1, ...), actions and rewards (B, H),
    with `*_is_pad` masks (all False). Actions lie in the stats' [min, max]."""
    g = generator or torch.Generator().manual_seed(0)
    batch = {}
    for key, ft in features.items():
        steps = horizon if ft.type == FeatureType.ACTION else horizon + 1
        if ft.type == FeatureType.ACTION:
            unit = torch.rand(batch_size, steps, *ft.shape, generator=g)
            low, high = torch.tensor(ACTION_MIN[: ft.shape[0]]), torch.tensor(ACTION_MAX[: ft.shape[0]])
            batch[key] = (low + unit * (high - low)).float()
        elif ft.type == FeatureType.VISUAL:
            batch[key] = torch.rand(batch_size, steps, *ft.shape, generator=g)
        else:
            batch[key] = torch.randn(batch_size, steps, *ft.shape, generator=g)
        batch[f"{key}_is_pad"] = torch.zeros(batch_size, steps, dtype=torch.bool)
    batch["next.reward"] = torch.rand(batch_size, horizon, generator=g)
    batch["next.reward_is_pad"] = torch.zeros(batch_size, horizon, dtype=torch.bool)
    return batch


def observations(batch):
    return {k: v[:, 0] for k, v in batch.items() if k.startswith("observation.") and not k.endswith("_is_pad")}


# ----------------------------------------------------------------------------- config
def test_defaults_are_lerobots():
    c = TDMPCConfig()
    assert (c.n_obs_steps, c.n_action_repeats, c.horizon, c.n_action_steps) == (1, 2, 5, 1)
    assert c.normalization_mapping == {"VISUAL": "IDENTITY", "STATE": "IDENTITY", "ENV": "IDENTITY",
                                       "ACTION": "MIN_MAX"}
    assert (c.image_encoder_hidden_dim, c.state_encoder_hidden_dim, c.latent_dim, c.q_ensemble_size,
            c.mlp_dim, c.discount) == (32, 256, 50, 5, 512, 0.9)
    assert (c.use_mpc, c.cem_iterations, c.max_std, c.min_std, c.n_gaussian_samples, c.n_pi_samples,
            c.uncertainty_regularizer_coeff, c.n_elites, c.elite_weighting_temperature,
            c.gaussian_mean_momentum) == (True, 6, 2.0, 0.05, 512, 51, 1.0, 50, 0.5, 0.1)
    assert (c.max_random_shift_ratio, c.reward_coeff, c.expectile_weight, c.value_coeff, c.consistency_coeff,
            c.advantage_scaling, c.pi_coeff, c.temporal_decay_coeff,
            c.target_model_momentum) == (0.0476, 0.5, 0.9, 0.1, 20.0, 3.0, 0.5, 0.5, 0.995)
    assert c.observation_delta_indices == [0, 1, 2, 3, 4, 5]
    assert c.action_delta_indices == c.reward_delta_indices == [0, 1, 2, 3, 4]
    assert SMALLEST_IMAGE == 39


def test_full_size_parameter_count_is_lerobots():
    """LeRobot 0.4.4's TDMPCPolicy for xArm (84x84 camera, 4-D state and action): 2,734,573 parameters in
    the model and as many in its target, 5,469,146 in all."""
    features = make_features(image=(3, 84, 84), state_dim=4, action_dim=4)
    with torch.device("meta"):
        policy = TDMPCPolicy(features, stats=None)
    assert sum(p.numel() for p in policy.model.parameters()) == 2_734_573
    assert sum(p.numel() for p in policy.parameters()) == 5_469_146
    assert not any(p.requires_grad for p in policy.model_target.parameters())


@pytest.mark.parametrize("overrides, message", [
    (dict(n_obs_steps=2), "policy.n_obs_steps=2 is out of range: must be in [1, 1] (TD-MPC encodes the current"),
    (dict(n_gaussian_samples=0), "policy.n_gaussian_samples=0 is out of range: must be >= 1"),
    (dict(q_ensemble_size=1), "policy.q_ensemble_size=1 is out of range: must be >= 2"),
    (dict(expectile_weight=1.5), "policy.expectile_weight=1.5 is out of range: must be in [0, 1]"),
    (dict(discount=-0.1), "policy.discount=-0.1 is out of range: must be in [0, 1]"),
    (dict(max_std=0.0), "policy.max_std=0.0 is out of range: must be > 0"),
    (dict(target_model_momentum=1.01), "policy.target_model_momentum=1.01 is out of range"),
    (dict(normalization_mapping={"ACTION": "MEAN_STD"}), "set policy.normalization_mapping.ACTION=MIN_MAX"),
    (dict(normalization_mapping={"STATE": "Z", "ACTION": "MIN_MAX"}), "policy.normalization_mapping.STATE=Z is unknown"),
    (dict(n_action_steps=2), "set policy.n_action_repeats=1 (it is 2)"),
    (dict(n_action_steps=2, n_action_repeats=1, use_mpc=False), "set policy.use_mpc=true or policy.n_action_steps=1"),
    (dict(n_action_steps=6, n_action_repeats=1), "policy.n_action_steps=6 exceeds policy.horizon=5"),
    (dict(n_elites=600), "policy.n_elites=600 exceeds the 563 trajectories sampled per CEM iteration"),
])
def test_bad_options_fail_with_one_line(overrides, message):
    with pytest.raises(ValueError) as err:
        TDMPCConfig(**overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("features, message", [
    ({**make_features(), "observation.images.wrist": PolicyFeature(FeatureType.VISUAL, (3, 40, 40))},
     "TD-MPC encodes one camera"),
    (make_features(image=(3, 38, 60)), "needs at least 39x39"),
    (make_features(image=None, state_dim=None), "TD-MPC needs an observation to encode"),
    ({"observation.state": PolicyFeature(FeatureType.STATE, (3,))}, "exactly one 1-D ACTION feature"),
])
def test_bad_features_fail_with_one_line(features, message):
    with pytest.raises(ValueError) as err:
        make_policy(features)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_option_is_one_line():
    with pytest.raises(ValueError, match="policy.horizn is not an option of the tdmpc policy"):
        make_policy(horizn=3)


# ----------------------------------------------------------------------------- model
def test_told_on_known_inputs():
    """Zero-initialised reward and Q heads predict 0; latents lie in (0, 1); the latent of several
    modalities is the mean of each one's; pi's actions lie in (-1, 1) without noise."""
    features = make_features(env_dim=5)
    policy = make_policy(features)
    model = policy.model
    obs = {"image": torch.rand(6, 3, 40, 40), "env_state": torch.randn(6, 5), "state": torch.randn(6, 3)}
    z = model.encode(obs)
    assert z.shape == (6, 8) and (z > 0).all() and (z < 1).all()
    parts = [model.encode({k: v if k == name else None for k, v in obs.items()}) for name in obs]
    assert torch.allclose(z, torch.stack(parts).mean(0), atol=1e-6)
    a = torch.rand(6, 2) * 2 - 1
    z_next, reward = model.latent_dynamics_and_reward(z, a)
    assert z_next.shape == (6, 8) and torch.equal(z_next, model.latent_dynamics(z, a))
    assert torch.equal(reward, torch.zeros(6)) and torch.equal(model.Qs(z, a), torch.zeros(3, 6))
    assert model.V(z).shape == (6,) and model.pi(z).abs().max() < 1
    # time and batch dims together (the training rollout's (H, B, ...))
    assert model.encode({"image": torch.rand(2, 3, 3, 40, 40), "env_state": torch.randn(2, 3, 5),
                         "state": torch.randn(2, 3, 3)}).shape == (2, 3, 8)


def test_min_of_two_qs_takes_two_distinct_members():
    """With Q values 1, 2 and 3 the smaller of two distinct ones is 1 or 2, never 3 (LeRobot's draw with
    replacement returns 3 one time in nine)."""
    policy = make_policy()
    for i, q in enumerate(policy.model._Qs):
        nn.init.constant_(q[-1].bias, float(i + 1))
    seen = {policy.model.min_of_two_Qs(torch.rand(1, 8), torch.rand(1, 2)).item() for _ in range(60)}
    assert seen == {1.0, 2.0}
    assert two_of(2) == (0, 1)
    assert all(len(set(two_of(5))) == 2 for _ in range(20))


def test_random_shift_is_a_crop_of_the_edge_padded_image():
    torch.manual_seed(0)
    images = torch.rand(12, 3, 21, 21)
    shifted = random_shift(images, 0.1)  # pad round(2.1) = 2
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(shifted[i], padded[i, :, dy:dy + 21, dx:dx + 21])]
        assert matches, i
        offsets.add(matches[0])
    assert len(offsets) > 3  # per image, not one shift for the batch
    assert torch.equal(random_shift(images, 0.0), images)


# ----------------------------------------------------------------------------- losses
def constant_heads(policy, v=0.4, z_dyn=0.5, z_enc=-0.25):
    """Every output the losses read becomes a constant: the encoder's and dynamics' last LayerNorms
    give sigmoid(z_enc) and sigmoid(z_dyn), V gives v, rewards, Qs and pi (before tanh) give 0."""
    with torch.no_grad():
        for model in (policy.model, policy.model_target):
            norm = model._encoder.state_enc_layers[-2]
            norm.weight.zero_(), norm.bias.fill_(z_enc)
            model._dynamics[-2].weight.zero_(), model._dynamics[-2].bias.fill_(z_dyn)
            model._V[-1].weight.zero_(), model._V[-1].bias.fill_(v)
            model._pi[-1].weight.zero_(), model._pi[-1].bias.zero_()


def test_each_loss_term_against_its_closed_form():
    """With the constant heads above, each term is a sum over the window of decay**t times a known
    error, masked where the window leaves the episode, then averaged over the batch (pi's over both)."""
    features = make_features(image=None)
    policy = make_policy(features, horizon=3, discount=0.8, expectile_weight=0.7, advantage_scaling=2.0,
                         temporal_decay_coeff=0.5)
    v, z_dyn, z_enc = 0.4, 0.5, -0.25
    constant_heads(policy, v, z_dyn, z_enc)
    batch = make_batch(features, batch_size=4, horizon=3)
    # sample 1: the episode ends after its 2nd frame (observations 2, 3, actions and rewards 2 padded)
    batch["observation.state_is_pad"][1, 2:] = True
    batch["action_is_pad"][1, 2:] = True
    batch["next.reward_is_pad"][1, 2:] = True
    # sample 2: the last next-observation is past the episode's end
    batch["observation.state_is_pad"][2, 3:] = True
    _, info = policy(batch)

    decay = np.array([1.0, 0.5, 0.25])
    obs_ok = ~batch["observation.state_is_pad"].numpy()
    action_ok = ~batch["action_is_pad"].numpy()
    reward_ok = ~batch["next.reward_is_pad"].numpy()
    rollout = obs_ok[:, :1] & action_ok  # (B, H)
    reward = batch["next.reward"].numpy().astype(np.float64)
    # normalised actions (MIN_MAX to [-1, 1]); pi predicts tanh(0) = 0
    actions = batch["action"].numpy().astype(np.float64)
    unit = (actions - ACTION_MIN) / (ACTION_MAX - ACTION_MIN + 1e-8) * 2 - 1
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = {
        "consistency_loss": ((decay * (sig(z_dyn) - sig(z_enc)) ** 2 * (rollout & obs_ok[:, 1:])).sum(1)).mean(),
        "reward_loss": ((decay * reward ** 2 * (rollout & reward_ok)).sum(1)).mean(),
        # three Qs predict 0 against r + discount * V
        "Q_value_loss": ((decay * 3 * (reward + 0.8 * v) ** 2 * (rollout & reward_ok & obs_ok[:, 1:])).sum(1)).mean(),
        # V predicts v against the Qs' 0: an over-estimate, weighted 1 - expectile_weight
        "V_value_loss": ((decay * 0.3 * v ** 2 * rollout).sum(1)).mean(),
        "pi_loss": (math.exp(2.0 * (0 - v)) * (unit ** 2).sum(-1) * decay * rollout).mean(),
    }
    for name, value in expected.items():
        assert math.isclose(info[name], value, rel_tol=1e-5), (name, info[name], value)
    total = 20 * expected["consistency_loss"] + 0.5 * expected["reward_loss"] + 0.1 * (
        expected["Q_value_loss"] + expected["V_value_loss"]) + 0.5 * expected["pi_loss"]
    assert math.isclose(info["loss"], total, rel_tol=1e-5)


def test_advantage_weights_are_clamped_at_100():
    features = make_features(image=None)
    policy = make_policy(features, advantage_scaling=3.0)
    constant_heads(policy, v=-5.0)  # advantage 0 - (-5): exp(15) would dominate
    batch = make_batch(features)
    _, info = policy(batch)
    actions = batch["action"].double()
    unit = (actions - torch.tensor(ACTION_MIN)) / (torch.tensor(ACTION_MAX - ACTION_MIN) + 1e-8) * 2 - 1
    decay = 0.5 ** torch.arange(3.0).double()
    assert math.isclose(info["pi_loss"], (100.0 * (unit ** 2).sum(-1) * decay).mean().item(), rel_tol=1e-5)


def test_rewards_with_a_trailing_axis_and_missing_rewards():
    features = make_features(image=None)
    policy = make_policy(features)
    batch = make_batch(features)
    flat, _ = policy(batch)
    assert torch.equal(policy(dict(batch, **{"next.reward": batch["next.reward"].unsqueeze(-1)}))[0], flat)
    no_reward = {k: v for k, v in batch.items() if not k.startswith("next.reward")}
    with pytest.raises(KeyError, match="TD-MPC trains on next.reward, which the batch lacks"):
        policy(no_reward)
    short = dict(batch, action=batch["action"][:, :2])
    with pytest.raises(ValueError, match=r"action has shape \[4, 2, 2\], expected \[B, 3, ...\]"):
        policy(short)


def test_fixed_batch_losses_fall():
    torch.manual_seed(0)
    features = make_features()
    policy = make_policy(features)
    batch = make_batch(features, batch_size=8)
    optimizer = torch.optim.Adam(policy.get_optim_params(), lr=3e-3)
    history = []
    for _ in range(60):
        loss, info = policy(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        policy.on_optimizer_step()
        history.append(info)
    for name in ("loss", "reward_loss", "Q_value_loss", "pi_loss"):
        first, last = np.mean([h[name] for h in history[:3]]), np.mean([h[name] for h in history[-3:]])
        assert last < 0.5 * first, (name, first, last)


def test_every_trained_parameter_gets_a_gradient():
    features = make_features(env_dim=5)
    policy = make_policy(features)
    loss, _ = policy(make_batch(features))
    loss.backward()
    # every parameter is reached (data-parallel training needs no find_unused_parameters); the reward and Q
    # heads start at zero, so their hidden layers get gradients once those last layers have moved
    assert all(p.grad is not None for p in policy.model.parameters())
    heads = [policy.model._reward[-1], *(q[-1] for q in policy.model._Qs), policy.model._V[-1], policy.model._pi[-1]]
    assert all(layer.weight.grad.abs().sum() > 0 for layer in heads)
    assert all(p.grad is None for p in policy.model_target.parameters())
    groups = policy.get_optim_params()
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(p) for p in policy.model.parameters()}


# ----------------------------------------------------------------------------- target network
def test_target_network_is_an_exponential_moving_average():
    policy = make_policy(target_model_momentum=0.9)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in policy.model_target.parameters()]
    policy.on_optimizer_step()
    for old, new, online in zip(before, policy.model_target.parameters(), policy.model.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * online, atol=1e-6)
    assert not torch.equal(before[0], next(policy.model_target.parameters()))
    keys = policy.state_dict().keys()
    assert any(k.startswith("model_target.") for k in keys)  # saved with the weights: exact resumes
    frozen = make_policy(target_model_momentum=1.0)
    still = [p.clone() for p in frozen.model_target.parameters()]
    with torch.no_grad():
        for p in frozen.model.parameters():
            p.add_(1.0)
    frozen.on_optimizer_step()
    assert all(torch.equal(a, b) for a, b in zip(still, frozen.model_target.parameters()))


# ----------------------------------------------------------------------------- planning
class QuadraticWorld:
    """A toy latent model: z is a 2-D position, an action moves it by 0.5 * a, the reward is minus the
    squared distance of the new position to `goal`; Qs are a constant ensemble, pi outputs 0 + noise."""

    def __init__(self, goal, q_values=(0.0, 0.0)):
        self.goal = torch.tensor(goal)
        self.q_values = torch.tensor(q_values)

    def latent_dynamics(self, z, a):
        return z + 0.5 * a

    def latent_dynamics_and_reward(self, z, a):
        nxt = self.latent_dynamics(z, a)
        return nxt, -((nxt - self.goal) ** 2).sum(-1)

    def pi(self, z, std=0.0):
        return torch.zeros(*z.shape[:-1], 2) + std * torch.randn(*z.shape[:-1], 2)

    def Qs(self, z, a):
        return self.q_values.view(-1, *[1] * (z.ndim - 1)).expand(-1, *z.shape[:-1])


def test_estimate_value_against_a_hand_computation():
    config = TDMPCConfig(horizon=2, discount=0.5, uncertainty_regularizer_coeff=0.1, n_gaussian_samples=4,
                         n_pi_samples=0, n_elites=2, min_std=0.0)
    world = QuadraticWorld(goal=[1.0, 0.0], q_values=(2.0, 4.0))
    actions = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (horizon, 1, A)
    value = planning.estimate_value(world, config, torch.zeros(1, 2), actions)
    q_std = torch.tensor([2.0, 4.0]).std().item()  # the ensemble's (unbiased) std, subtracted at each step
    r0 = -((0.5 - 1.0) ** 2)  # position (0.5, 0)
    r1 = -((0.5 - 1.0) ** 2 + 0.5 ** 2)  # position (0.5, 0.5)
    expected = (r0 - 0.1 * q_std) + 0.5 * (r1 - 0.1 * q_std) + 0.25 * (2.0 - 0.1 * q_std)
    assert math.isclose(value.item(), expected, rel_tol=1e-6)


def test_cem_reduces_the_cost_of_a_toy_quadratic():
    """More CEM iterations find better plans, and the planned first action heads for the goal: the
    optimum reaches (0.3, -0.2) in one step of (0.6, -0.4) and stays there."""
    world = QuadraticWorld(goal=[0.3, -0.2])
    z = torch.zeros(3, 2)

    def planned_cost(iterations: int) -> tuple[float, torch.Tensor]:
        config = TDMPCConfig(horizon=3, cem_iterations=iterations, n_gaussian_samples=256, n_pi_samples=0,
                             n_elites=32, uncertainty_regularizer_coeff=0.0, min_std=0.01)
        torch.manual_seed(0)
        actions, mean = planning.plan(world, config, z, 2)
        assert actions.shape == mean.shape == (3, 3, 2) and actions.abs().max() <= 1
        return -planning.estimate_value(world, config, z, actions).mean().item(), actions

    costs = {n: planned_cost(n)[0] for n in (1, 3, 8)}
    assert costs[8] < costs[3] < costs[1], costs
    _, actions = planned_cost(8)
    assert torch.allclose(actions[0], torch.tensor([0.6, -0.4]).expand(3, 2), atol=0.1), actions[0]
    assert costs[8] < 0.01


def test_plan_warm_starts_from_the_previous_mean_shifted_by_a_step():
    config = TDMPCConfig(horizon=3, cem_iterations=1, n_gaussian_samples=8, n_pi_samples=0, n_elites=8,
                         gaussian_mean_momentum=1.0, uncertainty_regularizer_coeff=0.0)
    prev = torch.arange(6.0).view(3, 1, 2)
    _, mean = planning.plan(QuadraticWorld(goal=[0.0, 0.0]), config, torch.zeros(1, 2), 2, prev)
    # momentum 1 keeps the initial mean: the previous one moved a step earlier, zeros at the end
    assert torch.equal(mean, torch.tensor([[[2.0, 3.0]], [[4.0, 5.0]], [[0.0, 0.0]]]))


# ----------------------------------------------------------------------------- acting
def test_select_action_repeats_each_plan_and_unnormalises():
    features = make_features()
    policy = make_policy(features, n_action_repeats=3).eval()
    plans = []
    original = policy.predict_action_chunk
    policy.predict_action_chunk = lambda obs: plans.append(1) or original(obs)
    obs = observations(make_batch(features, batch_size=2))
    actions = [policy.select_action(obs) for _ in range(7)]
    assert len(plans) == 3 and all(a.shape == (2, 2) for a in actions)
    assert torch.equal(actions[0], actions[1]) and torch.equal(actions[1], actions[2])
    planned, taken = policy.action_plan()  # the third plan's first action, repeated 3 times
    assert planned.shape == (2, 3, 2) and taken == 1 and (planned == actions[6][:, None]).all()
    low, high = torch.tensor(ACTION_MIN, dtype=torch.float32), torch.tensor(ACTION_MAX, dtype=torch.float32)
    assert all(((a >= low - 1e-5) & (a <= high + 1e-5)).all() for a in actions)  # in the dataset's units
    assert policy._prev_mean is not None
    policy.reset()
    assert policy._prev_mean is None and not policy._action_queue
    policy.select_action(obs)
    assert len(plans) == 4  # a new episode plans afresh


def test_under_autocast_the_planner_keeps_its_distribution_in_float32():
    """Evaluation with use_amp runs the model in bf16; the CEM mean carried to the next plan stays float32 (as
    LeRobot's planner keeps it), and the actions come out in float32."""
    features = make_features()
    policy = make_policy(features).eval()
    obs = observations(make_batch(features, batch_size=2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        action = policy.select_action(obs)
    assert policy._prev_mean.dtype == torch.float32 and action.dtype == torch.float32


def test_n_action_steps_executes_the_plan_in_order():
    features = make_features()
    policy = make_policy(features, n_action_repeats=1, n_action_steps=3).eval()
    obs = observations(make_batch(features, batch_size=2))
    torch.manual_seed(3)
    chunk = policy.predict_action_chunk(policy.normalizer.normalize(obs))
    assert chunk.shape == (3, 2, 2)  # (horizon, B, A)
    policy.reset()
    torch.manual_seed(3)
    actions = [policy.select_action(obs) for _ in range(3)]
    assert torch.allclose(torch.stack(actions), chunk, atol=1e-6)


def test_without_mpc_the_action_is_pis():
    features = make_features()
    policy = make_policy(features, use_mpc=False, n_action_repeats=1).eval()
    obs = observations(make_batch(features, batch_size=2))
    z = policy.model.encode(policy._observations(policy.normalizer.normalize(obs)))
    expected = policy.normalizer.unnormalize({"action": torch.tanh(policy.model._pi(z))})["action"]
    assert torch.allclose(policy.select_action(obs), expected, atol=1e-6)
    with pytest.raises(KeyError, match="select_action needs observations"):
        policy.select_action({"observation.state": obs["observation.state"]})


def test_compose_and_instantiate(compose):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose(["policy=tdmpc", "env=xarm", "dataset=xarm_lift", "policy.mlp_dim=16", "policy.latent_dim=8"])
    assert OmegaConf.select(cfg, "policy._target_") == "models.tdmpc.modeling.TDMPCPolicy"
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 3e-4
    assert list(cfg.optimizer.betas) == [0.9, 0.999] and cfg.optimizer.grad_clip_norm == 10.0
    assert cfg.optimizer.weight_decay == 0.0 and cfg.scheduler.name == "constant"
    features = make_features(image=(3, 84, 84), state_dim=4, action_dim=4)
    policy = instantiate(cfg.policy, features=features, stats=None, _convert_="all")
    assert isinstance(policy, TDMPCPolicy) and policy.config.mlp_dim == 16
    assert policy.config.input_features == {"observation.image": {"type": "VISUAL", "shape": [3, 84, 84]},
                                            "observation.state": {"type": "STATE", "shape": [4]}}
