"""PushT's faster pixel readout (envs/pusht_pixels.py) gives gym-pusht's observations bit for bit."""

import cv2
import gymnasium as gym
import numpy as np
import pygame
import pytest

from envs.configs import PushtEnvConfig
from envs.factory import import_env_package, make_env, make_gym_env
from envs.pusht_pixels import UPSTREAM_ENTRY_POINT, PushTEnv, surface_rgb_resized

ID = "gym_pusht/PushT-v0"
KWARGS = {"obs_type": "pixels_agent_pos", "render_mode": "rgb_array", "disable_env_checker": True}


@pytest.fixture(scope="module", autouse=True)
def _registered():
    import_env_package("pusht")


def upstream_resize(surface: pygame.Surface, width: int, height: int) -> np.ndarray:
    """gym-pusht 0.1.8's readout, written out: the column-major pixel view, transposed, resized."""
    return cv2.resize(np.transpose(np.array(pygame.surfarray.pixels3d(surface)), (1, 0, 2)), (width, height))


def test_observations_rewards_and_frames_equal_gym_pushts_over_seeded_rollouts():
    ours, theirs = make_gym_env(ID, **KWARGS), gym.make(ID, **KWARGS)
    assert type(ours.unwrapped) is PushTEnv and type(theirs.unwrapped) is not PushTEnv
    rng = np.random.default_rng(0)
    for seed in range(3):
        a, _ = ours.reset(seed=seed)
        b, _ = theirs.reset(seed=seed)
        for step in range(60):
            assert a["pixels"].dtype == b["pixels"].dtype == np.uint8
            assert a["pixels"].flags.c_contiguous
            np.testing.assert_array_equal(a["pixels"], b["pixels"])
            np.testing.assert_array_equal(a["agent_pos"], b["agent_pos"])
            action = rng.uniform(50, 460, size=2)
            a, reward_a, term_a, _, _ = ours.step(action)
            b, reward_b, term_b, _, _ = theirs.step(action)
            # two gym-pusht envs of the same state can differ by an ulp in coverage (shapely's area)
            assert reward_a == pytest.approx(reward_b, rel=1e-12, abs=1e-15) and term_a == term_b
        np.testing.assert_array_equal(ours.render(), theirs.render())  # video frames, action marker included
    assert gym.spec(ID).entry_point == UPSTREAM_ENTRY_POINT, "the global registry must stay gym-pusht's"


@pytest.mark.parametrize("masks", [(0xFF0000, 0xFF00, 0xFF, 0), (0xFF, 0xFF00, 0xFF0000, 0),
                                   (0xFF00, 0xFF0000, 0xFF000000, 0xFF)])
@pytest.mark.parametrize("size", [(96, 96), (84, 64), (640, 480)])
def test_any_byte_aligned_32_bit_layout_resizes_like_the_pixel_view(masks, size):
    surface = pygame.Surface((512, 384), 0, 32, masks)
    noise = np.random.default_rng(1).integers(0, 256, (512, 384, 3), dtype=np.uint8)
    pygame.surfarray.blit_array(surface, noise)
    np.testing.assert_array_equal(surface_rgb_resized(surface, *size), upstream_resize(surface, *size))


def test_other_pixel_layouts_fall_back_to_gym_pushts_readout():
    surface = pygame.Surface((64, 64), 0, 24)
    assert surface_rgb_resized(surface, 32, 32) is None
    env = make_gym_env(ID, **KWARGS)
    env.reset(seed=0)
    np.testing.assert_array_equal(env.unwrapped._get_img(surface, 32, 32), upstream_resize(surface, 32, 32))


def test_vector_envs_build_the_faster_class():
    env = make_env(PushtEnvConfig(), n_envs=1)
    try:
        assert type(env.envs[0].unwrapped) is PushTEnv
    finally:
        env.close()
