"""Reading policy features without importing `data.features` or torch.

Hydra's `instantiate` turns the `PolicyFeature` dataclasses it is given into DictConfigs (and
`FeatureType` members may arrive as enums or plain strings), so policies read features through
these helpers instead of relying on the exact class.
"""

from typing import Any, Mapping


def feature_type_name(feature_type: Any) -> str:
    """`FeatureType.VISUAL`, `"VISUAL"` -> `"VISUAL"` (Enum str() differs across Python versions)."""
    return str(getattr(feature_type, "value", feature_type))


def normalization_names(mapping: Mapping[Any, Any]) -> dict[str, str]:
    """A config's `normalization_mapping` as plain names (`{FeatureType.STATE: NormalizationMode.MEAN_STD}`
    or the same as strings -> `{"STATE": "MEAN_STD"}`), as every policy config keeps it."""
    return {str(k): feature_type_name(v) for k, v in dict(mapping).items()}


def feature_type_and_shape(feature: Any) -> tuple[str, tuple[int, ...]]:
    """Reads a PolicyFeature, or the DictConfig/dict made of one, as (type name, shape)."""
    if isinstance(feature, Mapping):
        ftype, shape = feature["type"], feature["shape"]
    else:
        ftype, shape = feature.type, feature.shape
    return feature_type_name(ftype), tuple(int(s) for s in shape)
