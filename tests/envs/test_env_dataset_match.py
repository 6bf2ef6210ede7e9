"""A policy is evaluated in an env that feeds it what its dataset held: refused at build time otherwise."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from data.features import FeatureType, PolicyFeature
from pipelines.robot import check_env_matches_dataset

PUSHT = {"observation.image": PolicyFeature(FeatureType.VISUAL, (3, 96, 96)),
         "observation.state": PolicyFeature(FeatureType.STATE, (2,)),
         "action": PolicyFeature(FeatureType.ACTION, (2,))}


def test_the_recorded_pairs_match(compose):
    check_env_matches_dataset(compose(["env=pusht"]).env, PUSHT, 10)
    check_env_matches_dataset(compose(["env=pusht"]).env, PUSHT, None)  # built from a checkpoint: fps unknown
    xarm = {"observation.image": PolicyFeature(FeatureType.VISUAL, (3, 84, 84)),
            "observation.state": PolicyFeature(FeatureType.STATE, (4,)),
            "action": PolicyFeature(FeatureType.ACTION, (4,))}
    check_env_matches_dataset(compose(["env=xarm", "dataset=xarm_lift"]).env, xarm, 15)


def test_another_envs_dataset_is_refused_naming_the_shapes(compose):
    xarm_env = compose(["env=xarm", "dataset=xarm_lift"]).env
    with pytest.raises(ConfigError, match=r"env=xarm gives '.*' of shape \[3, 84, 84\] but the dataset's "
                                          r"'observation.image' is \[3, 96, 96\]"):
        check_env_matches_dataset(xarm_env, PUSHT, 15)


def test_a_wrong_action_size_or_fps_is_refused(compose):
    env = compose(["env=pusht"]).env
    with pytest.raises(ConfigError, match=r"'action' of shape \[2\] but the dataset's 'action' is \[7\]"):
        check_env_matches_dataset(env, {**PUSHT, "action": PolicyFeature(FeatureType.ACTION, (7,))}, 10)
    with pytest.raises(ConfigError, match="env.fps=10 but the dataset was recorded at 50 fps"):
        check_env_matches_dataset(env, PUSHT, 50)
    with pytest.raises(ConfigError, match="input 'observation.environment' .from the dataset. has no source"):
        check_env_matches_dataset(env, {**PUSHT, "observation.environment": PolicyFeature(FeatureType.ENV, (4,))}, 10)
