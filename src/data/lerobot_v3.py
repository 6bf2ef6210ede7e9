"""LeRobotDataset v3.0 (LeRobot >= 0.4): many episodes per parquet and per mp4, episodes in parquet.

Layout (paths relative to the dataset root):
    meta/info.json                               as v2.1, plus data_files_size_in_mb, video_files_size_in_mb
    meta/episodes/chunk-XXX/file-XXX.parquet     one row per episode: episode_index, tasks, length,
                                                 data/chunk_index, data/file_index, dataset_from_index,
                                                 dataset_to_index, videos/<key>/{chunk_index, file_index,
                                                 from_timestamp, to_timestamp}, meta/episodes/{chunk_index,
                                                 file_index}, stats/<feature>/<min|max|mean|std|count>
    meta/tasks.parquet                           task_index column, the task strings as the pandas index "task"
    meta/stats.json                              dataset-wide stats
    data/chunk-XXX/file-XXX.parquet              the frames of consecutive episodes; `index` is global
    videos/<key>/chunk-XXX/file-XXX.mp4          consecutive episodes; an episode's frame i is at
                                                 from_timestamp + i / fps

A file is closed and the next one started when it would pass its size limit; after `chunks_size`
files the chunk index advances. These facts follow LeRobot's own code (lerobot/datasets/utils.py and
lerobot_dataset.py of the v3.0 codebase: path templates, episode columns, `update_chunk_file_indices`,
tasks written from a DataFrame indexed by task). Not verified there: whether hub copies always name
the tasks index "task" (LeRobot's own writer leaves it unnamed, its loaders rename it), so the reader
also accepts pandas' unnamed-index column.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.errors import DatasetError
from data.video import _CODEC_OPTIONS, VIDEO_CODEC, VIDEO_PIX_FMT, _fps_fraction

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = EPISODES_DIR + "/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
TASKS_PATH = "meta/tasks.parquet"
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500

_EPISODE_COLUMNS = ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                    "dataset_to_index")
_VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
_PANDAS_INDEX = "__index_level_0__"


def next_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: a chunk holds `chunks_size` files."""
    if file_index + 1 >= chunks_size:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


# ----------------------------------------------------------------------------- reading
def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"{path}: unreadable parquet ({e}); re-download the file") from e


def load_episodes(root: Path, video_keys: list[str]) -> tuple[dict[int, dict], dict[int, dict]]:
    """Episode rows (without stats) and per-episode stats, both keyed by episode_index."""
    paths = sorted((root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not paths:
        raise DatasetError(
            f"{root / EPISODES_DIR}: no chunk-*/file-*.parquet, so a v3.0 dataset has no episode list; "
            f"re-download the dataset's meta/ folder"
        )
    required = [*_EPISODE_COLUMNS, *(f"videos/{k}/{c}" for k in video_keys for c in _VIDEO_COLUMNS)]
    episodes: dict[int, dict] = {}
    stats: dict[int, dict] = {}
    for path in paths:
        table = _read_parquet(path)
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise DatasetError(f"{path}: columns {missing} missing from the episode table; re-download meta/")
        stat_columns = [c for c in table.column_names if c.startswith("stats/")]
        rows = table.drop_columns(stat_columns).to_pylist()
        stat_values = {c: table.column(c).to_pylist() for c in stat_columns}
        for i, row in enumerate(rows):
            ep = int(row["episode_index"])
            episodes[ep] = row
            ep_stats: dict[str, dict[str, np.ndarray]] = {}
            for column, values in stat_values.items():
                if values[i] is None:
                    continue
                key, stat = column[len("stats/"):].rsplit("/", 1)
                dtype = np.int64 if stat == "count" else np.float64
                ep_stats.setdefault(key, {})[stat] = np.asarray(values[i], dtype=dtype)
            stats[ep] = ep_stats
    return episodes, stats


def load_tasks(root: Path) -> dict[int, str]:
    path = root / TASKS_PATH
    if not path.is_file():
        raise DatasetError(f"{path} missing: task_index cannot be resolved; re-download the dataset's meta/ folder")
    table = _read_parquet(path)
    text = next((c for c in ("task", _PANDAS_INDEX) if c in table.column_names), None)
    if "task_index" not in table.column_names or text is None:
        raise DatasetError(
            f"{path}: expected a task_index column and the task strings as column or index 'task', got columns "
            f"{table.column_names}; re-download the dataset"
        )
    return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(), table.column(text).to_pylist())}


# ----------------------------------------------------------------------------- writing
def write_tasks(path: Path, tasks: dict[str, int]) -> None:
    """meta/tasks.parquet as LeRobot's pandas writes it: task_index, and the tasks as index "task"."""
    names = sorted(tasks, key=tasks.get)
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
    }
    table = pa.table({"task_index": pa.array([tasks[t] for t in names], pa.int64()), "task": pa.array(names)})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)


def write_episodes(path: Path, rows: list[dict]) -> None:
    """meta/episodes/chunk-000/file-000.parquet; stats are flattened to `stats/<feature>/<stat>` columns."""
    flat = []
    for row in rows:
        row = dict(row)
        for key, ft_stats in row.pop("stats").items():
            for stat, value in ft_stats.items():
                row[f"stats/{key}/{stat}"] = np.asarray(value).tolist()
        flat.append({**row, "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(flat), path)


class VideoFileEncoder:
    """One mp4 that episodes are appended to: frame pts continue across episodes, so an episode's
    frame i lands at from_timestamp + i / fps, with the encoder settings of `data.video`."""

    def __init__(self, path: Path, fps: float, height: int, width: int):
        self.path = path
        self.rate = _fps_fraction(fps)
        self.frames = 0
        self.bytes = 0
        import av  # here, not at import: datasets without videos are written where PyAV is absent

        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), "w")
        self._stream = self._container.add_stream(VIDEO_CODEC, rate=self.rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, VIDEO_PIX_FMT
        self.time_base = Fraction(1) / self.rate  # kept: the muxer may rewrite the stream's own time_base
        self._stream.time_base = self.time_base
        self._stream.options = {**_CODEC_OPTIONS, "g": str(max(1, round(float(self.rate))))}

    def _mux(self, packets) -> None:
        for packet in packets:
            self.bytes += packet.size
            self._container.mux(packet)

    def append(self, frames: np.ndarray) -> tuple[float, float]:
        """Encode uint8 `(N, H, W, 3)` frames; returns the episode's (from_timestamp, to_timestamp)."""
        import av  # loaded by __init__ already: a lookup

        start = self.frames
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = self.frames, self.time_base
            self._mux(self._stream.encode(frame))
            self.frames += 1
        return float(start / self.rate), float(self.frames / self.rate)

    def close(self) -> None:
        if self._container is not None:
            self._mux(self._stream.encode())
            self._container.close()
            self._container = None


class FileAppender:
    """Where the v3.0 writer puts each episode: appended to the current data parquet and to the
    current mp4 of each camera, moving to the next (chunk, file) when the file would pass its size
    limit (parquet: the in-memory Arrow size, as LeRobot measures it; mp4: bytes muxed so far plus the
    episode's estimate at the file's bytes per frame, since the encoder holds back a few frames)."""

    def __init__(self, root: Path, fps: float, video_shapes: dict[str, list[int]], chunks_size: int,
                 data_files_size_in_mb: float, video_files_size_in_mb: float):
        self.root, self.fps, self.chunks_size = root, fps, chunks_size
        self.video_shapes = video_shapes
        self.data_limit = data_files_size_in_mb * 1024**2
        self.video_limit = video_files_size_in_mb * 1024**2
        self._data_file = (0, 0)
        self._data_writer: pq.ParquetWriter | None = None
        self._data_bytes = 0
        self._video_file = {key: (0, 0) for key in video_shapes}
        self._encoders: dict[str, VideoFileEncoder] = {}

    def append(self, table: pa.Table, videos: dict[str, np.ndarray], from_index: int) -> dict:
        """Write one episode; returns its location columns for the episode table."""
        if self._data_writer is not None and self._data_bytes + table.nbytes > self.data_limit:
            self._data_writer.close()
            self._data_writer = None
            self._data_file = next_file(*self._data_file, self.chunks_size)
        if self._data_writer is None:
            chunk, file = self._data_file
            path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(path, table.schema)
            self._data_bytes = 0
        self._data_writer.write_table(table)
        self._data_bytes += table.nbytes
        location = {
            "data/chunk_index": self._data_file[0],
            "data/file_index": self._data_file[1],
            "dataset_from_index": from_index,
            "dataset_to_index": from_index + table.num_rows,
        }
        for key, frames in videos.items():
            encoder = self._encoders.get(key)
            if encoder is not None and encoder.bytes + encoder.bytes / encoder.frames * len(frames) > self.video_limit:
                encoder.close()
                del self._encoders[key]
                self._video_file[key] = next_file(*self._video_file[key], self.chunks_size)
            if key not in self._encoders:
                chunk, file = self._video_file[key]
                height, width, _ = self.video_shapes[key]
                path = self.root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
                self._encoders[key] = VideoFileEncoder(path, self.fps, height, width)
            from_ts, to_ts = self._encoders[key].append(frames)
            location.update({
                f"videos/{key}/chunk_index": self._video_file[key][0],
                f"videos/{key}/file_index": self._video_file[key][1],
                f"videos/{key}/from_timestamp": from_ts,
                f"videos/{key}/to_timestamp": to_ts,
            })
        return location

    def close(self) -> None:
        """Finish every open file (an mp4 is only readable once its encoder is flushed)."""
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        for encoder in self._encoders.values():
            encoder.close()
        self._encoders.clear()
