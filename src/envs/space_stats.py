"""A policy's features and normalisation stats from its env alone, for a pure online run (~dataset).

Without a dataset the env says what the policy sees (`env.features`, renamed by `features_map`) and its
spaces bound the values: a state or action in a Box [low, high] gets min/max from the bounds and the
mean/std of the uniform distribution on them; camera images get [0, 1] and ImageNet's mean/std (the
default `dataset.use_imagenet_stats`).
"""

from __future__ import annotations

import math
from collections.abc import Container

import numpy as np

from config.errors import ConfigError
from data.features import FeatureType, PolicyFeature
from envs.configs import as_env_config

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def dataset_key(env_cfg, env_key: str) -> str:
    """The dataset key an env key feeds (its action is `action` unless the map renames it)."""
    cfg = as_env_config(env_cfg)
    return cfg.features_map.get(env_key, "action" if cfg.features[env_key].type == "ACTION" else env_key)


def env_policy_features(env_cfg) -> dict[str, PolicyFeature]:
    """`{dataset key: PolicyFeature}` of what the env emits and takes; images `(C, H, W)`."""
    cfg = as_env_config(env_cfg)
    out = {}
    for env_key, ft in cfg.features.items():
        shape = tuple(ft.shape)
        if ft.type == "VISUAL":
            shape = (shape[2], shape[0], shape[1])
        out[dataset_key(cfg, env_key)] = PolicyFeature(FeatureType(ft.type), shape)
    return out


def env_space_stats(env_cfg, normalised: Container[str]) -> dict[str, dict[str, np.ndarray]]:
    """Normalisation stats of the env's features, from their spaces (the env is built once to read them);
    a feature whose type is in `normalised` (the policy's normalization_mapping) must have bounds."""
    from envs.factory import flatten_space, make_env

    cfg = as_env_config(env_cfg)
    env = make_env(cfg, 1)
    try:
        spaces = flatten_space(env.single_observation_space)
        action_space = env.single_action_space
    finally:
        env.close()
    stats = {}
    for env_key, ft in cfg.features.items():
        key = dataset_key(cfg, env_key)
        if ft.type == "VISUAL":
            stats[key] = {"min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1)),
                          "mean": np.asarray(IMAGENET_MEAN).reshape(3, 1, 1),
                          "std": np.asarray(IMAGENET_STD).reshape(3, 1, 1)}
            continue
        space = action_space if ft.type == "ACTION" else spaces[env_key]
        low, high = (np.array(np.broadcast_to(np.asarray(b, dtype=np.float64), space.shape))
                     for b in (space.low, space.high))
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            if ft.type not in normalised:
                continue
            raise ConfigError(f"env={cfg.type}'s {env_key!r} space is unbounded ({space}), so a run without a dataset "
                              "has no normalisation stats for it; train with a dataset (its stats), or set "
                              f"policy.normalization_mapping.{ft.type}=IDENTITY")
        stats[key] = {"min": low, "max": high, "mean": (low + high) / 2, "std": (high - low) / math.sqrt(12)}
    return stats
