"""Dataset features (LeRobot `info.json` entries) and the subset of them a policy consumes.

A feature is `{"dtype": ..., "shape": [...], "names": ...}`; images and videos are stored
`[H, W, C]` on disk but handed to policies as `(C, H, W)`, which is why `policy_features` exists:
it is the one place where that transposition and the role of each key are decided.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

VISUAL_DTYPES = ("image", "video")

# Bookkeeping columns every LeRobot v2 episode parquet holds; the writer fills them itself.
DEFAULT_FEATURES: dict[str, dict] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


class FeatureType(str, enum.Enum):
    """Role of a feature for a policy; a str enum so it prints and serialises as its name."""

    VISUAL = "VISUAL"
    STATE = "STATE"
    ENV = "ENV"
    ACTION = "ACTION"


@dataclass(frozen=True)
class PolicyFeature:
    type: FeatureType
    shape: tuple[int, ...]


def is_visual(feature: dict) -> bool:
    return feature["dtype"] in VISUAL_DTYPES


def visual_chw_shape(key: str, feature: dict) -> tuple[int, int, int]:
    """`(C, H, W)` of an image/video feature.

    The contract stores `[H, W, C]`; a few ported datasets say `[C, H, W]` and name the axes so
    (names starting with "channel"), which is the only way to tell the two apart.
    """
    shape = tuple(int(d) for d in feature["shape"])
    if len(shape) != 3:
        raise ValueError(f"feature {key!r}: a {feature['dtype']} must have shape [H, W, C], got {list(shape)}")
    names = feature.get("names")
    if isinstance(names, list) and len(names) == 3 and names[0] in ("channel", "channels"):
        return shape  # type: ignore[return-value]
    h, w, c = shape
    return (c, h, w)


def policy_features(features: dict) -> dict[str, PolicyFeature]:
    """Map dataset features to what policies consume; bookkeeping and reward columns are dropped.

    Images/videos become `(C, H, W)` because that is the layout the dataset returns them in.
    """
    out: dict[str, PolicyFeature] = {}
    for key, ft in features.items():
        shape = tuple(int(d) for d in ft["shape"])
        if is_visual(ft):
            out[key] = PolicyFeature(FeatureType.VISUAL, visual_chw_shape(key, ft))
        elif key == "observation.environment_state":
            out[key] = PolicyFeature(FeatureType.ENV, shape)
        elif key == "observation.state":
            out[key] = PolicyFeature(FeatureType.STATE, shape)
        elif key == "action":
            out[key] = PolicyFeature(FeatureType.ACTION, shape)
    return out
