"""machine.uint8_transport keeps the numbers: frames leave the loader as uint8 and, converted and augmented
on the device, are bit for bit the float frames the loader made before, so Diffusion Policy's and ACT's
first loss and gradients do not change (the online phase's mixed batches: tests/data/test_online_buffer.py)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from config.schemas import ImageTransformsConfig
from data.device_images import SAMPLE_SEED_KEY, to_float
from data.lerobot_dataset import LeRobotDataset
from data.transforms import build_image_transforms
from helpers import TINY_POLICY
from pipelines.robot import RobotPipeline

IMAGE = "observation.image"


def lerobot_transforms():
    """LeRobot's default set, three of them per frame in a drawn order: every frame draws several parameters."""
    return build_image_transforms(OmegaConf.structured(
        ImageTransformsConfig(enable=True, max_num_transforms=3, random_order=True)))


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", devices())
def test_every_uint8_value_becomes_the_loaders_float(device):
    values = torch.arange(256, dtype=torch.uint8)
    loader = values.to(torch.float32).div_(255)  # what the dataset computes in the worker
    got = to_float(values.view(4, 1, 8, 8).to(device)).cpu().flatten()
    assert got.dtype == torch.float32
    assert torch.equal(got.view(torch.int32), loader.view(torch.int32))  # the bits, not a tolerance


DIFFUSION = ["experiment=quickstart", *TINY_POLICY]
ACT = ["policy=act", "env=pusht", "policy.pretrained_backbone_weights=null", "policy.dim_model=32", "policy.n_heads=4",
       "policy.dim_feedforward=64", "policy.n_encoder_layers=1", "policy.n_decoder_layers=1",
       "policy.n_vae_encoder_layers=1", "policy.latent_dim=8", "policy.chunk_size=8", "policy.n_action_steps=4"]


def first_step(compose, root, transport: bool | None, augment: bool, policy: list[str]):
    """transport None: the default (null), which is float32 on the CPU."""
    chosen = [] if transport is None else [f"machine.uint8_transport={str(transport).lower()}"]
    cfg = compose([*policy, "logger=none", "machine.device_type=cpu", f"dataset.root={root}", "batch_size=4",
                   "num_workers=0", f"dataset.image_transforms.enable={str(augment).lower()}", *chosen])
    torch.manual_seed(0)
    pipeline = RobotPipeline(cfg, torch.device("cpu"))
    raw = next(iter(pipeline.batches))
    assert raw[IMAGE].dtype == (torch.uint8 if transport else torch.float32)
    assert (SAMPLE_SEED_KEY in raw) == bool(transport and augment)
    batch = pipeline.to_device(raw)
    assert SAMPLE_SEED_KEY not in batch
    model = pipeline.model.train()
    normalised = model.normalizer.normalize(batch)[IMAGE]
    torch.manual_seed(1)
    loss, _ = model(batch)
    loss.backward()
    return batch[IMAGE], normalised, loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("policy,augment", [(DIFFUSION, False), (DIFFUSION, True), (ACT, True)],
                         ids=["diffusion", "diffusion-augmented", "act-augmented"])
def test_a_policy_sees_the_same_images_and_loss_with_uint8_transport(compose, pusht_root, policy, augment):
    images, normalised, loss, grads = first_step(compose, pusht_root, None if augment else False, augment, policy)
    u_images, u_normalised, u_loss, u_grads = first_step(compose, pusht_root, True, augment, policy)
    assert u_images.dtype == torch.float32 and u_images.shape == images.shape
    torch.testing.assert_close(u_images, images, rtol=0, atol=0)
    torch.testing.assert_close(u_normalised, normalised, rtol=0, atol=0)
    torch.testing.assert_close(u_loss, loss, rtol=0, atol=0)
    assert len(u_grads) == len(grads) > 0
    for a, b in zip(u_grads, grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    if augment:  # the augmentations were applied, not dropped on the way
        plain, *_ = first_step(compose, pusht_root, True, False, policy)
        assert not torch.equal(u_images, plain)


def test_a_dataset_refuses_transforms_it_would_not_apply(pusht_root):
    with pytest.raises(ValueError, match="image_transforms after the conversion"):
        LeRobotDataset(pusht_root, image_transforms=lerobot_transforms(), uint8_images=True)


@pytest.mark.parametrize("choice,device,augment,expected", [
    (None, "cuda", False, True), (None, "cuda", True, False), (None, "cpu", False, False),
    (True, "cpu", True, True), (False, "cuda", False, False),
])
def test_the_default_is_on_for_cuda_without_augmentation(compose, choice, device, augment, expected):
    from pipelines.robot import uses_uint8_transport

    chosen = [] if choice is None else [f"machine.uint8_transport={str(choice).lower()}"]
    cfg = compose(["experiment=quickstart", f"dataset.image_transforms.enable={str(augment).lower()}", *chosen])
    assert uses_uint8_transport(cfg, torch.device(device)) is expected
