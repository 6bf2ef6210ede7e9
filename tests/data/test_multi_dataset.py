"""Several datasets as one (`dataset.repo_id` as a list): concatenation, common keys, dataset_index,
combined stats, fps mismatch, and the Hydra config path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from data.errors import DatasetError
from data.lerobot_dataset import LeRobotDataset
from data.lerobot_writer import LeRobotDatasetWriter
from data.multi_dataset import MultiLeRobotDataset, MultiLeRobotDatasetMetadata
from lerobot_synthetic import FEATURES, LENGTHS, episode_arrays, one_line, write_dataset

WITH_SUCCESS = {**FEATURES, "next.success": {"dtype": "bool", "shape": [1], "names": None}}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> list[Path]:
    """a: v2.1, episodes 0-2; b: v3.0, episodes 0-1 shifted by +5, with an extra key; c: v2.1 at 20 fps."""
    base = tmp_path_factory.mktemp("multi")
    a = write_dataset(base / "a")
    b = _write_with_extra(base / "b")
    c = write_dataset(base / "c", fps=20, episodes=[0])
    return [a, b, c]


def _write_with_extra(root: Path) -> Path:
    features = {**FEATURES, "observation.extra": {"dtype": "float32", "shape": [1], "names": None}}
    writer = LeRobotDatasetWriter(root, 10, features, codebase_version="v3.0")
    for ep in (0, 1):
        arrays = episode_arrays(ep, offset=5.0)
        for i in range(LENGTHS[ep]):
            writer.add_frame({**{k: arrays[k][i] for k in FEATURES}, "observation.extra": np.float32(i)})
        writer.save_episode("other task")
    return writer.finalize()


def raw(key: str, offsets_and_episodes) -> np.ndarray:
    return np.concatenate([episode_arrays(ep, off)[key] for off, eps in offsets_and_episodes for ep in eps])


def test_concatenation_index_and_dropped_keys(roots, caplog):
    a, b, _ = roots
    with caplog.at_level(logging.WARNING):
        ds = MultiLeRobotDataset([a, b], delta_timestamps={"action": [0.0, 0.1]})
    assert "observation.extra" in caplog.text
    assert ds.meta.dropped_keys == ["observation.extra"] and "observation.extra" not in ds.features
    single_a, single_b = LeRobotDataset(a), LeRobotDataset(b)
    assert len(ds) == len(single_a) + len(single_b) == sum(LENGTHS) + LENGTHS[0] + LENGTHS[1]
    assert ds.num_episodes == 5 and ds.episode_lengths == [*LENGTHS, LENGTHS[0], LENGTHS[1]]
    first_b = ds[len(single_a)]
    assert first_b["dataset_index"].item() == 1 and first_b["dataset_index"].dtype == torch.int64
    assert ds[len(single_a) - 1]["dataset_index"].item() == 0 and ds[-1]["dataset_index"].item() == 1
    assert "observation.extra" not in first_b and first_b["task"] == "other task"
    np.testing.assert_array_equal(first_b["observation.state"].numpy(), episode_arrays(0, 5.0)["observation.state"][0])
    assert first_b["action"].shape == (2, 2) and first_b["action_is_pad"].tolist() == [False, False]
    assert ds[len(single_a) - 1]["action_is_pad"].tolist() == [False, True]  # no reaching into the next dataset
    torch.testing.assert_close(first_b["observation.image"], single_b[0]["observation.image"])
    keys = set(first_b)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    for batch in loader:
        assert set(batch) == keys
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_stats_are_the_stats_of_the_concatenated_data(roots):
    a, b, _ = roots
    meta = MultiLeRobotDatasetMetadata([a, b])
    parts = [(0.0, range(3)), (5.0, range(2))]
    for key in ("observation.state", "action", "next.reward"):
        full = raw(key, parts).astype(np.float64).reshape(sum(LENGTHS) + LENGTHS[0] + LENGTHS[1], -1)
        s = meta.stats[key]
        np.testing.assert_allclose(s["mean"], full.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(s["std"], full.std(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(s["min"], full.min(0))
        np.testing.assert_allclose(s["max"], full.max(0))
        assert s["count"].tolist() == [len(full)]
    images = raw("observation.image", parts).astype(np.float64) / 255
    np.testing.assert_allclose(meta.stats["observation.image"]["mean"][:, 0, 0], images.mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(meta.stats["observation.image"]["std"][:, 0, 0], images.std((0, 1, 2)), rtol=1e-6)
    assert "observation.extra" not in meta.stats


def test_fps_mismatch_is_one_clear_error(roots):
    a, _, c = roots
    with pytest.raises(DatasetError) as err:
        MultiLeRobotDatasetMetadata([a, c])
    msg = one_line(err)
    assert "different fps" in msg and f"{a}: 10" in msg and f"{c}: 20" in msg


def test_shape_conflict_is_one_clear_error(tmp_path, roots):
    a = roots[0]
    features = {**FEATURES, "observation.state": {"dtype": "float32", "shape": [1], "names": None}}
    writer = LeRobotDatasetWriter(tmp_path / "d", 10, features)
    arrays = episode_arrays(0)
    for i in range(3):
        writer.add_frame({**{k: arrays[k][i] for k in FEATURES}, "observation.state": np.float32(i)})
    writer.save_episode("t")
    d = writer.finalize()
    with pytest.raises(DatasetError) as err:
        MultiLeRobotDatasetMetadata([a, d])
    assert "'observation.state'" in one_line(err) and str(d / "meta/info.json") in str(err.value)


# ---------------------------------------------------------------- through the Hydra config


def test_repo_id_list_composes_and_builds_the_pipeline(compose, roots, pusht_root, tmp_path, monkeypatch):
    from helpers import TINY_POLICY

    from data.demos import dataset_roots
    from pipelines.robot import RobotPipeline

    a, b, _ = roots
    base = ["experiment=quickstart", "logger=none", "machine.device_type=cpu", "num_workers=0", "batch_size=4",
            *TINY_POLICY]
    cfg = compose([*base, "dataset.repo_id=[a,b]", f"dataset.root=[{a},{b}]"])
    assert list(cfg.dataset.repo_id) == ["a", "b"] and dataset_roots(cfg.dataset) == [a, b]
    assert dataset_roots(compose([*base, "dataset.repo_id=[a,b]", f"dataset.root={a.parent}"]).dataset) == [a, b]
    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path))
    assert dataset_roots(compose([*base, "dataset.repo_id=[x/a,x/b]"]).dataset) == [
        tmp_path / "datasets/x/a", tmp_path / "datasets/x/b"]
    assert compose([*base, "dataset.repo_id=x/a"]).dataset.repo_id == "x/a"

    # the policy needs PushT-sized images: the recorded PushT dataset, listed twice
    cfg = compose([*base, "dataset.repo_id=[p1,p2]", f"dataset.root=[{pusht_root},{pusht_root}]"])
    pipeline = RobotPipeline(cfg, torch.device("cpu"))
    assert isinstance(pipeline.dataset, MultiLeRobotDataset)
    single = LeRobotDataset(pusht_root)
    assert len(pipeline.dataset) == 2 * len(single)
    assert pipeline.dataset[len(single)]["dataset_index"].item() == 1
    batch = next(iter(pipeline.batches))
    loss, _ = pipeline.loss(pipeline.model, pipeline.to_device(batch))
    assert torch.isfinite(loss)

    bad = compose([*base, "dataset.repo_id=[a,b]", f"dataset.root=[{a}]"])
    with pytest.raises(DatasetError, match="2 repo_ids"):
        RobotPipeline(bad, torch.device("cpu"))
    missing = compose([*base, "dataset.repo_id=[a,nowhere]", f"dataset.root={a.parent}"])
    with pytest.raises(DatasetError, match=f"no LeRobotDataset at {a.parent / 'nowhere'}"):
        RobotPipeline(missing, torch.device("cpu"))
