"""policy_features: which dataset keys a policy sees, and in which layout."""

from data.features import FeatureType, PolicyFeature, policy_features

PUSHT_FEATURES = {
    "observation.image": {"dtype": "video", "shape": [96, 96, 3], "names": ["height", "width", "channel"]},
    "observation.state": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
    "action": {"dtype": "float32", "shape": [2], "names": {"motors": ["x", "y"]}},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.done": {"dtype": "bool", "shape": [1], "names": None},
    "next.success": {"dtype": "bool", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def test_pusht_policy_features():
    assert policy_features(PUSHT_FEATURES) == {
        "observation.image": PolicyFeature(FeatureType.VISUAL, (3, 96, 96)),
        "observation.state": PolicyFeature(FeatureType.STATE, (2,)),
        "action": PolicyFeature(FeatureType.ACTION, (2,)),
    }


def test_images_env_state_and_channel_first_names():
    features = {
        "observation.images.top": {"dtype": "image", "shape": [48, 64, 3], "names": ["height", "width", "channel"]},
        "observation.images.wrist": {"dtype": "video", "shape": [3, 24, 32], "names": ["channels", "height", "width"]},
        "observation.environment_state": {"dtype": "float32", "shape": [16], "names": None},
    }
    out = policy_features(features)
    assert out["observation.images.top"] == PolicyFeature(FeatureType.VISUAL, (3, 48, 64))
    assert out["observation.images.wrist"] == PolicyFeature(FeatureType.VISUAL, (3, 24, 32))
    assert out["observation.environment_state"] == PolicyFeature(FeatureType.ENV, (16,))
    assert FeatureType.VISUAL == "VISUAL"
