"""Episode stats and their aggregation against numpy on the concatenated data."""

import numpy as np

from data.stats import aggregate_stats, compute_episode_stats, sample_indices, serialize_stats, stats_from_json

FEATURES = {
    "state": {"dtype": "float32", "shape": [3]},
    "reward": {"dtype": "float32", "shape": [1]},
    "done": {"dtype": "bool", "shape": [1]},
    "image": {"dtype": "video", "shape": [8, 6, 3]},
}


def episode(rng, n):
    return {
        "state": rng.normal(size=(n, 3)).astype(np.float32) * [1, 10, 100],
        "reward": rng.random(n).astype(np.float32),
        "done": np.arange(n) == n - 1,
        "image": rng.integers(0, 256, size=(n, 8, 6, 3), dtype=np.uint8),
    }


def test_episode_stats_shapes_and_values():
    rng = np.random.default_rng(0)
    ep = episode(rng, 20)
    stats = compute_episode_stats(ep, FEATURES)
    assert stats["state"]["mean"].shape == (3,) and stats["reward"]["mean"].shape == (1,)
    assert stats["image"]["mean"].shape == (3, 1, 1) and stats["image"]["count"].tolist() == [20]
    np.testing.assert_allclose(stats["state"]["std"], ep["state"].astype(np.float64).std(0), rtol=1e-12)
    np.testing.assert_allclose(stats["done"]["mean"], [1 / 20])
    np.testing.assert_allclose(stats["image"]["mean"][:, 0, 0], ep["image"].mean((0, 1, 2)) / 255, rtol=1e-12)
    assert 0 <= stats["image"]["min"].min() and stats["image"]["max"].max() <= 1


def test_aggregation_equals_stats_of_the_union():
    rng = np.random.default_rng(1)
    episodes = [episode(rng, n) for n in (5, 17, 40)]
    agg = aggregate_stats([compute_episode_stats(ep, FEATURES) for ep in episodes])
    for key in ("state", "reward"):
        full = np.concatenate([ep[key] for ep in episodes]).astype(np.float64)
        np.testing.assert_allclose(agg[key]["mean"], np.atleast_1d(full.mean(0)), rtol=1e-10)
        np.testing.assert_allclose(agg[key]["std"], np.atleast_1d(full.std(0)), rtol=1e-10)
        np.testing.assert_allclose(agg[key]["min"], np.atleast_1d(full.min(0)))
        np.testing.assert_allclose(agg[key]["max"], np.atleast_1d(full.max(0)))
    assert agg["state"]["count"].tolist() == [62]
    images = np.concatenate([ep["image"] for ep in episodes]).astype(np.float64) / 255
    np.testing.assert_allclose(agg["image"]["std"][:, 0, 0], images.std((0, 1, 2)), rtol=1e-10)


def test_long_episodes_sample_images_like_lerobot():
    assert sample_indices(50) == list(range(50))
    idx = sample_indices(1000)
    assert len(idx) == 177 and idx[0] == 0 and idx[-1] == 999


def test_json_round_trip():
    rng = np.random.default_rng(2)
    stats = aggregate_stats([compute_episode_stats(episode(rng, 9), FEATURES)])
    back = stats_from_json(serialize_stats(stats))
    for key in stats:
        for stat in stats[key]:
            np.testing.assert_array_equal(back[key][stat], stats[key][stat])
    assert back["image"]["count"].dtype == np.int64
