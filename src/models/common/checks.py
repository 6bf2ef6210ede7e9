"""Config checks that every policy with a normalisation map and a ResNet image encoder shares; each
raises ValueError with one line naming the option and the fix."""

from typing import Mapping, Optional

FEATURE_TYPES = ("VISUAL", "STATE", "ENV", "ACTION")
NORMALIZATION_MODES = ("MEAN_STD", "MIN_MAX", "IDENTITY")


def check_normalization_mapping(mapping: Mapping[str, str]) -> None:
    for ftype, mode in mapping.items():
        if ftype not in FEATURE_TYPES:
            raise ValueError(
                f"policy.normalization_mapping has unknown feature type {ftype}; use keys among {list(FEATURE_TYPES)}"
            )
        if mode not in NORMALIZATION_MODES:
            raise ValueError(
                f"policy.normalization_mapping.{ftype}={mode} is unknown; use one of {list(NORMALIZATION_MODES)}"
            )


def check_chunk(n_action_steps: int, chunk_size: int) -> None:
    """A policy that predicts `chunk_size` actions per call executes at most that many of them."""
    if n_action_steps > chunk_size:
        raise ValueError(
            f"policy.n_action_steps={n_action_steps} exceeds policy.chunk_size={chunk_size}, the"
            " actions predicted per call; lower policy.n_action_steps or raise policy.chunk_size"
        )


def check_vision_options(vision_backbone: str, pretrained_backbone_weights: Optional[str], use_group_norm: bool) -> None:
    if not vision_backbone.startswith("resnet"):
        raise ValueError(f"policy.vision_backbone={vision_backbone} is not a torchvision ResNet; use e.g. resnet18")
    if pretrained_backbone_weights and use_group_norm:
        raise ValueError(
            f"policy.pretrained_backbone_weights={pretrained_backbone_weights} with policy.use_group_norm=true"
            " would replace the pretrained BatchNorm layers and ruin the weights; set policy.use_group_norm=false"
        )


def check_images(images: Mapping[str, tuple[int, ...]], crop_shape: Optional[tuple[int, int]]) -> None:
    """Every camera is (C, H, W) and holds the crop."""
    for key, shape in images.items():
        if len(shape) != 3:
            raise ValueError(f"image feature {key} has shape {list(shape)}; expected [C, H, W]")
        if crop_shape is not None and (crop_shape[0] > shape[1] or crop_shape[1] > shape[2]):
            raise ValueError(
                f"policy.crop_shape={list(crop_shape)} does not fit in {key} of shape {list(shape)};"
                f" set policy.crop_shape to at most [{shape[1]}, {shape[2]}] or null"
            )
