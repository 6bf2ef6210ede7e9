"""ResNet keypoint encoder: crops, GroupNorm swap, spatial softmax, offline pretrained weights."""

import pytest
import torch
import torchvision
from torch import nn

from models.common.vision import ResNetImageEncoder, SpatialSoftmax, center_crop, random_crop


def test_spatial_softmax_finds_the_peak():
    features = torch.full((1, 1, 5, 5), -50.0)
    features[0, 0, 0, 4] = 50.0  # top-right corner: x=+1, y=-1
    keypoints = SpatialSoftmax((1, 5, 5))(features)
    torch.testing.assert_close(keypoints, torch.tensor([[[1.0, -1.0]]]), atol=1e-4, rtol=0)


def test_random_crop_differs_per_image_and_center_crop_is_centred():
    images = torch.arange(10 * 12, dtype=torch.float32).view(1, 1, 10, 12).expand(64, 3, 10, 12).contiguous()
    crops = random_crop(images, (4, 5))
    assert crops.shape == (64, 3, 4, 5)
    assert len({c[0, 0, 0].item() for c in crops}) > 1
    for crop in crops[:5]:
        top, left = divmod(int(crop[0, 0, 0].item()), 12)
        torch.testing.assert_close(crop, images[0, :, top : top + 4, left : left + 5])
    torch.testing.assert_close(center_crop(images, (4, 6))[0], images[0, :, 3:7, 3:9])


def test_encoder_groupnorm_crop_and_train_eval():
    torch.manual_seed(0)
    encoder = ResNetImageEncoder((3, 48, 48), spatial_softmax_num_keypoints=8, crop_shape=(40, 40))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in encoder.modules())
    images = torch.rand(4, 3, 48, 48)
    assert encoder(images).shape == (4, encoder.feature_dim) == (4, 16)
    encoder.eval()
    torch.testing.assert_close(encoder(images), encoder(images))


def test_encoder_rejects_crop_larger_than_image():
    with pytest.raises(ValueError, match="policy.crop_shape"):
        ResNetImageEncoder((3, 48, 48), crop_shape=(50, 40))


def test_encoder_rejects_inputs_too_small_for_keypoints():
    with pytest.raises(ValueError, match="1x1 feature map"):
        ResNetImageEncoder((3, 32, 32), crop_shape=(28, 28))


def test_pretrained_weights_from_local_file_only(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    encoder = ResNetImageEncoder(
        (3, 48, 48), pretrained_backbone_weights=str(path), use_group_norm=False, spatial_softmax_num_keypoints=4
    )
    torch.testing.assert_close(encoder.backbone[0].weight, reference.conv1.weight)

    with pytest.raises(FileNotFoundError, match="neither a file nor a torchvision weights name"):
        ResNetImageEncoder((3, 48, 48), pretrained_backbone_weights=str(tmp_path / "nope.pt"), use_group_norm=False)


def test_pretrained_weights_name_without_cache_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not in torchvision's cache"):
        ResNetImageEncoder(
            (3, 48, 48), pretrained_backbone_weights="ResNet18_Weights.IMAGENET1K_V1", use_group_norm=False
        )
