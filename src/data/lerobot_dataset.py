"""Reader for LeRobotDataset folders: v2.1 (as written by LeRobot and by our writer; v2.0 too) and v3.0.

v2.x layout (paths relative to the dataset root; v3.0's is in `data/lerobot_v3.py`):
    meta/info.json              features, fps, path templates, totals
    meta/episodes.jsonl         {"episode_index", "tasks", "length"} per episode
    meta/tasks.jsonl            {"task_index", "task"}
    meta/episodes_stats.jsonl   per-episode stats (v2.1); meta/stats.json aggregated (v2.0)
    data/chunk-XXX/episode_XXXXXX.parquet            one row per frame
    videos/chunk-XXX/<video_key>/episode_XXXXXX.mp4  frame i at timestamp i / fps

Both versions are read into the same rows and frame maps: an episode is a row range of a parquet
(the whole file in v2.x) and, per camera, a time offset into an mp4 (0 in v2.x), so items are the
same whichever version a dataset is stored in.

Everything that can be wrong with a downloaded dataset is checked at construction and reported
as a one-line `DatasetError`, so a training run fails before its first step rather than in a
DataLoader worker hours later.

Videos are decoded once into uint8 `.npy` files (one per video file, shared by the episodes in it, under
`<root>/.cache/decoded/` unless `cache_dir` is given) and served through memory maps: random
access then costs a page read instead of a seek-and-decode, and the maps are shared by all
DataLoader workers through the page cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm import tqdm

from data import lerobot_v3
from config.errors import ConfigError
from data.errors import DatasetError
from data.features import is_visual, visual_chw_shape
from data.stats import aggregate_stats, stats_from_json
from data.video import decode_video_to_npy

INFO_PATH = "meta/info.json"
EPISODES_PATH = "meta/episodes.jsonl"
TASKS_PATH = "meta/tasks.jsonl"
EPISODES_STATS_PATH = "meta/episodes_stats.jsonl"
STATS_PATH = "meta/stats.json"
DEFAULT_CHUNK_SIZE = 1000
CACHE_SUBDIR = ".cache/decoded"

_REQUIRED_INFO_KEYS = ("codebase_version", "fps", "features", "data_path", "total_episodes", "total_frames")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetError(
                    f"{path}: line {lineno} is not valid JSON ({e.msg}); re-download or rewrite the file"
                ) from e
    return rows


class LeRobotDatasetMetadata:
    """The `meta/` folder of a dataset: features, fps, episodes, tasks and stats.

    `stats` is `{key: {"mean", "std", "min", "max", "count": np.ndarray}}`: `meta/stats.json`
    when present, else the aggregation of `meta/episodes_stats.jsonl` (empty if neither exists).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        info_path = self.root / INFO_PATH
        if not info_path.is_file():
            raise DatasetError(
                f"no LeRobotDataset at {self.root} ({INFO_PATH} missing); point the dataset root at a LeRobot "
                f"v2.1/v3.0 folder, e.g. one fetched with `huggingface-cli download lerobot/pusht --repo-type dataset "
                f"--revision v2.1 --local-dir {self.root}`"
            )
        self.info = self._load_info(info_path)
        self.features: dict[str, dict] = self.info["features"]
        self.fps = self.info["fps"]
        self.chunks_size = int(self.info.get("chunks_size", DEFAULT_CHUNK_SIZE))
        if self.is_v3:
            episodes, self.episodes_stats = lerobot_v3.load_episodes(self.root, self.video_keys)
            self.episodes = self._check_episodes(episodes)
            self.tasks = lerobot_v3.load_tasks(self.root)
        else:
            self.episodes = self._load_episodes()
            self.tasks = self._load_tasks()
            self.episodes_stats = self._load_episodes_stats()
        self.stats = self._load_stats()

    def _load_info(self, path: Path) -> dict:
        try:
            info = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: unreadable ({e}); re-download the dataset") from e
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); re-download the dataset") from e
        if not isinstance(info, dict):
            raise DatasetError(f"{path}: expected a JSON object, got {type(info).__name__}; re-download the dataset")
        missing = [k for k in _REQUIRED_INFO_KEYS if k not in info]
        if missing:
            raise DatasetError(
                f"{path}: missing keys {missing}; this is not a LeRobot v2.x info.json, re-download the dataset"
            )
        version = str(info["codebase_version"])
        if not version.startswith(("v2.", "v3.")):
            raise DatasetError(
                f"{path}: codebase_version {version} is not supported (this reader handles v2.0/v2.1/v3.0); "
                f"download the v2.1 or v3.0 revision of the dataset or convert it with LeRobot's conversion scripts"
            )
        if not isinstance(info["features"], dict) or not all(
            isinstance(ft, dict) and "dtype" in ft and "shape" in ft for ft in info["features"].values()
        ):
            raise DatasetError(
                f"{path}: 'features' must map each key to {{dtype, shape, names}}; re-download the dataset"
            )
        if not isinstance(info["fps"], (int, float)) or info["fps"] <= 0:
            raise DatasetError(f"{path}: fps must be a positive number, got {info['fps']!r}; fix info.json")
        if self._video_keys_of(info["features"]) and not info.get("video_path"):
            raise DatasetError(f"{path}: features have dtype 'video' but video_path is null; fix info.json")
        return info

    @staticmethod
    def _video_keys_of(features: dict) -> list[str]:
        return [k for k, ft in features.items() if ft["dtype"] == "video"]

    @property
    def version(self) -> str:
        return str(self.info["codebase_version"])

    @property
    def is_v3(self) -> bool:
        return self.version.startswith("v3.")

    @property
    def episodes_file(self) -> str:
        """Where the episode list lives, for messages."""
        return lerobot_v3.EPISODES_DIR + "/" if self.is_v3 else EPISODES_PATH

    def _load_episodes(self) -> dict[int, dict]:
        path = self.root / EPISODES_PATH
        if not path.is_file():
            raise DatasetError(f"{path} missing: the dataset's episode list is gone; re-download the dataset")
        episodes = {}
        for row in _read_jsonl(path):
            if "episode_index" not in row or "length" not in row:
                raise DatasetError(
                    f"{path}: every line needs episode_index and length, got {row}; re-download the dataset"
                )
            episodes[int(row["episode_index"])] = row
        return self._check_episodes(episodes)

    def _check_episodes(self, episodes: dict[int, dict]) -> dict[int, dict]:
        """The episode list must agree with info.json's totals."""
        path = self.root / self.episodes_file
        if len(episodes) != self.info["total_episodes"]:
            raise DatasetError(
                f"{path} lists {len(episodes)} episodes but {INFO_PATH} says "
                f"total_episodes={self.info['total_episodes']}; "
                f"the download is incomplete or the files disagree, re-download the dataset"
            )
        frames = sum(int(row["length"]) for row in episodes.values())
        if frames != self.info["total_frames"]:
            raise DatasetError(
                f"{path} episode lengths add up to {frames} frames but {INFO_PATH} says "
                f"total_frames={self.info['total_frames']}; the files disagree, re-download or re-record the dataset"
            )
        return dict(sorted(episodes.items()))

    def _load_tasks(self) -> dict[int, str]:
        path = self.root / TASKS_PATH
        if not path.is_file():
            raise DatasetError(f"{path} missing: task_index cannot be resolved; re-download the dataset")
        return {int(row["task_index"]): row["task"] for row in _read_jsonl(path)}

    def _load_episodes_stats(self) -> dict[int, dict[str, dict[str, np.ndarray]]]:
        path = self.root / EPISODES_STATS_PATH
        if not path.is_file():
            return {}
        return {int(row["episode_index"]): stats_from_json(row["stats"]) for row in _read_jsonl(path)}

    def _load_stats(self) -> dict[str, dict[str, np.ndarray]]:
        path = self.root / STATS_PATH
        if path.is_file():
            try:
                return stats_from_json(json.loads(path.read_text()))
            except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
                raise DatasetError(f"{path}: malformed ({e}); delete it to use {EPISODES_STATS_PATH} instead") from e
        if self.episodes_stats:
            return aggregate_stats(list(self.episodes_stats.values()))
        return {}

    @property
    def robot_type(self) -> str | None:
        return self.info.get("robot_type")

    @property
    def total_frames(self) -> int:
        return int(self.info["total_frames"])

    @property
    def total_episodes(self) -> int:
        return int(self.info["total_episodes"])

    @property
    def video_keys(self) -> list[str]:
        return self._video_keys_of(self.features)

    @property
    def image_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] == "image"]

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if is_visual(ft)]

    def episode_chunk(self, ep_index: int) -> int:
        return ep_index // self.chunks_size

    def get_data_file_path(self, ep_index: int) -> Path:
        if self.is_v3:
            ep = self.episodes[ep_index]
            return self.root / self.info["data_path"].format(
                chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"]
            )
        rel = self.info["data_path"].format(episode_chunk=self.episode_chunk(ep_index), episode_index=ep_index)
        return self.root / rel

    def get_video_file_path(self, ep_index: int, video_key: str) -> Path:
        if self.is_v3:
            ep = self.episodes[ep_index]
            return self.root / self.info["video_path"].format(
                video_key=video_key,
                chunk_index=ep[f"videos/{video_key}/chunk_index"],
                file_index=ep[f"videos/{video_key}/file_index"],
            )
        rel = self.info["video_path"].format(
            episode_chunk=self.episode_chunk(ep_index), video_key=video_key, episode_index=ep_index
        )
        return self.root / rel

    def episode_rows(self, ep_index: int) -> tuple[int, int] | None:
        """The episode's global frame range `[from, to)` inside its shared parquet (v3.0); None when the
        parquet holds that episode alone (v2.x)."""
        if not self.is_v3:
            return None
        ep = self.episodes[ep_index]
        return int(ep["dataset_from_index"]), int(ep["dataset_to_index"])

    def episode_video_span(self, ep_index: int, video_key: str) -> tuple[float, float | None]:
        """(from_timestamp, to_timestamp) of the episode inside its video; (0, None) in v2.x."""
        if not self.is_v3:
            return 0.0, None
        ep = self.episodes[ep_index]
        return float(ep[f"videos/{video_key}/from_timestamp"]), float(ep[f"videos/{video_key}/to_timestamp"])


def _column_to_numpy(column: pa.ChunkedArray, n_rows: int) -> np.ndarray:
    """A parquet column as `(N,)` (scalar columns) or `(N, *shape)` (fixed or variable lists)."""
    array = column.combine_chunks()
    inner_shape: list[int] = []
    count = n_rows
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type):
        array = pc.list_flatten(array)
        width = len(array) // count if count else 0
        inner_shape.append(width)
        count *= width
    values = array.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(n_rows, *inner_shape))


def checked_index(idx: int, n: int) -> int:
    """`idx` as a position in `range(n)` (negative ones count from the end); IndexError outside it."""
    idx = int(idx)
    if idx < 0:
        idx += n
    if not 0 <= idx < n:
        raise IndexError(f"index {idx} out of range for a dataset of {n} frames")
    return idx


class _VideoCache:
    """Decoded frames of one video file: `<stem>-<size>-<mtime_ns>.frames.npy` + `.times.npy`.

    The size+mtime stamp in the name makes a re-encoded or re-downloaded video miss the cache;
    files are written under a unique temporary name and moved into place with `os.replace`, so
    concurrent builders (DDP ranks, two runs) never see a half-written cache.
    """

    def __init__(self, video_path: Path, cache_dir: Path, name: str | None = None):
        self.video_path = video_path
        st = video_path.stat()
        self.stem = name or video_path.stem
        self.dir = cache_dir
        base = cache_dir / f"{self.stem}-{st.st_size}-{st.st_mtime_ns}"
        self.frames_path = base.with_name(base.name + ".frames.npy")
        self.times_path = base.with_name(base.name + ".times.npy")

    def exists(self) -> bool:
        return self.frames_path.is_file() and self.times_path.is_file()

    def build(self) -> None:
        """Decodes straight into a temporary `.npy` (flat memory), then moves it into place."""
        tmp = {p: p.with_name(f".{p.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp") for p in (self.frames_path,
                                                                                          self.times_path)}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self.dir.glob(f"{self.stem}-*.npy"):
                if stale not in (self.frames_path, self.times_path):
                    stale.unlink(missing_ok=True)
            import av  # here, not at import: datasets without videos load where PyAV is absent

            try:
                times = decode_video_to_npy(self.video_path, tmp[self.frames_path])
            except (av.error.FFmpegError, IndexError) as e:
                raise DatasetError(f"{self.video_path}: cannot be decoded ({e}); re-download the file") from e
            with open(tmp[self.times_path], "wb") as f:
                np.save(f, times)
            # times first: a frames file only ever exists next to its times file.
            os.replace(tmp[self.times_path], self.times_path)
            os.replace(tmp[self.frames_path], self.frames_path)
        except OSError as e:
            raise DatasetError(
                f"{self.dir}: cannot write the decoded-frame cache ({e}); pass cache_dir= a writable folder"
            ) from e
        finally:
            for path in tmp.values():
                path.unlink(missing_ok=True)

    def times(self) -> np.ndarray:
        return np.load(self.times_path)

    def frame_shape(self) -> tuple[int, ...]:
        return np.load(self.frames_path, mmap_mode="r").shape[1:]


class LeRobotDataset(torch.utils.data.Dataset):
    """Frames of a LeRobotDataset v2.x or v3.0 as dicts of tensors.

    `episodes` selects a subset, in the order given: item 0 is the first frame of its first episode.
    `delta_timestamps` `{key: [seconds]}` returns, for those keys, the frames at those offsets
    stacked `(T, ...)` plus a `"<key>_is_pad"` mask; offsets outside the episode copy its edge
    frame. `image_transforms` is called on every `(C, H, W)` float frame. With `uint8_images` frames
    stay uint8, as stored, for the caller to convert and augment (data/device_images.py). `video_backend` is
    accepted for LeRobot compatibility; "pyav" is the one backend (it fills the frame cache).
    """

    def __init__(
        self,
        root: str | Path,
        episodes: list[int] | None = None,
        delta_timestamps: dict[str, list[float]] | None = None,
        image_transforms: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tolerance_s: float = 1e-4,
        video_backend: str = "pyav",
        cache_dir: str | Path | None = None,
        uint8_images: bool = False,
    ):
        if uint8_images and image_transforms is not None:
            raise ValueError("uint8_images=True hands frames over unconverted; apply image_transforms after the "
                             "conversion (data/device_images.py), not in the dataset")
        if video_backend != "pyav":
            raise ConfigError(f"dataset.video_backend={video_backend!r} is not available: frames are decoded once, with "
                              "PyAV, into the memory-mapped frame cache, so the backend does not set the training "
                              "speed; use dataset.video_backend=pyav")
        self.meta = LeRobotDatasetMetadata(root)
        self.root = self.meta.root
        self.fps = self.meta.fps
        self.features = self.meta.features
        self.tolerance_s = tolerance_s
        self.image_transforms = image_transforms
        self.uint8_images = uint8_images
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else self.root / CACHE_SUBDIR

        self.episodes = self._select_episodes(episodes)
        self.delta_timestamps = delta_timestamps
        self.delta_indices = self._delta_indices(delta_timestamps)

        self._load_tables()
        self._load_videos()
        self._load_images()
        self._mmaps: dict[str, np.ndarray] = {}
        self._mmaps_pid = os.getpid()

    def _select_episodes(self, episodes: list[int] | None) -> list[int]:
        if episodes is None:
            return list(self.meta.episodes)
        if len(episodes) == 0:
            raise DatasetError("dataset.episodes=[] selects nothing; pass null for all episodes")
        unknown = [e for e in episodes if e not in self.meta.episodes]
        if unknown:
            raise DatasetError(
                f"episodes {unknown} are not in {self.root / self.meta.episodes_file} "
                f"(it has {len(self.meta.episodes)} episodes, "
                f"indices {min(self.meta.episodes)}..{max(self.meta.episodes)})"
            )
        return [int(e) for e in episodes]

    def _delta_indices(self, delta_timestamps: dict[str, list[float]] | None) -> dict[str, np.ndarray]:
        """Frame offsets of each delta; every delta must land on a frame (a multiple of 1/fps)."""
        if not delta_timestamps:
            return {}
        out = {}
        for key, deltas in delta_timestamps.items():
            if key not in self.features:
                raise DatasetError(
                    f"delta_timestamps key {key!r} is not a feature of {self.root} (features: {list(self.features)})"
                )
            offsets = []
            for d in deltas:
                n = round(d * self.fps)
                if abs(d - n / self.fps) > self.tolerance_s:
                    raise DatasetError(
                        f"delta_timestamps[{key!r}] has {d} s, which is not a multiple of 1/fps = {1 / self.fps:.6g} s "
                        f"(fps={self.fps}) within tolerance_s={self.tolerance_s}; use multiples of 1/fps"
                    )
                offsets.append(n)
            out[key] = np.asarray(offsets, dtype=np.int64)
        return out

    def _load_tables(self) -> None:
        """Read the selected episodes' rows (each data file once), check them against the episode list
        and fps."""
        columns = [k for k, ft in self.features.items() if ft["dtype"] != "video"]
        files: dict[Path, pa.Table] = {}
        tables, lengths = [], []
        for ep in self.episodes:
            path = self.meta.get_data_file_path(ep)
            if path not in files:
                files[path] = self._read_data_file(path, ep, columns)
            table = files[path]
            expected = int(self.meta.episodes[ep]["length"])
            rows = self.meta.episode_rows(ep)
            if rows is not None:
                table = self._episode_slice(table, path, ep, *rows)
            if table.num_rows != expected:
                raise DatasetError(
                    f"{path}: {table.num_rows} rows but {self.meta.episodes_file} says episode {ep} has length "
                    f"{expected}; re-download the dataset"
                )
            tables.append(table.select(columns))
            lengths.append(expected)
        table = pa.concat_tables(tables, promote_options="permissive")

        self._lengths = np.asarray(lengths, dtype=np.int64)
        self._ep_end = np.cumsum(self._lengths)
        self._ep_start = self._ep_end - self._lengths
        self._row_ep = np.repeat(np.arange(len(self.episodes)), self._lengths)
        n = int(self._lengths.sum())

        self._columns: dict[str, np.ndarray] = {}
        self._png: dict[str, list[dict]] = {}  # image cells {bytes, path} until _load_images caches them
        for key in columns:
            if self.features[key]["dtype"] == "image":
                column = table.column(key).combine_chunks()
                self._png[key] = [{"bytes": b, "path": p} for b, p in zip(
                    column.field("bytes").to_pylist(),
                    column.field("path").to_pylist() if column.type.get_field_index("path") >= 0 else [None] * n)]
            elif self.features[key]["dtype"] != "string":
                self._columns[key] = _column_to_numpy(table.column(key), n)
            else:
                self._columns[key] = np.asarray(table.column(key).to_pylist(), dtype=object)
        self._check_timestamps()
        if "task_index" in self._columns:
            unknown = sorted(set(np.unique(self._columns["task_index"]).tolist()) - set(self.meta.tasks))
            if unknown:
                raise DatasetError(
                    f"{self.root / (lerobot_v3.TASKS_PATH if self.meta.is_v3 else TASKS_PATH)}: task_index {unknown} "
                    f"used by the parquets is not listed; "
                    f"re-download the dataset"
                )

    def _read_data_file(self, path: Path, ep: int, columns: list[str]) -> pa.Table:
        if not path.is_file():
            raise DatasetError(
                f"{path} missing: episode {ep} is listed in {self.meta.episodes_file} but has no parquet; "
                f"re-download the dataset (or pass episodes= without it)"
            )
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as e:
            raise DatasetError(f"{path}: unreadable parquet ({e}); re-download the file") from e
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: columns {missing} of {INFO_PATH} features are missing; re-download the file")
        return table

    def _episode_slice(self, table: pa.Table, path: Path, ep: int, start: int, stop: int) -> pa.Table:
        """Rows `[start, stop)` (global `index` values) of a v3.0 data file holding several episodes."""
        if "index" not in table.column_names:
            raise DatasetError(f"{path}: no 'index' column, so episode {ep}'s frames cannot be located; re-download")
        index = table.column("index")
        first = int(index[0].as_py()) if table.num_rows else 0
        if start < first or stop > first + table.num_rows or stop < start:
            raise DatasetError(
                f"{path}: episode {ep} spans frames {start}..{stop} ({self.meta.episodes_file}) but the file holds "
                f"frames {first}..{first + table.num_rows}; the episode table and the data disagree, re-download"
            )
        piece = table.slice(start - first, stop - start)
        got = piece.column("index").to_numpy()
        has_ep = "episode_index" in piece.column_names
        eps = piece.column("episode_index").to_numpy() if has_ep else np.full(len(got), ep)
        if not (np.array_equal(got, np.arange(start, stop)) and np.all(eps == ep)):
            raise DatasetError(
                f"{path}: rows for frames {start}..{stop} are not episode {ep}'s consecutive frames "
                f"({self.meta.episodes_file} disagrees with the file); re-download the dataset"
            )
        return piece

    def _check_timestamps(self) -> None:
        if "timestamp" not in self._columns:
            raise DatasetError(
                f"{self.root / INFO_PATH}: no 'timestamp' feature; a LeRobot v2 dataset needs one per frame"
            )
        ts = self._columns["timestamp"].astype(np.float64).reshape(-1)
        period = 1 / self.fps
        for pos, ep in enumerate(self.episodes):
            ep_ts = ts[self._ep_start[pos] : self._ep_end[pos]]
            bad = np.flatnonzero(np.abs(np.diff(ep_ts) - period) > self.tolerance_s)
            if bad.size:
                i = int(bad[0])
                raise DatasetError(
                    f"{self.meta.get_data_file_path(ep)}: timestamps inconsistent with fps={self.fps}: frames {i} and "
                    f"{i + 1} are at {ep_ts[i]:.6f} s and {ep_ts[i + 1]:.6f} s, {ep_ts[i + 1] - ep_ts[i]:.6f} s apart "
                    f"instead of {period:.6f} s (tolerance_s={self.tolerance_s}); fix info.json's fps or the data"
                )

    def _load_videos(self) -> None:
        """Decode (or find cached) every needed video once and map each row to a frame of it."""
        self._video_caches: dict[str, list[Path]] = {}
        self._video_frame: dict[str, np.ndarray] = {}
        caches: dict[Path, _VideoCache] = {}
        spans = []
        for key in self.meta.video_keys:
            for pos, ep in enumerate(self.episodes):
                path = self.meta.get_video_file_path(ep, key)
                if not path.is_file():
                    raise DatasetError(
                        f"{path} missing: episode {ep} has no '{key}' video; re-download the dataset's videos/ folder"
                    )
                if path not in caches:
                    # v3.0 names files chunk-XXX/file-XXX per camera: the chunk keeps cache names apart
                    name = f"{path.parent.name}.{path.stem}" if self.meta.is_v3 else None
                    caches[path] = _VideoCache(path, self.cache_dir / key, name)
                spans.append((key, pos, caches[path], *self.meta.episode_video_span(ep, key)))
        todo = [c for c in caches.values() if not c.exists()]
        for cache in tqdm(todo, desc=f"decoding videos into {self.cache_dir}", disable=len(todo) < 10, leave=False):
            cache.build()

        ts = self._columns["timestamp"].astype(np.float64).reshape(-1)
        for key in self.meta.video_keys:
            self._video_caches[key] = []
            self._video_frame[key] = np.empty(len(ts), dtype=np.int64)
        expected_shape = {k: visual_chw_shape(k, self.features[k]) for k in self.meta.video_keys}
        checked: set[Path] = set()
        times: dict[Path, np.ndarray] = {}
        for key, pos, cache, from_ts, to_ts in spans:
            if cache.video_path not in checked:
                shape = cache.frame_shape()
                if tuple(shape) != expected_shape[key]:
                    raise DatasetError(
                        f"{cache.video_path}: frames are {list(shape)} (C, H, W) but {INFO_PATH} says {key} is "
                        f"{self.features[key]['shape']}; fix info.json or re-encode the video"
                    )
                checked.add(cache.video_path)
                times[cache.video_path] = cache.times()
            rows = slice(self._ep_start[pos], self._ep_end[pos])
            self._video_frame[key][rows] = self._match_frames(
                cache, times[cache.video_path], ts[rows], self.episodes[pos], from_ts, to_ts
            )
            self._video_caches[key].append(cache.frames_path)

    def _match_frames(
        self, cache: _VideoCache, times: np.ndarray, ep_ts: np.ndarray, ep: int, from_ts: float, to_ts: float | None
    ) -> np.ndarray:
        """Index of the video frame at each row's timestamp (shifted by the episode's offset in a
        shared v3.0 video), within tolerance_s."""
        length = len(ep_ts)
        if to_ts is None and len(times) < length:
            raise DatasetError(
                f"{cache.video_path}: truncated, {len(times)} frames but episode {ep} has {length} "
                f"({self.meta.episodes_file}); re-download or re-encode the video"
            )
        if to_ts is not None:
            end = float(times[-1]) + 1 / self.fps if len(times) else 0.0
            if end < to_ts - self.tolerance_s:
                raise DatasetError(
                    f"{cache.video_path}: the video ends at {end:.6f} s ({len(times)} frames) but episode {ep} "
                    f"ends at to_timestamp {to_ts:.6f} s ({self.meta.episodes_file}); re-download or re-encode it"
                )
        ep_ts = ep_ts + from_ts
        right = np.searchsorted(times, ep_ts)
        lo, hi = np.clip(right - 1, 0, len(times) - 1), np.clip(right, 0, len(times) - 1)
        nearest = np.where(np.abs(times[lo] - ep_ts) <= np.abs(times[hi] - ep_ts), lo, hi)
        err = np.abs(times[nearest] - ep_ts)
        bad = np.flatnonzero(err > self.tolerance_s)
        if bad.size:
            i = int(bad[0])
            raise DatasetError(
                f"{cache.video_path}: no frame at timestamp {ep_ts[i]:.6f} s (frame {i} of episode {ep}); "
                f"the nearest is at {times[nearest[i]]:.6f} s, beyond tolerance_s={self.tolerance_s}; "
                f"the video does not match the parquet timestamps, re-encode it at fps={self.fps}"
            )
        return nearest

    def __len__(self) -> int:
        return len(self._row_ep)

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def episode_lengths(self) -> list[int]:
        """Frame counts of the selected episodes, in the order their frames are indexed."""
        return [int(n) for n in self._lengths]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_mmaps"] = {}
        return state

    def _frames(self, key: str, rows: np.ndarray) -> np.ndarray:
        """uint8 `(len(rows), C, H, W)` frames of a video key; all rows are in one episode."""
        pos = int(self._row_ep[rows[0]])
        return self._mmap(self._video_caches[key][pos])[self._video_frame[key][rows]]

    def _mmap(self, path: Path) -> np.ndarray:
        """The memory map of a cache file, opened once per process (a forked worker opens its own)."""
        if self._mmaps_pid != os.getpid():
            self._mmaps, self._mmaps_pid = {}, os.getpid()
        mm = self._mmaps.get(str(path))
        if mm is None:
            mm = self._mmaps[str(path)] = np.load(path, mmap_mode="r")
        return mm

    def _load_images(self) -> None:
        """Image features (PNG in the parquet, or a path to an image file) are decoded once into a
        memory-mapped uint8 `(N, C, H, W)` cache, like videos, so a training step never decodes PNGs.
        The cache is keyed by the selected episodes and their parquets' sizes and mtimes."""
        self._image_cache: dict[str, Path] = {}
        if not self._png:
            return
        def digest(obj) -> str:
            return hashlib.blake2b(json.dumps(obj).encode(), digest_size=6).hexdigest()

        files = sorted({self.meta.get_data_file_path(ep) for ep in self.episodes})
        selection = digest(self.episodes)
        stamp = digest([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])
        for key, cells in self._png.items():
            path = self.cache_dir / key / f"images-{selection}-{stamp}.npy"
            if not path.is_file():
                self._build_image_cache(key, cells, path)
            frames = np.load(path, mmap_mode="r")
            if tuple(frames.shape[1:]) != visual_chw_shape(key, self.features[key]):
                raise DatasetError(f"{self.root}: '{key}' images are {list(frames.shape[1:])} (C, H, W) but {INFO_PATH} "
                                   f"says {self.features[key]['shape']}; fix info.json or the images")
            self._image_cache[key] = path
        self._png = {}  # served from the cache from now on

    def _build_image_cache(self, key: str, cells: list[dict], path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            selection = path.name.split("-")[1]
            for stale in path.parent.glob(f"images-{selection}-*.npy"):  # this selection, older parquets
                stale.unlink(missing_ok=True)
            first = self._decode_image(key, 0, cells[0])
            out = np.lib.format.open_memmap(str(tmp), mode="w+", dtype=np.uint8, shape=(len(cells), *first.shape))
            out[0] = first
            for row in tqdm(range(1, len(cells)), desc=f"decoding '{key}' images into {path.parent}",
                            disable=len(cells) < 5000, leave=False):
                out[row] = self._decode_image(key, row, cells[row], first.shape)
            out.flush()
            del out
            os.replace(tmp, path)
        except OSError as e:
            raise DatasetError(f"{path.parent}: cannot write the decoded-frame cache ({e}); pass cache_dir= a "
                               "writable folder") from e
        finally:
            tmp.unlink(missing_ok=True)

    def _decode_image(self, key: str, row: int, cell: dict, shape: tuple | None = None) -> np.ndarray:
        """`(C, H, W)` uint8 of one image cell: its PNG bytes, or the image file its path names."""
        try:
            if cell["bytes"] is not None:
                img = Image.open(io.BytesIO(cell["bytes"]))
            elif cell["path"]:
                img = Image.open(self.root / cell["path"])
            else:
                raise DatasetError(f"{self.root}: frame {row} of '{key}' has neither PNG bytes nor a path; "
                                   "re-download the dataset")
            out = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            raise DatasetError(f"{self.root}: frame {row} of '{key}' is not a readable image ({e}); "
                               "re-download the dataset") from e
        if shape is not None and out.shape != tuple(shape):
            raise DatasetError(f"{self.root}: frame {row} of '{key}' is {list(out.shape)} (C, H, W), unlike frame 0's "
                               f"{list(shape)}; the images of one key must share a size")
        return out

    def _images(self, frames: np.ndarray) -> torch.Tensor:
        images = torch.from_numpy(np.ascontiguousarray(frames))
        if self.uint8_images:
            return images
        images = images.to(torch.float32).div_(255)
        if self.image_transforms is not None:
            images = torch.stack([self.image_transforms(img) for img in images])
        return images

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor | str]:
        idx = checked_index(idx, len(self))
        pos = int(self._row_ep[idx])
        start, end = int(self._ep_start[pos]), int(self._ep_end[pos])
        item: dict[str, torch.Tensor | str] = {}
        for key in self.features:
            dtype = self.features[key]["dtype"]
            if dtype == "string":
                item[key] = self._columns[key][idx]
                continue
            if key in self.delta_indices:
                wanted = idx + self.delta_indices[key]
                rows = np.clip(wanted, start, end - 1)
                item[f"{key}_is_pad"] = torch.from_numpy((wanted < start) | (wanted >= end))
            else:
                rows = np.asarray([idx])
            if dtype == "video":
                value = self._images(self._frames(key, rows))
            elif dtype == "image":
                value = self._images(self._mmap(self._image_cache[key])[rows])
            else:
                value = torch.from_numpy(np.ascontiguousarray(self._columns[key][rows]))
            item[key] = value if key in self.delta_indices else value[0]
        if "task_index" in self._columns:
            item["task"] = self.meta.tasks[int(self._columns["task_index"][idx])]
        return item

    def __repr__(self) -> str:
        return (
            f"LeRobotDataset(root={str(self.root)!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
            f"fps={self.fps}, cameras={self.meta.camera_keys})"
        )

