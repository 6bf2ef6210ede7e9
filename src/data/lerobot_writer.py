"""Writer for LeRobotDataset v2.1 or v3.0 folders that LeRobot itself (and our reader) can load.

v2.1 stays the default: every LeRobot release up to 0.3 and every tool built on them reads it,
while v3.0 (`codebase_version="v3.0"`, LeRobot >= 0.4) suits datasets with many episodes.

The dataset is built in a hidden sibling folder and moved onto `root` by `finalize()` with one
`os.replace`, so a recording that crashes half-way leaves no folder at `root` that looks like a
complete dataset (only a `.<name>.tmp-*` sibling that can be deleted).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from data import lerobot_v3
from data.features import DEFAULT_FEATURES, is_visual
from data.lerobot_dataset import (
    DEFAULT_CHUNK_SIZE,
    EPISODES_PATH,
    EPISODES_STATS_PATH,
    INFO_PATH,
    STATS_PATH,
    TASKS_PATH,
)
from data.stats import aggregate_stats, compute_episode_stats, serialize_stats
from data.video import encode_video, video_info

CODEBASE_VERSION = "v2.1"
CODEBASE_VERSIONS = (CODEBASE_VERSION, lerobot_v3.CODEBASE_VERSION)
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

_ARROW_TYPES = {
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
}
_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _hf_feature(ft: dict) -> dict:
    """The Hugging Face `datasets` description of a column, stored in the parquet schema metadata
    so that `datasets.load_dataset("parquet")` (LeRobot's loader) recovers the exact types."""
    if ft["dtype"] == "image":
        return {"_type": "Image"}
    feature: dict = {"dtype": ft["dtype"], "_type": "Value"}
    shape = list(ft["shape"])
    if shape == [1]:
        return feature
    for dim in reversed(shape):
        feature = {"feature": feature, "length": int(dim), "_type": "Sequence"}
    return feature


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _arrow_column(values: np.ndarray | list, ft: dict) -> pa.Array:
    if ft["dtype"] == "image":
        blobs = [_png(img) for img in values]
        return pa.StructArray.from_arrays(
            [pa.array(blobs, pa.binary()), pa.array([None] * len(blobs), pa.string())], fields=list(_IMAGE_TYPE)
        )
    arrow_type = _ARROW_TYPES[ft["dtype"]]
    if ft["dtype"] == "string":
        return pa.array(values, arrow_type)
    shape = list(ft["shape"])
    values = np.asarray(values)
    if shape == [1]:
        return pa.array(values.reshape(-1), arrow_type)
    array: pa.Array = pa.array(values.reshape(-1), arrow_type)
    for dim in reversed(shape):
        array = pa.FixedSizeListArray.from_arrays(array, type=pa.list_(array.type, int(dim)))
    return array


class LeRobotDatasetWriter:
    """Build a LeRobotDataset (v2.1 or v3.0) one frame at a time.

    `features` describes what each `add_frame` dict holds (LeRobot `info.json` entries; images
    as `dtype` "image" or "video" with shape `[H, W, 3]`); the bookkeeping columns
    (episode_index, frame_index, timestamp, index, task_index) are added by the writer.
    `use_videos` decides how camera features are stored: mp4 per episode (True) or PNG bytes
    inside the parquet (False). An episode's frames stay in memory until `save_episode`, which
    suits simulated cameras; a long high-resolution recording would want streaming encoding.

    `codebase_version` "v3.0" appends episodes to shared files (one parquet, one mp4 per camera)
    and starts the next file when one would pass `data_files_size_in_mb` / `video_files_size_in_mb`;
    a chunk folder holds `chunks_size` files (in v2.1, `chunks_size` episodes).
    """

    def __init__(
        self,
        root: str | Path,
        fps: int,
        features: dict[str, dict],
        robot_type: str = "unknown",
        use_videos: bool = True,
        codebase_version: str = CODEBASE_VERSION,
        chunks_size: int = DEFAULT_CHUNK_SIZE,
        data_files_size_in_mb: float = lerobot_v3.DEFAULT_DATA_FILE_SIZE_IN_MB,
        video_files_size_in_mb: float = lerobot_v3.DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    ):
        if codebase_version not in CODEBASE_VERSIONS:
            raise ValueError(f"codebase_version={codebase_version!r} cannot be written; use one of {CODEBASE_VERSIONS}")
        if chunks_size <= 0 or data_files_size_in_mb <= 0 or video_files_size_in_mb <= 0:
            raise ValueError("chunks_size, data_files_size_in_mb and video_files_size_in_mb must be positive")
        self.root = Path(root).expanduser()
        if self.root.exists():
            raise FileExistsError(
                f"{self.root} already exists; the writer creates a new dataset, pick another root or delete it"
            )
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.robot_type = robot_type
        self.features = self._build_features(features, use_videos)
        self._frame_keys = list(features)
        self._buffer: dict[str, list] = {key: [] for key in self._frame_keys}
        self._episodes: list[dict] = []
        self._episodes_stats: list[dict] = []
        self._tasks: dict[str, int] = {}
        self._total_frames = 0
        self._video_info: dict[str, dict] = {}
        self._finalized = False
        self.codebase_version = codebase_version
        self.chunks_size = chunks_size
        self.files_size_in_mb = (data_files_size_in_mb, video_files_size_in_mb)
        self._tmp = self.root.parent / f".{self.root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir(parents=True)
        self._v3 = (
            lerobot_v3.FileAppender(self._tmp, fps, {k: self.features[k]["shape"] for k in self.video_keys},
                                    chunks_size, data_files_size_in_mb, video_files_size_in_mb)
            if codebase_version == lerobot_v3.CODEBASE_VERSION else None
        )

    @staticmethod
    def _build_features(features: dict[str, dict], use_videos: bool) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for key, ft in features.items():
            if key in DEFAULT_FEATURES:
                raise ValueError(f"feature {key!r} is filled by the writer; leave it out of features")
            if "dtype" not in ft or "shape" not in ft:
                raise ValueError(f"feature {key!r} needs dtype and shape, got {ft}")
            ft = {**ft, "shape": [int(d) for d in ft["shape"]], "names": ft.get("names")}
            if is_visual(ft):
                if len(ft["shape"]) != 3 or ft["shape"][2] != 3:
                    raise ValueError(f"feature {key!r}: camera images must be [H, W, 3] uint8, got shape {ft['shape']}")
                ft["dtype"] = "video" if use_videos else "image"
                ft["names"] = ft["names"] or ["height", "width", "channel"]
            elif ft["dtype"] not in _ARROW_TYPES:
                raise ValueError(
                    f"feature {key!r}: dtype {ft['dtype']!r} not supported (one of {sorted(_ARROW_TYPES)})"
                )
            out[key] = ft
        return {**out, **DEFAULT_FEATURES}

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_buffered_frames(self) -> int:
        return len(self._buffer[self._frame_keys[0]]) if self._frame_keys else 0

    def _check_open(self) -> None:
        if self._finalized:
            raise RuntimeError(f"the writer for {self.root} is finalized; create a new one")

    def add_frame(self, frame: dict) -> None:
        """Buffer one frame of the current episode (values validated against `features` now,
        so a wrong shape fails at the frame that has it rather than at save time)."""
        self._check_open()
        missing = [k for k in self._frame_keys if k not in frame]
        extra = [k for k in frame if k not in self.features]
        reserved = [k for k in frame if k in DEFAULT_FEATURES]
        if missing or extra or reserved:
            raise ValueError(
                f"add_frame: missing {missing}, unknown {extra}, filled by the writer {reserved}; "
                f"a frame holds exactly {self._frame_keys}"
            )
        values = {}
        for key in self._frame_keys:
            ft = self.features[key]
            shape = tuple(ft["shape"])
            if is_visual(ft):
                value = np.asarray(frame[key])
                if value.dtype != np.uint8 or value.shape != shape:
                    raise ValueError(
                        f"add_frame: {key!r} must be uint8 {shape} (H, W, C), got {value.dtype} {value.shape}"
                    )
            elif ft["dtype"] == "string":
                value = str(frame[key])
            else:
                value = np.asarray(frame[key], dtype=ft["dtype"])
                if shape == (1,) and value.size == 1:
                    value = value.reshape(())
                elif value.shape != shape:
                    raise ValueError(f"add_frame: {key!r} must have shape {shape}, got {value.shape}")
            values[key] = value
        for key, value in values.items():
            self._buffer[key].append(value)

    def discard_episode(self) -> None:
        """Drop the frames added since the last `save_episode` (a failed or aborted episode)."""
        self._check_open()
        self._buffer = {key: [] for key in self._frame_keys}

    def save_episode(self, task: str) -> None:
        """Write the buffered frames as the next episode: parquet, videos and per-episode stats."""
        self._check_open()
        n = self.num_buffered_frames
        if n == 0:
            raise ValueError("save_episode: no frames were added since the last save")
        ep = len(self._episodes)
        task_index = self._tasks.setdefault(task, len(self._tasks))
        data: dict[str, np.ndarray | list] = {
            key: list(values) if self.features[key]["dtype"] == "string" else np.stack(values)
            for key, values in self._buffer.items()
        }
        frame_index = np.arange(n, dtype=np.int64)
        data["timestamp"] = (frame_index / self.fps).astype(np.float32)
        data["frame_index"] = frame_index
        data["episode_index"] = np.full(n, ep, dtype=np.int64)
        data["index"] = np.arange(self._total_frames, self._total_frames + n, dtype=np.int64)
        data["task_index"] = np.full(n, task_index, dtype=np.int64)

        table_keys = [k for k, ft in self.features.items() if ft["dtype"] != "video"]
        table = pa.Table.from_arrays(
            [_arrow_column(data[k], self.features[k]) for k in table_keys],
            names=table_keys,
        ).replace_schema_metadata(
            {"huggingface": json.dumps({"info": {"features": {k: _hf_feature(self.features[k]) for k in table_keys}}})}
        )
        record = {"episode_index": ep, "tasks": [task], "length": n}
        if self._v3 is not None:
            record.update(self._v3.append(table, {k: data[k] for k in self.video_keys}, self._total_frames))
        else:
            self._write_v21_episode(ep, table, data)
        self._episodes.append(record)
        self._episodes_stats.append(compute_episode_stats(data, self.features))
        self._total_frames += n
        self._buffer = {key: [] for key in self._frame_keys}

    def _write_v21_episode(self, ep: int, table: pa.Table, data: dict) -> None:
        chunk = ep // self.chunks_size
        parquet_path = self._tmp / DATA_PATH.format(episode_chunk=chunk, episode_index=ep)
        parquet_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, parquet_path)
        for key in self.video_keys:
            video_path = self._tmp / VIDEO_PATH.format(episode_chunk=chunk, video_key=key, episode_index=ep)
            encode_video(data[key], video_path, self.fps)
            if key not in self._video_info:
                self._video_info[key] = video_info(video_path)

    @property
    def video_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] == "video"]

    def _info(self) -> dict:
        features = {
            key: {**ft, "info": self._video_info[key]} if ft["dtype"] == "video" else ft
            for key, ft in self.features.items()
        }
        n_eps = len(self._episodes)
        head = {
            "codebase_version": self.codebase_version,
            "robot_type": self.robot_type,
            "total_episodes": n_eps,
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
        }
        tail = {"fps": self.fps, "splits": {"train": f"0:{n_eps}"}}
        if self._v3 is not None:
            return {
                **head,
                "chunks_size": self.chunks_size,
                "data_files_size_in_mb": self.files_size_in_mb[0],
                "video_files_size_in_mb": self.files_size_in_mb[1],
                **tail,
                "data_path": lerobot_v3.DATA_PATH,
                "video_path": lerobot_v3.VIDEO_PATH if self.video_keys else None,
                "features": features,
            }
        return {
            **head,
            "total_videos": n_eps * len(self.video_keys),
            "total_chunks": (n_eps - 1) // self.chunks_size + 1,
            "chunks_size": self.chunks_size,
            **tail,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.video_keys else None,
            "features": features,
        }

    def finalize(self) -> Path:
        """Write `meta/` and move the finished dataset onto `root`; returns `root`."""
        self._check_open()
        if self.num_buffered_frames:
            raise ValueError(
                f"finalize: {self.num_buffered_frames} frames are not saved; "
                f"call save_episode(task) or discard_episode() first"
            )
        if not self._episodes:
            raise ValueError("finalize: no episode was saved; a dataset needs at least one")
        meta = self._tmp / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        if self._v3 is not None:
            self._finish_v3()
        else:
            self._write_v21_meta()
        stats = serialize_stats(aggregate_stats(self._episodes_stats))
        (self._tmp / STATS_PATH).write_text(json.dumps(stats, indent=4))
        (self._tmp / INFO_PATH).write_text(json.dumps(self._info(), indent=4))
        if self.root.exists():
            raise FileExistsError(f"{self.root} appeared while writing; the finished dataset is left at {self._tmp}")
        os.replace(self._tmp, self.root)
        self._finalized = True
        return self.root

    def _finish_v3(self) -> None:
        self._v3.close()
        for key in self.video_keys:
            self._video_info[key] = video_info(self._tmp / lerobot_v3.VIDEO_PATH.format(
                video_key=key, chunk_index=0, file_index=0))
        rows = [{**ep, "stats": stats} for ep, stats in zip(self._episodes, self._episodes_stats)]
        lerobot_v3.write_episodes(self._tmp / lerobot_v3.EPISODES_PATH.format(chunk_index=0, file_index=0), rows)
        lerobot_v3.write_tasks(self._tmp / lerobot_v3.TASKS_PATH, self._tasks)

    def _write_v21_meta(self) -> None:
        with open(self._tmp / EPISODES_PATH, "w") as f:
            f.writelines(json.dumps(ep) + "\n" for ep in self._episodes)
        with open(self._tmp / TASKS_PATH, "w") as f:
            f.writelines(json.dumps({"task_index": i, "task": t}) + "\n" for t, i in self._tasks.items())
        with open(self._tmp / EPISODES_STATS_PATH, "w") as f:
            f.writelines(
                json.dumps({"episode_index": ep, "stats": serialize_stats(stats)}) + "\n"
                for ep, stats in enumerate(self._episodes_stats)
            )

    def abort(self) -> None:
        """Delete everything written so far (the temporary folder); the writer is unusable after."""
        if not self._finalized:
            try:
                if self._v3 is not None:
                    self._v3.close()
            finally:
                shutil.rmtree(self._tmp, ignore_errors=True)
            self._finalized = True
