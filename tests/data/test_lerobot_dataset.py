"""LeRobotDataset v2.1 writer and reader on tiny datasets (3 episodes of 10-15 frames, 32x32)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import data.lerobot_dataset as lerobot_dataset
from data.lerobot_dataset import DatasetError, LeRobotDataset, LeRobotDatasetMetadata
from data.lerobot_writer import LeRobotDatasetWriter
from data.video import encode_video
from lerobot_synthetic import (FEATURES, FPS, LENGTHS, SIZE, TASKS, as_uint8_hwc, assert_images_exact, episode_arrays,
                               make_frames, one_line, write_dataset)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("video") / "ds")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("image") / "ds", use_videos=False)


@pytest.fixture
def video_copy(video_root, tmp_path) -> Path:
    """A private copy to break; the decoded cache is left behind so each test starts cold."""
    dst = tmp_path / "ds"
    shutil.copytree(video_root, dst, ignore=shutil.ignore_patterns(".cache"))
    return dst


# ---------------------------------------------------------------- layout and round trip


def test_layout_and_meta_files_are_lerobot_v21(video_root):
    info = json.loads((video_root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1"
    assert info["robot_type"] == "pusht-test"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, sum(LENGTHS), 2)
    assert (info["total_videos"], info["total_chunks"], info["chunks_size"], info["fps"]) == (3, 1, 1000, FPS)
    assert info["splits"] == {"train": "0:3"}
    assert info["data_path"] == "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    assert info["video_path"] == "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    for key in ("episode_index", "frame_index", "index", "task_index"):
        assert info["features"][key] == {"dtype": "int64", "shape": [1], "names": None}
    assert info["features"]["timestamp"]["dtype"] == "float32"
    video = info["features"]["observation.image"]
    assert video["info"]["video.fps"] == FPS and video["info"]["video.height"] == SIZE
    episodes = [json.loads(line) for line in (video_root / "meta/episodes.jsonl").read_text().splitlines()]
    assert episodes == [{"episode_index": i, "tasks": [TASKS[i]], "length": LENGTHS[i]} for i in range(3)]
    tasks = [json.loads(line) for line in (video_root / "meta/tasks.jsonl").read_text().splitlines()]
    assert tasks == [{"task_index": 0, "task": "push the T"}, {"task_index": 1, "task": "push it harder"}]
    assert (video_root / "videos/chunk-000/observation.image/episode_000002.mp4").is_file()
    table = pq.read_table(video_root / "data/chunk-000/episode_000001.parquet")
    assert "observation.image" not in table.column_names
    assert table.num_rows == LENGTHS[1]
    assert not any(p.name.startswith(".ds.tmp-") for p in video_root.parent.iterdir())


def test_round_trip_video(video_root):
    ds = LeRobotDataset(video_root)
    assert len(ds) == sum(LENGTHS) and ds.num_episodes == 3
    row = 0
    for ep, n in enumerate(LENGTHS):
        arrays = episode_arrays(ep)
        for i in range(n):
            item = ds[row]
            img = item["observation.image"]
            assert img.dtype == torch.float32 and img.shape == (3, SIZE, SIZE)
            assert 0 <= img.min() and img.max() <= 1
            diff = np.abs(as_uint8_hwc(img).astype(int) - arrays["observation.image"][i])
            assert diff.max() <= 2, diff.max()
            np.testing.assert_array_equal(item["observation.state"].numpy(), arrays["observation.state"][i])
            np.testing.assert_array_equal(item["action"].numpy(), arrays["action"][i])
            assert item["next.reward"].item() == arrays["next.reward"][i]
            assert item["next.done"].item() == arrays["next.done"][i]
            assert item["timestamp"].item() == pytest.approx(i / FPS)
            assert (item["frame_index"].item(), item["episode_index"].item(), item["index"].item()) == (i, ep, row)
            assert item["task"] == TASKS[ep]
            row += 1


def test_round_trip_image_dtype_is_exact(image_root):
    info = json.loads((image_root / "meta/info.json").read_text())
    assert info["features"]["observation.image"]["dtype"] == "image" and info["video_path"] is None
    column = pq.read_table(image_root / "data/chunk-000/episode_000000.parquet").column("observation.image")
    assert column.type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert column[0]["path"].as_py() is None and column[0]["bytes"].as_py().startswith(b"\x89PNG")
    ds = LeRobotDataset(image_root)
    assert_images_exact(ds)


def test_images_are_decoded_once_into_the_frame_cache(image_root, tmp_path, monkeypatch):
    ds = LeRobotDataset(image_root, episodes=[1, 2], cache_dir=tmp_path / "c")
    cached = list((tmp_path / "c" / "observation.image").glob("images-*.npy"))
    assert len(cached) == 1 and np.load(cached[0], mmap_mode="r").shape == (LENGTHS[1] + LENGTHS[2], 3, 32, 32)
    monkeypatch.setattr(lerobot_dataset.Image, "open", lambda *a: pytest.fail("decoded a PNG at access"))
    np.testing.assert_array_equal(as_uint8_hwc(ds[LENGTHS[1]]["observation.image"]),
                                  episode_arrays(2)["observation.image"][0])
    again = LeRobotDataset(image_root, episodes=[1, 2], cache_dir=tmp_path / "c")  # reused, nothing decoded
    np.testing.assert_array_equal(again[3]["observation.image"], ds[3]["observation.image"])


def _rewrite_image_cells(path: Path, edit) -> None:
    """Rewrites the observation.image cells ({bytes, path}) of one parquet through `edit(cells)`."""
    table = pq.read_table(path)
    cells = table.column("observation.image").to_pylist()
    edit(cells)
    column = pa.array(cells, type=table.schema.field("observation.image").type)
    pq.write_table(table.set_column(table.column_names.index("observation.image"), "observation.image", column), path)


def test_image_cells_may_name_files_instead_of_bytes(image_root, tmp_path):
    """An image column of paths (relative to the root), as datasets with image folders store it."""
    root = tmp_path / "paths"
    shutil.copytree(image_root, root)

    def to_files(cells):
        for i, cell in enumerate(cells):
            name = f"images/observation.image/episode_000000/frame_{i:06d}.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(cell["bytes"])
            cells[i] = {"bytes": None, "path": name}

    _rewrite_image_cells(root / "data/chunk-000/episode_000000.parquet", to_files)
    ds = LeRobotDataset(root, episodes=[0])
    np.testing.assert_array_equal(as_uint8_hwc(ds[4]["observation.image"]), episode_arrays(0)["observation.image"][4])


def test_error_unreadable_image(image_root, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(image_root, root)

    def corrupt_fourth(cells):
        cells[3] = {"bytes": b"\x89PNG not really", "path": None}

    _rewrite_image_cells(root / "data/chunk-000/episode_000001.parquet", corrupt_fourth)
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(root)
    msg = one_line(err)
    assert f"frame {LENGTHS[0] + 3} of 'observation.image' is not a readable image" in msg
    assert not list((root / ".cache").rglob("*.tmp")) and not list((root / ".cache").rglob("images-*.npy"))


def test_metadata(video_root):
    meta = LeRobotDatasetMetadata(video_root)
    assert meta.fps == FPS and meta.total_frames == sum(LENGTHS) and meta.total_episodes == 3
    assert meta.camera_keys == meta.video_keys == ["observation.image"] and meta.image_keys == []
    assert meta.tasks == {0: "push the T", 1: "push it harder"}
    assert list(meta.episodes) == [0, 1, 2] and meta.episodes[1]["length"] == LENGTHS[1]
    assert set(meta.stats["action"]) >= {"mean", "std", "min", "max"}
    assert all(isinstance(v, np.ndarray) for v in meta.stats["action"].values())


def test_episode_subset(video_root):
    ds = LeRobotDataset(video_root, episodes=[2, 0])
    assert len(ds) == LENGTHS[2] + LENGTHS[0]
    first = ds[0]
    assert first["episode_index"].item() == 2 and first["frame_index"].item() == 0
    np.testing.assert_array_equal(first["observation.state"].numpy(), episode_arrays(2)["observation.state"][0])
    assert np.abs(as_uint8_hwc(first["observation.image"]).astype(int) - make_frames(2, 1)[0]).max() <= 2
    last = ds[len(ds) - 1]
    assert (last["episode_index"].item(), last["frame_index"].item()) == (0, LENGTHS[0] - 1)
    with pytest.raises(ValueError, match=r"episodes \[7\]"):
        LeRobotDataset(video_root, episodes=[0, 7])


# ---------------------------------------------------------------- delta timestamps


def test_delta_timestamps_pad_at_episode_edges(video_root):
    deltas = {
        "observation.image": [-0.1, 0.0],
        "observation.state": [-0.1, 0.0],
        "action": [-0.1, 0.0, 0.1, 0.2],
    }
    ds = LeRobotDataset(video_root, delta_timestamps=deltas)
    arrays = episode_arrays(1)
    start = LENGTHS[0]

    item = ds[start]  # first frame of episode 1
    assert item["observation.state"].shape == (2, 2) and item["observation.image"].shape == (2, 3, SIZE, SIZE)
    assert item["action"].shape == (4, 2)
    assert item["observation.state_is_pad"].tolist() == [True, False]
    assert item["action_is_pad"].tolist() == [True, False, False, False]
    np.testing.assert_array_equal(item["observation.state"][0].numpy(), arrays["observation.state"][0])
    torch.testing.assert_close(item["observation.image"][0], item["observation.image"][1])
    np.testing.assert_array_equal(item["action"].numpy(), arrays["action"][[0, 0, 1, 2]])

    item = ds[start + LENGTHS[1] - 2]  # second-to-last frame of episode 1
    assert item["action_is_pad"].tolist() == [False, False, False, True]
    np.testing.assert_array_equal(item["action"].numpy(), arrays["action"][[-3, -2, -1, -1]])
    assert item["observation.state_is_pad"].tolist() == [False, False]
    assert item["episode_index"].item() == 1  # keys without deltas stay single frames
    assert "timestamp_is_pad" not in item


def test_delta_timestamps_must_be_multiples_of_the_frame_period(video_root):
    with pytest.raises(ValueError) as err:
        LeRobotDataset(video_root, delta_timestamps={"action": [0.0, 0.05]})
    msg = one_line(err)
    assert "'action'" in msg and "0.05" in msg and "fps=10" in msg
    ds = LeRobotDataset(video_root, delta_timestamps={"action": [0.0, 0.1 + 5e-5]})
    assert ds[0]["action"].shape == (2, 2)
    with pytest.raises(ValueError, match="not_a_key"):
        LeRobotDataset(video_root, delta_timestamps={"not_a_key": [0.0]})


def test_image_transforms_applied_per_frame(video_root):
    shapes = []

    def transform(img: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(img.shape))
        return 1 - img

    plain = LeRobotDataset(video_root)[3]["observation.image"]
    ds = LeRobotDataset(video_root, delta_timestamps={"observation.image": [-0.1, 0.0]}, image_transforms=transform)
    item = ds[3]
    assert shapes == [(3, SIZE, SIZE)] * 2
    torch.testing.assert_close(item["observation.image"][1], 1 - plain)


# ---------------------------------------------------------------- stats


def test_stats_match_numpy(video_root):
    meta = LeRobotDatasetMetadata(video_root)
    all_eps = [episode_arrays(ep) for ep in range(3)]
    for ep, arrays in enumerate(all_eps):
        s = meta.episodes_stats[ep]["observation.state"]
        np.testing.assert_allclose(s["mean"], arrays["observation.state"].mean(0), rtol=1e-6)
        np.testing.assert_allclose(s["std"], arrays["observation.state"].std(0), rtol=1e-6)
        assert s["count"].tolist() == [LENGTHS[ep]]
    for key in ("observation.state", "action"):
        full = np.concatenate([a[key] for a in all_eps]).astype(np.float64)
        s = meta.stats[key]
        np.testing.assert_allclose(s["mean"], full.mean(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(s["std"], full.std(0), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(s["min"], full.min(0))
        np.testing.assert_allclose(s["max"], full.max(0))
    reward = np.concatenate([a["next.reward"] for a in all_eps]).astype(np.float64)
    assert meta.stats["next.reward"]["mean"].shape == (1,)
    np.testing.assert_allclose(meta.stats["next.reward"]["mean"], [reward.mean()], rtol=1e-6)
    images = np.concatenate([a["observation.image"] for a in all_eps]).astype(np.float64) / 255
    s = meta.stats["observation.image"]
    assert s["mean"].shape == (3, 1, 1)
    np.testing.assert_allclose(s["mean"][:, 0, 0], images.mean((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(s["std"][:, 0, 0], images.std((0, 1, 2)), rtol=1e-6)
    np.testing.assert_allclose(s["max"][:, 0, 0], images.max((0, 1, 2)))
    assert meta.stats["index"]["max"].tolist() == [sum(LENGTHS) - 1]


def test_stats_aggregated_from_episode_stats_without_stats_json(video_copy):
    with_json = LeRobotDatasetMetadata(video_copy).stats
    (video_copy / "meta/stats.json").unlink()
    aggregated = LeRobotDatasetMetadata(video_copy).stats
    assert set(aggregated) == set(with_json)
    for key in with_json:
        for stat in ("mean", "std", "min", "max", "count"):
            np.testing.assert_allclose(aggregated[key][stat], with_json[key][stat], rtol=1e-12)


# ---------------------------------------------------------------- malformed datasets


def test_error_root_missing(tmp_path):
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(tmp_path / "nowhere")
    msg = one_line(err)
    assert msg.startswith(f"no LeRobotDataset at {tmp_path / 'nowhere'} (meta/info.json missing)")


def test_error_info_json_malformed(video_copy):
    info_path = video_copy / "meta/info.json"
    info_path.write_text('{"codebase_version": "v2.1", "fps": 10,')
    with pytest.raises(DatasetError) as err:
        LeRobotDatasetMetadata(video_copy)
    assert str(info_path) in one_line(err) and "JSON" in str(err.value)
    info_path.write_text(json.dumps({"codebase_version": "v2.1", "fps": 10}))
    with pytest.raises(DatasetError, match="missing keys"):
        LeRobotDatasetMetadata(video_copy)
    info_path.write_text(json.dumps({"codebase_version": "v4.0", "fps": 10, "features": {}, "data_path": "x",
                                     "total_episodes": 3, "total_frames": 37}))
    with pytest.raises(DatasetError, match="v4.0 is not supported"):
        LeRobotDatasetMetadata(video_copy)


def test_error_parquet_missing(video_copy):
    path = video_copy / "data/chunk-000/episode_000001.parquet"
    path.unlink()
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(video_copy)
    assert str(path) in one_line(err) and "episode 1" in str(err.value)
    assert len(LeRobotDataset(video_copy, episodes=[0, 2])) == LENGTHS[0] + LENGTHS[2]


def test_error_parquet_row_count(video_copy):
    path = video_copy / "data/chunk-000/episode_000002.parquet"
    pq.write_table(pq.read_table(path).slice(0, 7), path)
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(video_copy)
    msg = one_line(err)
    assert str(path) in msg and "7 rows" in msg and f"length {LENGTHS[2]}" in msg


def test_error_video_missing(video_copy):
    path = video_copy / "videos/chunk-000/observation.image/episode_000000.mp4"
    path.unlink()
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(video_copy)
    assert str(path) in one_line(err)


def test_error_video_truncated(video_copy):
    path = video_copy / "videos/chunk-000/observation.image/episode_000001.mp4"
    encode_video(make_frames(1, LENGTHS[1] - 4), path, FPS)
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(video_copy)
    msg = one_line(err)
    assert str(path) in msg and "truncated" in msg and f"{LENGTHS[1] - 4} frames" in msg


def test_error_video_cut_short_on_disk(video_copy):
    """A download cut off mid-file: the mp4's bytes end early."""
    path = video_copy / "videos/chunk-000/observation.image/episode_000001.mp4"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(video_copy)
    msg = one_line(err)
    assert str(path) in msg and ("cannot be decoded" in msg or "truncated" in msg), msg
    assert not list((video_copy / ".cache/decoded").rglob("*.tmp"))


def test_error_video_encoded_at_another_fps(video_copy):
    """The parquet's timestamps are at 10 fps, the video's frames at 15: rows land between frames."""
    path = video_copy / "videos/chunk-000/observation.image/episode_000001.mp4"
    encode_video(make_frames(1, 2 * LENGTHS[1]), path, FPS * 1.5)
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(video_copy)
    msg = one_line(err)
    assert str(path) in msg and "does not match the parquet timestamps" in msg and f"fps={FPS}" in msg


def test_error_timestamps_inconsistent_with_fps(video_copy):
    info_path = video_copy / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["fps"] = 30
    info_path.write_text(json.dumps(info))
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(video_copy)
    msg = one_line(err)
    assert "episode_000000.parquet" in msg and "fps=30" in msg


def test_error_timestamp_gap_in_parquet(video_copy):
    path = video_copy / "data/chunk-000/episode_000001.parquet"
    table = pq.read_table(path)
    ts = table.column("timestamp").to_numpy().copy()
    ts[5:] += 0.05
    table = table.set_column(table.column_names.index("timestamp"), "timestamp", pa.array(ts, pa.float32()))
    pq.write_table(table, path)
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(video_copy)
    msg = one_line(err)
    assert str(path) in msg and "frames 4 and 5" in msg


# ---------------------------------------------------------------- decoded-frame cache


def test_cache_reused_then_rebuilt_when_video_changes(video_copy, monkeypatch):
    first = LeRobotDataset(video_copy)
    cache_files = sorted((video_copy / ".cache/decoded/observation.image").glob("*.frames.npy"))
    assert len(cache_files) == 3
    reference = first[LENGTHS[0]]["observation.image"]

    def no_decoding(path, frames_path):
        raise AssertionError(f"decoded {path} again although its cache is valid")

    monkeypatch.setattr(lerobot_dataset, "decode_video_to_npy", no_decoding)
    second = LeRobotDataset(video_copy)
    torch.testing.assert_close(second[LENGTHS[0]]["observation.image"], reference)
    monkeypatch.undo()

    video = video_copy / "videos/chunk-000/observation.image/episode_000001.mp4"
    encode_video(255 - make_frames(1, LENGTHS[1]), video, FPS)
    third = LeRobotDataset(video_copy)
    # both encodes round by up to 2 levels, in opposite directions at worst
    torch.testing.assert_close(third[LENGTHS[0]]["observation.image"], 1 - reference, atol=4.5 / 255, rtol=0)
    after = sorted((video_copy / ".cache/decoded/observation.image").glob("*.frames.npy"))
    assert len(after) == 3 and set(after) != set(cache_files)
    assert not list((video_copy / ".cache/decoded").rglob("*.tmp"))


def test_cache_dir_argument(video_root, tmp_path):
    LeRobotDataset(video_root, cache_dir=tmp_path / "frames")
    assert len(list((tmp_path / "frames/observation.image").glob("*.frames.npy"))) == 3


def test_dataloader_with_workers(video_root):
    ds = LeRobotDataset(video_root, delta_timestamps={"action": [0.0, 0.1]})
    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0)
    )
    seen = []
    for batch in loader:
        assert batch["observation.image"].shape[1:] == (3, SIZE, SIZE)
        assert batch["action"].shape[1:] == (2, 2) and batch["action_is_pad"].dtype == torch.bool
        for j, idx in enumerate(batch["index"].tolist()):
            torch.testing.assert_close(batch["observation.image"][j], ds[idx]["observation.image"])
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(sum(LENGTHS)))
    clone = pickle.loads(pickle.dumps(ds))  # what spawn/forkserver workers receive: no open maps
    assert clone._mmaps == {}
    torch.testing.assert_close(clone[5]["observation.image"], ds[5]["observation.image"])


# ---------------------------------------------------------------- writer behaviour


def test_writer_is_atomic_and_validates(tmp_path):
    root = tmp_path / "rec"
    writer = LeRobotDatasetWriter(root, FPS, FEATURES)
    arrays = episode_arrays(0)
    frame = {k: v[0] for k, v in arrays.items()}
    with pytest.raises(ValueError, match="observation.state"):
        writer.add_frame({**frame, "observation.state": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="filled by the writer"):
        writer.add_frame({**frame, "timestamp": 0.0})
    with pytest.raises(ValueError, match="uint8"):
        writer.add_frame({**frame, "observation.image": arrays["observation.image"][0].astype(np.float32)})
    for i in range(4):
        writer.add_frame({k: v[i] for k, v in arrays.items()})
    writer.discard_episode()
    for i in range(5):
        writer.add_frame({k: v[i] for k, v in arrays.items()})
    writer.save_episode("first")
    writer.add_frame(frame)
    assert not root.exists()  # nothing at root until finalize
    with pytest.raises(ValueError, match="not saved"):
        writer.finalize()
    writer.discard_episode()
    writer.finalize()
    ds = LeRobotDataset(root)
    assert len(ds) == 5 and ds.meta.total_episodes == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]
    with pytest.raises(FileExistsError):
        LeRobotDatasetWriter(root, FPS, FEATURES)


def test_writer_abort_leaves_nothing(tmp_path):
    writer = LeRobotDatasetWriter(tmp_path / "rec", FPS, FEATURES)
    arrays = episode_arrays(0)
    for i in range(3):
        writer.add_frame({k: v[i] for k, v in arrays.items()})
    writer.save_episode("t")
    writer.abort()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a dataset written the way LeRobot's hub copies are


PUSHT_TASK = "Push the T-shaped block onto the T-shaped target."


def test_reads_lerobot_hub_style_dataset(tmp_path, monkeypatch):
    """PushT as published: AV1 yuv420p videos, variable-length list columns, per-episode stats
    only (no stats.json), the older `video_info` block; none of it written by our writer."""
    root = tmp_path / "pusht"
    features = {
        "observation.image": {"dtype": "video", "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channel"],
                              "video_info": {"video.fps": 10.0, "video.codec": "av1", "video.pix_fmt": "yuv420p",
                                             "video.is_depth_map": False, "has_audio": False}},
        "observation.state": {"dtype": "float32", "shape": [2], "names": {"motors": ["motor_0", "motor_1"]}},
        "action": {"dtype": "float32", "shape": [2], "names": {"motors": ["motor_0", "motor_1"]}},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    monkeypatch.setenv("SVT_LOG", "1")  # SVT-AV1 prints its banner at info level otherwise
    lengths = (6, 9)
    (root / "meta").mkdir(parents=True)
    index = 0
    stats_lines = []
    for ep, n in enumerate(lengths):
        arrays = episode_arrays(ep)
        state = arrays["observation.state"][:n]
        table = pa.table({
            "observation.state": pa.array(state.tolist(), pa.list_(pa.float32())),
            "action": pa.array(arrays["action"][:n].tolist(), pa.list_(pa.float32())),
            "episode_index": pa.array([ep] * n, pa.int64()),
            "frame_index": pa.array(range(n), pa.int64()),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / 10, pa.float32()),
            "next.reward": pa.array(np.zeros(n), pa.float32()),
            "next.done": pa.array([i == n - 1 for i in range(n)]),
            "next.success": pa.array([False] * n),
            "index": pa.array(range(index, index + n), pa.int64()),
            "task_index": pa.array([0] * n, pa.int64()),
        })
        index += n
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / f"data/chunk-000/episode_{ep:06d}.parquet")
        video = root / f"videos/chunk-000/observation.image/episode_{ep:06d}.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        _encode_av1(make_frames(ep, n), video)
        stats_lines.append({"episode_index": ep, "stats": {"observation.state": {
            "min": state.min(0).tolist(), "max": state.max(0).tolist(), "mean": state.mean(0).tolist(),
            "std": state.std(0).tolist(), "count": [n]}}})
    info = {"codebase_version": "v2.1", "robot_type": "unknown", "total_episodes": 2, "total_frames": sum(lengths),
            "total_tasks": 1, "total_videos": 2, "total_chunks": 1, "chunks_size": 1000, "fps": 10,
            "splits": {"train": "0:2"},
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": features}
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    (root / "meta/episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": ep, "tasks": [PUSHT_TASK], "length": n}) + "\n"
        for ep, n in enumerate(lengths)))
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": PUSHT_TASK}) + "\n")
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(line) + "\n" for line in stats_lines))

    ds = LeRobotDataset(root, delta_timestamps={"action": [0.0, 0.1]})
    assert len(ds) == sum(lengths)
    item = ds[lengths[0] + 2]
    np.testing.assert_array_equal(item["observation.state"].numpy(), episode_arrays(1)["observation.state"][2])
    assert item["action"].shape == (2, 2) and item["next.success"].dtype == torch.bool
    assert item["task"].startswith("Push the T")
    lossy = np.abs(as_uint8_hwc(item["observation.image"]).astype(int) - make_frames(1, 3)[2])
    assert lossy.mean() < 8  # AV1 4:2:0 is lossy; the frame must still be the right one
    all_states = np.concatenate([episode_arrays(ep)["observation.state"][:n] for ep, n in enumerate(lengths)])
    np.testing.assert_allclose(ds.meta.stats["observation.state"]["mean"], all_states.mean(0), rtol=1e-6)


def _encode_av1(frames: np.ndarray, path: Path) -> None:
    """What LeRobot's encode_video_frames produces: libsvtav1, yuv420p, g=2, crf=30.

    SVT-AV1 run as root moves the calling thread to SCHED_FIFO 99; left so, every process the test run
    starts afterwards inherits it, and on a 2-core machine they can starve it. The policy is put back."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libsvtav1", rate=10)
            stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
            stream.options = {"g": "2", "crf": "30"}
            for i, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = i, Fraction(1, 10)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    finally:
        os.sched_setscheduler(0, policy, param)


def test_error_video_undecodable(video_copy):
    path = video_copy / "videos/chunk-000/observation.image/episode_000002.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"garbage" * 50)
    with pytest.raises(DatasetError) as err:
        LeRobotDataset(video_copy)
    assert str(path) in one_line(err) and "cannot be decoded" in str(err.value)
