"""Per-episode feature statistics and their aggregation, as LeRobot v2.1 computes them.

v2.1 stores stats per episode (`meta/episodes_stats.jsonl`) so that a subset or a merge of
datasets can be re-aggregated without touching the data; dataset-wide stats are the
count-weighted combination (parallel mean/variance), never a recomputation. Matching LeRobot's
numbers (image sampling included) keeps normalisation identical to policies trained there.

Shapes: a scalar feature gives `(1,)` per statistic, a vector `(D,)`, an image `(C, 1, 1)` in
[0, 1]; `count` is always `(1,)`.
"""

from __future__ import annotations

import numpy as np

STAT_KEYS = ("min", "max", "mean", "std", "count")


def estimate_num_samples(
    dataset_len: int, min_num_samples: int = 100, max_num_samples: int = 10_000, power: float = 0.75
) -> int:
    """How many images of an episode enter its stats (all of them below 100 frames)."""
    if dataset_len < min_num_samples:
        min_num_samples = dataset_len
    return max(min_num_samples, min(int(dataset_len**power), max_num_samples))


def sample_indices(data_len: int) -> list[int]:
    num_samples = estimate_num_samples(data_len)
    return np.round(np.linspace(0, data_len - 1, num_samples)).astype(int).tolist()


def auto_downsample_height_width(img: np.ndarray, target_size: int = 150, max_size_threshold: int = 300) -> np.ndarray:
    """Stride large `(C, H, W)` images down to about `target_size`: stats do not need every pixel."""
    _, height, width = img.shape
    if max(width, height) < max_size_threshold:
        return img
    factor = int(width / target_size) if width > height else int(height / target_size)
    return img[:, ::factor, ::factor]


def sample_images(images: np.ndarray, channels_last: bool = True) -> np.ndarray:
    """Pick the frames that enter an episode's image stats, as uint8 `(S, C, H', W')`."""
    picked = []
    for idx in sample_indices(len(images)):
        img = np.asarray(images[idx])
        if channels_last:
            img = img.transpose(2, 0, 1)
        picked.append(auto_downsample_height_width(img))
    return np.stack(picked)


def get_feature_stats(array: np.ndarray, axis: int | tuple[int, ...], keepdims: bool) -> dict[str, np.ndarray]:
    array = np.asarray(array, dtype=np.float64)
    return {
        "min": np.min(array, axis=axis, keepdims=keepdims),
        "max": np.max(array, axis=axis, keepdims=keepdims),
        "mean": np.mean(array, axis=axis, keepdims=keepdims),
        "std": np.std(array, axis=axis, keepdims=keepdims),
        "count": np.array([len(array)]),
    }


def compute_episode_stats(episode_data: dict[str, np.ndarray], features: dict) -> dict[str, dict[str, np.ndarray]]:
    """Stats of one episode; images are uint8 `(N, H, W, C)`, other features `(N,)` or `(N, ...)`.

    Values are computed in float64 (bools become 0/1), so every statistic is a float array.
    """
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key, data in episode_data.items():
        dtype = features[key]["dtype"]
        if dtype == "string":
            continue
        if dtype in ("image", "video"):
            ft_stats = get_feature_stats(sample_images(data), axis=(0, 2, 3), keepdims=True)
            stats[key] = {k: v if k == "count" else np.squeeze(v / 255.0, axis=0) for k, v in ft_stats.items()}
        else:
            data = np.asarray(data)
            stats[key] = get_feature_stats(data, axis=0, keepdims=data.ndim == 1)
    return stats


def aggregate_feature_stats(stats_ft_list: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combine one feature's stats over episodes: exact mean and std of the union of samples."""
    means = np.stack([s["mean"] for s in stats_ft_list])
    variances = np.stack([s["std"] ** 2 for s in stats_ft_list])
    counts = np.stack([s["count"] for s in stats_ft_list]).astype(np.float64)
    total_count = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, axis=-1)
    total_mean = (means * counts).sum(axis=0) / total_count
    total_variance = ((variances + (means - total_mean) ** 2) * counts).sum(axis=0) / total_count
    return {
        "min": np.min(np.stack([s["min"] for s in stats_ft_list]), axis=0),
        "max": np.max(np.stack([s["max"] for s in stats_ft_list]), axis=0),
        "mean": total_mean,
        "std": np.sqrt(total_variance),
        "count": total_count.astype(np.int64),
    }


def aggregate_stats(stats_list: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Aggregate per-episode stats; a feature missing from some episodes uses those that have it."""
    keys = sorted({key for stats in stats_list for key in stats})
    return {key: aggregate_feature_stats([s[key] for s in stats_list if key in s]) for key in keys}


def serialize_stats(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, list]]:
    return {key: {k: np.asarray(v).tolist() for k, v in ft.items()} for key, ft in stats.items()}


def stats_from_json(stats: dict[str, dict[str, list]]) -> dict[str, dict[str, np.ndarray]]:
    """Arrays from JSON lists; `count` stays integer, the rest become float64."""
    return {
        key: {k: np.asarray(v, dtype=np.int64 if k == "count" else np.float64) for k, v in ft.items()}
        for key, ft in stats.items()
    }
