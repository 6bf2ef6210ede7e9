"""Building a policy's config dataclass from the keywords `hydra.utils.instantiate` passes."""

import dataclasses
from typing import Any, Mapping

from models.common.feature_access import feature_type_and_shape


def build_policy_config(config_cls: type, policy: str, config_kwargs: Mapping[str, Any], features: Mapping[str, Any]):
    """`(config, {key: (type name, shape)})`: the config made from `config_kwargs` (its own checks run),
    then checked against the dataset's features; an unknown keyword is one line naming the options."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(config_kwargs) - known)
    if unknown:
        raise ValueError(
            f"policy.{unknown[0]} is not an option of the {policy} policy; remove it (options: {sorted(known)})"
        )
    config = config_cls(**config_kwargs)
    config.validate_features(features)
    return config, {key: feature_type_and_shape(ft) for key, ft in features.items()}
