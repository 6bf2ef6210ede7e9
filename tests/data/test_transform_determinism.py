"""Image augmentations are a function of (seed, epoch, index): reproducible across dataset
instances, worker counts and resumes, and still different from item to item."""

from __future__ import annotations

from itertools import islice

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from config.schemas import ImageTransformsConfig
from data.lerobot_dataset import LeRobotDataset
from data.transforms import SeededItems, build_image_transforms, sample_seed
from training.data_position import BatchStream

WINDOW = {"observation.image": [-0.1, 0.0], "action": [0.0, 0.1, 0.2]}
BATCH = 4


def transforms():
    # LeRobot's default set; random_order keeps the order of the weighted draw, so both the subset
    # and its order come from the seeded generator.
    return build_image_transforms(OmegaConf.structured(
        ImageTransformsConfig(enable=True, max_num_transforms=3, random_order=True)))


@pytest.fixture(scope="module")
def dataset(pusht_root):
    return LeRobotDataset(pusht_root, delta_timestamps=WINDOW, image_transforms=transforms())


def take(stream: BatchStream, n: int) -> list[torch.Tensor]:
    return [b["observation.image"].clone() for b in islice(iter(stream), n)]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_same_seed_same_item_across_instances(pusht_root, dataset):
    other = LeRobotDataset(pusht_root, delta_timestamps=WINDOW, image_transforms=transforms())
    plain = LeRobotDataset(pusht_root, delta_timestamps=WINDOW)
    for index in (0, 5, 17):
        a = SeededItems(dataset, seed=3)[(1, index)]["observation.image"]
        b = SeededItems(other, seed=3)[(1, index)]["observation.image"]
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not torch.equal(a, plain[index]["observation.image"])
        assert not torch.equal(a, SeededItems(dataset, seed=4)[(1, index)]["observation.image"])
        assert not torch.equal(a, SeededItems(dataset, seed=3)[(2, index)]["observation.image"])


def test_loading_leaves_the_global_generator_alone(dataset):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    SeededItems(dataset, seed=0)[(0, 3)]
    assert torch.equal(torch.get_rng_state(), before)


class _Constant(Dataset):
    """One fixed image, augmented: any difference between items is the augmentation's doing."""

    def __init__(self):
        self.tf = transforms()
        yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
        self.image = torch.stack([xx, yy, 0.5 * (xx + yy)])

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.tf(self.image)


def test_augmentation_varies_across_indices_and_epochs():
    items = SeededItems(_Constant(), seed=0)
    outputs = [items[(epoch, index)] for epoch in range(2) for index in range(len(items))]
    distinct = {tuple(o.flatten()[::97].tolist()) for o in outputs}
    assert len(distinct) == len(outputs)
    means = torch.stack([o.mean() for o in outputs])
    assert means.std() > 0.01
    assert len({sample_seed(0, e, i) for e in range(100) for i in range(100)}) == 100 * 100


def test_workers_do_not_change_batches(dataset):
    single = take(BatchStream(dataset, BATCH, seed=0, num_workers=0), 3)
    assert_same(single, take(BatchStream(dataset, BATCH, seed=0, num_workers=2), 3))
    other_seed = take(BatchStream(dataset, BATCH, seed=1, num_workers=0), 1)
    assert not torch.equal(single[0], other_seed[0])


def test_resume_reproduces_augmented_batches(dataset):
    """Across an epoch boundary (5 batches per epoch), and resumed with another worker count."""
    indices = list(range(5 * BATCH))
    whole = take(BatchStream(dataset, BATCH, seed=0, indices=indices), 8)
    first = BatchStream(dataset, BATCH, seed=0, indices=indices)
    assert_same(take(first, 3), whole[:3])
    resumed = BatchStream(dataset, BATCH, seed=0, indices=indices, num_workers=2)
    resumed.load_state_dict(first.state_dict())
    assert_same(take(resumed, 5), whole[3:])
