"""The scripted PushT expert: succeeds, stays in the action space, is repeatable and smooth."""

import gymnasium as gym
import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)
import numpy as np
import pytest

from envs.pusht_expert import PushTExpert

SEEDS = list(range(10))


def rollout(env, expert, seed, max_steps=300):
    env.reset(seed=seed)
    expert.reset()
    actions, success = [], False
    for _ in range(max_steps):
        action = expert.act(env.unwrapped)
        actions.append(action)
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            success = bool(info["is_success"])
            break
    return np.array(actions), success


@pytest.fixture(scope="module")
def env():
    env = gym.make("gym_pusht/PushT-v0", obs_type="state")
    yield env
    env.close()


@pytest.fixture(scope="module")
def rollouts(env):
    expert = PushTExpert()
    return {seed: rollout(env, expert, seed) for seed in SEEDS}


def test_expert_succeeds_on_most_seeds(rollouts):
    # The expert solved 50/50 of seeds 0..49 when written; 9/10 leaves room without hiding a regression.
    successes = sum(success for _, success in rollouts.values())
    assert successes >= 9, f"{successes}/{len(SEEDS)} episodes reached coverage > 0.95"


def test_actions_stay_in_action_space(env, rollouts):
    for actions, _ in rollouts.values():
        assert actions.dtype == np.float32 and actions.shape[1] == 2
        assert all(env.action_space.contains(a) for a in actions)


def test_commanded_position_never_jumps(rollouts):
    limit = PushTExpert().max_action_step
    for actions, _ in rollouts.values():
        steps = np.linalg.norm(np.diff(actions, axis=0), axis=1)
        assert steps.max() <= limit + 1e-3


def test_expert_is_deterministic_for_a_seed(env, rollouts):
    seed = SEEDS[3]
    again, _ = rollout(env, PushTExpert(), seed)
    np.testing.assert_array_equal(again, rollouts[seed][0])


def test_reset_clears_episode_state(env):
    expert = PushTExpert()
    first, _ = rollout(env, expert, 5)
    rollout(env, expert, 6)
    second, _ = rollout(env, expert, 5)
    np.testing.assert_array_equal(first, second)


def test_act_accepts_a_wrapped_env(env):
    env.reset(seed=1)
    expert = PushTExpert()
    wrapped = expert.act(env)
    expert.reset()
    unwrapped = expert.act(env.unwrapped)
    np.testing.assert_array_equal(wrapped, unwrapped)
