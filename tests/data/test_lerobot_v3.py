"""LeRobotDataset v3.0: writer layout, round trip, equality with v2.1, shared-file episode edges,
malformed datasets (3 episodes of 10-15 frames, 32x32, as in test_lerobot_dataset.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from data import lerobot_v3
from data.lerobot_dataset import DatasetError, LeRobotDataset, LeRobotDatasetMetadata
from data.lerobot_writer import LeRobotDatasetWriter
from data.video import encode_video
from lerobot_synthetic import (
    FEATURES,
    FPS,
    LENGTHS,
    TASKS,
    as_uint8_hwc,
    assert_images_exact,
    episode_arrays,
    make_frames,
    one_line,
    write_dataset,
)

DELTAS = {"observation.image": [-0.1, 0.0], "observation.state": [-0.1, 0.0], "action": [-0.1, 0.0, 0.1, 0.2]}
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
DATA_FILE = "data/chunk-000/file-000.parquet"
VIDEO_FILE = "videos/observation.image/chunk-000/file-000.mp4"


def write(root: Path, version: str = "v3.0", **options) -> Path:
    return write_dataset(root, version, **options)


@pytest.fixture(scope="module")
def v3_root(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("v3") / "ds")


@pytest.fixture(scope="module")
def v21_root(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("v21") / "ds", version="v2.1")


@pytest.fixture
def v3_copy(v3_root, tmp_path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(v3_root, dst, ignore=shutil.ignore_patterns(".cache"))
    return dst


def assert_items_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


# ---------------------------------------------------------------- layout


def test_layout_is_lerobot_v30(v3_root):
    info = json.loads((v3_root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 500)
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["fps"]) == (3, sum(LENGTHS), 2, FPS)
    assert info["splits"] == {"train": "0:3"} and info["features"]["observation.image"]["info"]["video.fps"] == FPS
    for legacy in ("episodes.jsonl", "tasks.jsonl", "episodes_stats.jsonl"):
        assert not (v3_root / "meta" / legacy).exists()
    files = sorted(str(p.relative_to(v3_root)) for p in v3_root.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert files == sorted([DATA_FILE, VIDEO_FILE, EPISODES_FILE, "meta/info.json", "meta/stats.json",
                            "meta/tasks.parquet"])

    episodes = pq.read_table(v3_root / EPISODES_FILE).to_pylist()
    ends = np.cumsum(LENGTHS).tolist()
    for ep, row in enumerate(episodes):
        start = ends[ep] - LENGTHS[ep]
        assert (row["episode_index"], row["tasks"], row["length"]) == (ep, [TASKS[ep]], LENGTHS[ep])
        assert (row["data/chunk_index"], row["data/file_index"]) == (0, 0)
        assert (row["dataset_from_index"], row["dataset_to_index"]) == (start, ends[ep])
        assert row["videos/observation.image/from_timestamp"] == pytest.approx(start / FPS)
        assert row["videos/observation.image/to_timestamp"] == pytest.approx(ends[ep] / FPS)
        assert row["stats/observation.state/count"] == [LENGTHS[ep]]
        np.testing.assert_allclose(row["stats/action/mean"], episode_arrays(ep)["action"].mean(0), rtol=1e-6)
        assert np.asarray(row["stats/observation.image/mean"]).shape == (3, 1, 1)
    data = pq.read_table(v3_root / DATA_FILE)
    assert data.column("index").to_pylist() == list(range(sum(LENGTHS)))
    assert data.column("frame_index").to_pylist()[LENGTHS[0]] == 0  # timestamps restart per episode


def test_tasks_parquet_reads_like_lerobots_pandas_table(v3_root):
    pd = pytest.importorskip("pandas")
    tasks = pd.read_parquet(v3_root / "meta/tasks.parquet")
    assert tasks.index.name == "task" and list(tasks.index) == ["push the T", "push it harder"]
    assert tasks.loc["push it harder"].task_index == 1
    assert LeRobotDatasetMetadata(v3_root).tasks == {0: "push the T", 1: "push it harder"}


# ---------------------------------------------------------------- reading


def test_round_trip_video(v3_root):
    ds = LeRobotDataset(v3_root)
    assert len(ds) == sum(LENGTHS) and ds.num_episodes == 3 and ds.meta.is_v3
    row = 0
    for ep, n in enumerate(LENGTHS):
        arrays = episode_arrays(ep)
        for i in range(n):
            item = ds[row]
            diff = np.abs(as_uint8_hwc(item["observation.image"]).astype(int) - arrays["observation.image"][i])
            assert diff.max() <= 2, (ep, i, diff.max())
            np.testing.assert_array_equal(item["observation.state"].numpy(), arrays["observation.state"][i])
            np.testing.assert_array_equal(item["action"].numpy(), arrays["action"][i])
            assert item["timestamp"].item() == pytest.approx(i / FPS)
            assert (item["frame_index"].item(), item["episode_index"].item(), item["index"].item()) == (i, ep, row)
            assert item["task"] == TASKS[ep]
            row += 1


def test_round_trip_image_in_parquet_is_exact(tmp_path):
    root = write(tmp_path / "img", use_videos=False)
    assert json.loads((root / "meta/info.json").read_text())["video_path"] is None
    assert not (root / "videos").exists()
    ds = LeRobotDataset(root)
    assert_images_exact(ds)


def test_v21_and_v30_give_identical_items(v21_root, v3_root):
    for kwargs in ({}, {"delta_timestamps": DELTAS}, {"episodes": [2, 0]}):
        a, b = LeRobotDataset(v21_root, **kwargs), LeRobotDataset(v3_root, **kwargs)
        assert len(a) == len(b) and a.episode_lengths == b.episode_lengths
        for idx in range(len(a)):
            assert_items_equal(a[idx], b[idx])
    meta_a, meta_b = LeRobotDatasetMetadata(v21_root), LeRobotDatasetMetadata(v3_root)
    assert meta_a.episodes_stats.keys() == meta_b.episodes_stats.keys()
    for key, stats in meta_a.stats.items():
        for stat, value in stats.items():
            np.testing.assert_allclose(meta_b.stats[key][stat], value, rtol=1e-12)
            np.testing.assert_allclose(meta_b.episodes_stats[1][key][stat], meta_a.episodes_stats[1][key][stat])


def test_delta_timestamps_pad_at_boundaries_of_episodes_sharing_a_file(v3_root):
    ds = LeRobotDataset(v3_root, delta_timestamps=DELTAS)
    start = LENGTHS[0]
    arrays = episode_arrays(1)
    item = ds[start]  # first frame of episode 1, right after episode 0's last in the same parquet and mp4
    assert item["observation.state_is_pad"].tolist() == [True, False]
    assert item["action_is_pad"].tolist() == [True, False, False, False]
    np.testing.assert_array_equal(item["observation.state"][0].numpy(), arrays["observation.state"][0])
    torch.testing.assert_close(item["observation.image"][0], item["observation.image"][1])
    assert np.abs(as_uint8_hwc(item["observation.image"][0]).astype(int) - make_frames(1, 1)[0]).max() <= 2

    item = ds[start - 1]  # last frame of episode 0: its future is episode 1's frames, which must not leak in
    assert item["action_is_pad"].tolist() == [False, False, True, True]
    np.testing.assert_array_equal(item["action"].numpy(), episode_arrays(0)["action"][[-2, -1, -1, -1]])


def test_episodes_spread_over_chunks_and_files(tmp_path, v21_root):
    """Tiny size limits: each episode its own data file and mp4, two files per chunk."""
    root = write(tmp_path / "split", chunks_size=2, data_files_size_in_mb=1e-4, video_files_size_in_mb=1e-4)
    for kind in ("data", "videos/observation.image"):
        files = sorted(str(p.relative_to(root / kind)) for p in (root / kind).rglob("file-*.*"))
        suffix = ".parquet" if kind == "data" else ".mp4"
        assert files == [f"chunk-000/file-000{suffix}", f"chunk-000/file-001{suffix}", f"chunk-001/file-000{suffix}"]
    rows = pq.read_table(root / EPISODES_FILE).to_pylist()
    assert [(r["data/chunk_index"], r["data/file_index"]) for r in rows] == [(0, 0), (0, 1), (1, 0)]
    assert [r["videos/observation.image/from_timestamp"] for r in rows] == [0.0, 0.0, 0.0]
    a, b = LeRobotDataset(v21_root, delta_timestamps=DELTAS), LeRobotDataset(root, delta_timestamps=DELTAS)
    for idx in range(len(a)):
        assert_items_equal(a[idx], b[idx])
    caches = sorted(p.name.split("-")[:3] for p in (root / ".cache/decoded/observation.image").glob("*.frames.npy"))
    assert len(caches) == 3  # chunk-000/file-000 and chunk-001/file-000 keep separate caches


def test_decoded_cache_shared_by_the_episodes_of_a_file(v3_copy):
    LeRobotDataset(v3_copy)
    assert len(list((v3_copy / ".cache/decoded/observation.image").glob("*.frames.npy"))) == 1


def test_writer_abort_and_bad_version(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "rec", FPS, FEATURES, codebase_version="v3.0")
    arrays = episode_arrays(0)
    for i in range(3):
        writer.add_frame({k: v[i] for k, v in arrays.items()})
    writer.save_episode("t")
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="v2.0"):
        LeRobotDatasetWriter(tmp_path / "rec", FPS, FEATURES, codebase_version="v2.0")


# ---------------------------------------------------------------- malformed v3.0


def test_error_episodes_parquet_missing(v3_copy):
    shutil.rmtree(v3_copy / "meta/episodes")
    with pytest.raises(DatasetError) as err:
        LeRobotDatasetMetadata(v3_copy)
    msg = one_line(err)
    assert str(v3_copy / "meta/episodes") in msg and "no chunk-*/file-*.parquet" in msg


def test_error_episodes_parquet_missing_columns(v3_copy):
    path = v3_copy / EPISODES_FILE
    pq.write_table(pq.read_table(path).drop_columns(["dataset_to_index"]), path)
    with pytest.raises(DatasetError) as err:
        LeRobotDatasetMetadata(v3_copy)
    assert str(path) in one_line(err) and "dataset_to_index" in str(err.value)


def _edit_episode(root: Path, ep: int, **values) -> None:
    path = root / EPISODES_FILE
    table = pq.read_table(path)
    for column, value in values.items():
        data = table.column(column).to_pylist()
        data[ep] = value
        array = pa.array(data, table.schema.field(column).type)
        table = table.set_column(table.column_names.index(column), column, array)
    pq.write_table(table, path)


def test_error_frame_range_outside_the_data_file(v3_copy):
    total = sum(LENGTHS)
    _edit_episode(v3_copy, 2, dataset_from_index=total - LENGTHS[2] + 5, dataset_to_index=total + 5)
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(v3_copy)
    msg = one_line(err)
    assert str(v3_copy / DATA_FILE) in msg and f"frames {total - LENGTHS[2] + 5}..{total + 5}" in msg
    assert f"holds frames 0..{total}" in msg


def test_error_frame_range_of_another_episode(v3_copy):
    _edit_episode(v3_copy, 1, dataset_from_index=0, dataset_to_index=LENGTHS[1])
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(v3_copy)
    assert str(v3_copy / DATA_FILE) in one_line(err) and "episode 1" in str(err.value)


def test_error_video_shorter_than_to_timestamp(v3_copy):
    video = v3_copy / VIDEO_FILE
    frames = np.concatenate([make_frames(ep, n) for ep, n in enumerate(LENGTHS)])
    encode_video(frames[:-4], video, FPS)
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(v3_copy)
    msg = one_line(err)
    assert str(video) in msg and "episode 2" in msg and f"to_timestamp {sum(LENGTHS) / FPS:.6f}" in msg
    assert len(LeRobotDataset(v3_copy, episodes=[0, 1])) == LENGTHS[0] + LENGTHS[1]


def test_error_tasks_parquet_missing(v3_copy):
    (v3_copy / "meta/tasks.parquet").unlink()
    with pytest.raises(DatasetError) as err:
        LeRobotDatasetMetadata(v3_copy)
    assert str(v3_copy / "meta/tasks.parquet") in one_line(err)


def test_error_data_file_missing(v3_copy):
    (v3_copy / DATA_FILE).unlink()
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(v3_copy)
    assert str(v3_copy / DATA_FILE) in one_line(err) and "meta/episodes/" in str(err.value)


def test_reads_unnamed_pandas_task_index(v3_copy):
    """LeRobot's own writer stores the task strings as an unnamed pandas index."""
    path = v3_copy / lerobot_v3.TASKS_PATH
    table = pq.read_table(path)
    pq.write_table(table.rename_columns(["task_index", "__index_level_0__"]).replace_schema_metadata(None), path)
    assert LeRobotDatasetMetadata(v3_copy).tasks == {0: "push the T", 1: "push it harder"}
