"""`dataset.image_transforms` from the command line to torchvision: LeRobot's default set is in the
config, per-key overrides reach it, and the subset size and types are the ones named."""

from __future__ import annotations

import pytest
from torchvision.transforms import v2

from config.errors import ConfigError
from data.transforms import SharpnessJitter, build_image_transforms


def test_the_default_set_is_lerobots_and_is_in_the_config(compose):
    cfg = compose(["dataset.image_transforms.enable=true"]).dataset.image_transforms
    assert list(cfg.tfs) == ["brightness", "contrast", "saturation", "hue", "sharpness"]
    assert list(cfg.tfs.saturation.kwargs.saturation) == [0.5, 1.5]
    built = build_image_transforms(cfg)
    assert built.n_subset == 3 and len(built.transforms) == 5
    assert [type(t) for t in built.transforms] == [v2.ColorJitter] * 4 + [SharpnessJitter]


def test_overrides_reach_single_transforms_and_the_subset_size(compose):
    cfg = compose(["dataset.image_transforms.enable=true", "dataset.image_transforms.max_num_transforms=2",
                   "dataset.image_transforms.tfs.hue.weight=0",  # weight 0 drops it
                   "dataset.image_transforms.tfs.brightness.kwargs.brightness=[0.5,1.5]",
                   "+dataset.image_transforms.tfs.affine={type: RandomAffine, kwargs: {degrees: 5}}"]
                  ).dataset.image_transforms
    built = build_image_transforms(cfg)
    assert built.n_subset == 2
    types = [type(t) for t in built.transforms]
    assert types == [v2.ColorJitter] * 3 + [SharpnessJitter, v2.RandomAffine]
    assert built.transforms[0].brightness == (0.5, 1.5)
    assert built.weights.tolist() == pytest.approx([0.2] * 5)


def test_a_transform_type_torchvision_lacks_is_a_config_error(compose):
    cfg = compose(["dataset.image_transforms.enable=true",
                   "+dataset.image_transforms.tfs.bad={type: NoSuchTransform}"]).dataset.image_transforms
    with pytest.raises(ConfigError, match="'NoSuchTransform' is not a torchvision.transforms.v2 class"):
        build_image_transforms(cfg)


def test_an_entry_without_a_type_is_a_config_error(compose):
    cfg = compose(["dataset.image_transforms.enable=true",
                   "+dataset.image_transforms.tfs.bad={weight: 2.0, kwrgs: {}}"]).dataset.image_transforms
    with pytest.raises(ConfigError, match=r"tfs.bad=.* must be \{type: .*unknown keys \['kwrgs'\]"):
        build_image_transforms(cfg)
