"""The online buffer: frames of a policy's own rollouts, on disk, in the LeRobotDataset layout.

Each rollout's episodes are written once, as one *chunk*: a folder of `.npy` files, one per feature,
`(frames, *shape)` in the dataset's dtypes (camera images uint8 `[H, W, C]`), read back through
memory maps, so the buffer can hold more frames than fit in RAM. A chunk is never changed after it is
renamed into place. The buffer keeps the newest `capacity` frames (first in, first out): eviction
moves `head`, the global index of the oldest frame kept, and deletes a chunk once all of its frames
are behind it. Bookkeeping columns (index, episode_index, frame_index, timestamp, task_index) are
not stored: they follow from the chunk list, which is small integers (`state_dict()`).

Because chunks never change, a checkpoint holds the buffer as hard links to them (`checkpoint_files()`,
SHA-256 included in the checkpoint's manifest), costing no copy, and a resume rebuilds the live folder
from the checkpoint's chunks (`load_state_dict`): frames a killed run wrote after its checkpoint are
dropped and the buffer is exactly what it was at the checkpoint. Everything read back is data: chunk
folders are named from integers, files are opened with `allow_pickle=False` and their dtype and shape
must be what the run's features say.

Every episode ends with its final observation (LeRobot's online layout): an episode of n env steps
has n + 1 frames, the last one's action and `next.*` copy the step before. In a sample's window that
frame counts as padding for every key but the observations, and no sample starts on it.

Written by hand: no library keeps an episode-aware, memory-mapped FIFO of LeRobot frames (LeRobot's
own OnlineBuffer is one fixed-size memmap that a checkpoint cannot snapshot without a copy).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from data.errors import DatasetError
from data.features import DEFAULT_FEATURES, is_visual

# Storage dtypes a feature may have (images are uint8); anything else in a saved spec is refused.
STORAGE_DTYPES = ("uint8", "float32", "float64", "bool", "int64", "int32")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")  # a feature name that is also a safe file name
FOLDER = "online_buffer"


class OnlineBufferError(DatasetError):
    """A buffer folder or saved buffer state that does not fit the run; the message names the file."""


def chunk_name(chunk_id: int) -> str:
    return f"chunk-{int(chunk_id):08d}"


def storage(feature: Mapping) -> tuple[str, tuple[int, ...]]:
    """(numpy dtype, per-frame array shape) a feature is stored with: images uint8 [H, W, C], a `[1]`
    feature as one value per frame (as the dataset's parquet columns hold it)."""
    shape = tuple(int(d) for d in feature["shape"])
    if is_visual(feature):
        return "uint8", shape
    return str(feature["dtype"]), () if shape == (1,) else shape


def check_features(features: Mapping[str, Mapping], where: str) -> dict[str, dict]:
    """A feature spec as plain data, each key a safe file name and each dtype a storage dtype."""
    out: dict[str, dict] = {}
    if not isinstance(features, Mapping) or not features:
        raise OnlineBufferError(f"{where}: the online buffer's features must be a non-empty mapping")
    for key, ft in features.items():
        if not isinstance(key, str) or not _KEY.match(key) or key in DEFAULT_FEATURES:
            raise OnlineBufferError(f"{where}: {key!r} cannot be an online buffer feature")
        try:
            dtype, shape = str(ft["dtype"]), [int(d) for d in ft["shape"]]
        except (KeyError, TypeError, ValueError):
            raise OnlineBufferError(f"{where}: feature {key!r} needs a dtype and a shape of integers") from None
        if dtype not in (*STORAGE_DTYPES, "image", "video") or any(d < 1 for d in shape):
            raise OnlineBufferError(f"{where}: feature {key!r} has dtype {dtype!r} and shape {shape}, which the "
                                    "online buffer does not store")
        out[key] = {"dtype": dtype, "shape": shape}
    return out


class _HashingWriter:
    """A file being written that also hashes what goes through it (numpy writes the header through it)."""

    def __init__(self, fh):
        self.fh, self.digest = fh, hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.fh.write(data)


def write_chunk(folder: Path, chunk_id: int, features: Mapping[str, Mapping],
                episodes: Sequence[Mapping[str, np.ndarray]]) -> dict:
    """Writes one rollout's episodes as chunk `chunk_id` under `folder` (a temporary folder renamed into
    place, files fsynced) and returns `{"id", "lengths", "files": {relative path: (sha256, bytes)}}`.
    Module-level so that an async rollout process writes its own chunks."""
    if not episodes:
        raise ValueError("write_chunk: no episodes")
    lengths = []
    for i, episode in enumerate(episodes):
        n = {key: len(episode[key]) for key in features if key in episode}
        missing = [key for key in features if key not in episode]
        if missing or len(set(n.values())) != 1:
            raise ValueError(f"write_chunk: episode {i} lacks {missing} or its keys differ in length ({n})")
        lengths.append(next(iter(n.values())))
    final = Path(folder) / chunk_name(chunk_id)
    tmp = Path(folder) / f".tmp-{chunk_name(chunk_id)}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    files = {}
    try:
        total = sum(lengths)
        for key, ft in features.items():
            dtype, shape = storage(ft)
            path = tmp / f"{key}.npy"
            with open(path, "wb") as fh:
                out = _HashingWriter(fh)  # the checksum of the bytes as written: no second read
                np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                           "fortran_order": False, "shape": (total, *shape)})
                for episode, n in zip(episodes, lengths):
                    out.write(np.ascontiguousarray(np.asarray(episode[key]).reshape(n, *shape), dtype=dtype).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            files[f"{chunk_name(chunk_id)}/{key}.npy"] = (out.digest.hexdigest(), path.stat().st_size)
        shutil.rmtree(final, ignore_errors=True)  # a chunk of this id left by a run killed before its checkpoint
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"id": int(chunk_id), "lengths": lengths, "files": files}


@dataclass
class _Chunk:
    id: int
    first_index: int  # global online index of its first frame
    first_episode: int
    lengths: list[int]

    @property
    def end(self) -> int:
        return self.first_index + sum(self.lengths)


class OnlineBuffer(torch.utils.data.Dataset):
    """The frames of the online phase's rollouts, first in first out, `capacity` frames (None: all).

    `features`: LeRobot `info.json` entries of the stored keys (observations, action, next.*).
    `delta_indices` `{key: frame offsets}` and `drop_n_last_frames` are the policy's, as for the offline
    dataset: `item(index)` returns what `LeRobotDataset[i]` returns for the same frame layout, windows
    and `*_is_pad` masks included, and `image_transforms` apply to its images (or, with `uint8_images`,
    images stay uint8 as stored, for the caller to convert and augment: data/device_images.py).
    """

    def __init__(self, folder: str | Path | None, features: Mapping[str, Mapping], capacity: int | None, fps: float,
                 delta_indices: Mapping[str, Sequence[int]] | None = None, drop_n_last_frames: int = 0,
                 image_transforms: Callable[[torch.Tensor], torch.Tensor] | None = None, task: str = "",
                 uint8_images: bool = False):
        if uint8_images and image_transforms is not None:
            raise ValueError("uint8_images=True hands frames over unconverted; apply image_transforms after the "
                             "conversion (data/device_images.py), not in the buffer")
        self.uint8_images = uint8_images
        self.folder = Path(folder) if folder is not None else None
        self.features = check_features(features, "the run's config")
        self.capacity, self.fps, self.task = capacity, float(fps), task
        self.delta_indices = {k: np.asarray(list(v), dtype=np.int64) for k, v in (delta_indices or {}).items()
                              if k in self.features}
        self.drop_n_last_frames = int(drop_n_last_frames)
        self.image_transforms = image_transforms
        self.head = self.next_index = self.next_episode = 0
        self.chunks: list[_Chunk] = []
        self.pending: dict[int, list[int]] = {}  # written chunks that are not in the buffer yet: id -> lengths
        self.hashes: dict[str, tuple[str, int]] = {}
        self._maps: dict[int, dict[str, np.ndarray]] = {}
        self._tables: dict | None = None

    # ------------------------------------------------------------------ writing
    def clear_folder(self) -> None:
        """An empty live folder (what a fresh run starts from)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)

    def write(self, chunk_id: int, episodes: Sequence[Mapping[str, np.ndarray]]) -> dict:
        info = write_chunk(self.folder, chunk_id, self.features, episodes)
        self.register(info)
        return info

    def register(self, info: Mapping) -> None:
        """Takes note of a chunk written into the folder (by `write`, or by a rollout process): pending until
        `append(id)` puts its frames in the buffer."""
        self.pending[int(info["id"])] = [int(n) for n in info["lengths"]]
        self.hashes.update({str(k): (str(v[0]), int(v[1])) for k, v in info["files"].items()})

    def append(self, chunk_id: int) -> None:
        """The pending chunk's episodes become the newest frames; the oldest beyond `capacity` are evicted."""
        lengths = self.pending.pop(int(chunk_id))
        self.chunks.append(_Chunk(int(chunk_id), self.next_index, self.next_episode, lengths))
        self.next_index += sum(lengths)
        self.next_episode += len(lengths)
        if self.capacity is not None:
            self.head = max(self.head, self.next_index - self.capacity)
        while self.chunks and self.chunks[0].end <= self.head:
            self._delete(self.chunks.pop(0).id)
        self._tables = None

    def _delete(self, chunk_id: int) -> None:
        self._maps.pop(chunk_id, None)
        prefix = chunk_name(chunk_id) + "/"
        self.hashes = {k: v for k, v in self.hashes.items() if not k.startswith(prefix)}
        if self.folder is not None:
            shutil.rmtree(self.folder / chunk_name(chunk_id), ignore_errors=True)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        """Frames in the buffer (final observations included)."""
        return self.next_index - self.head

    @property
    def num_episodes(self) -> int:
        return len(self._table()["ep_first"])

    @property
    def num_sampleable(self) -> int:
        return len(self._table()["starts"])

    def _table(self) -> dict:
        """Episode and chunk lookups of the frames in the buffer, rebuilt after each change."""
        if self._tables is None:
            ep_first, ep_end, ep_index, ep_chunk = [], [], [], []
            for c, chunk in enumerate(self.chunks):
                start = chunk.first_index
                for j, n in enumerate(chunk.lengths):
                    if start + n > self.head:
                        ep_first.append(start), ep_end.append(start + n)
                        ep_index.append(chunk.first_episode + j), ep_chunk.append(c)
                    start += n
            starts = [np.arange(max(f, self.head), e - 1 - self.drop_n_last_frames, dtype=np.int64)
                      for f, e in zip(ep_first, ep_end)]
            self._tables = {
                "ep_first": np.asarray(ep_first, dtype=np.int64), "ep_end": np.asarray(ep_end, dtype=np.int64),
                "ep_index": np.asarray(ep_index, dtype=np.int64), "ep_chunk": np.asarray(ep_chunk, dtype=np.int64),
                "starts": np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64),
            }
        return self._tables

    def sample(self, n: int, generator: torch.Generator) -> np.ndarray:
        """`n` global frame indices drawn uniformly, with replacement, among the frames a sample may start at."""
        starts = self._table()["starts"]
        if len(starts) == 0:
            raise RuntimeError("the online buffer holds no frame a sample can start at")
        return starts[torch.randint(len(starts), (n,), generator=generator).numpy()]

    def _map(self, chunk: _Chunk) -> dict[str, np.ndarray]:
        maps = self._maps.get(chunk.id)
        if maps is None:
            maps = self._maps[chunk.id] = {key: self._open(self.folder, chunk.id, key, sum(chunk.lengths))
                                           for key in self.features}
        return maps

    def _open(self, folder: Path, chunk_id: int, key: str, frames: int) -> np.ndarray:
        """A chunk file's memory map, checked against the feature it must hold."""
        path = folder / chunk_name(chunk_id) / f"{key}.npy"
        dtype, shape = storage(self.features[key])
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise OnlineBufferError(f"{path}: not a readable .npy file ({e})") from e
        if array.dtype != np.dtype(dtype) or array.shape != (frames, *shape):
            raise OnlineBufferError(f"{path}: holds {array.dtype} {list(array.shape)} where the buffer keeps "
                                    f"{dtype} {[frames, *shape]}")
        return array

    def __getitem__(self, index: int) -> dict:
        return self.item(index)

    def item(self, index: int) -> dict:
        """The frame of global index `index` as a dataset item (tensors; images float (C, H, W) in [0, 1])."""
        t = self._table()
        ep = int(np.searchsorted(t["ep_first"], index, side="right")) - 1
        if ep < 0 or not self.head <= index < t["ep_end"][ep]:
            raise IndexError(f"frame {index} is not in the online buffer (it holds {self.head}..{self.next_index - 1})")
        first, end = int(t["ep_first"][ep]), int(t["ep_end"][ep])
        low = max(first, self.head)
        chunk = self.chunks[int(t["ep_chunk"][ep])]
        maps = self._map(chunk)
        item: dict = {}
        for key, ft in self.features.items():
            stop = end if key.startswith("observation.") else end - 1  # the final frame holds only observations
            if key in self.delta_indices:
                wanted = index + self.delta_indices[key]
                item[f"{key}_is_pad"] = torch.from_numpy((wanted < low) | (wanted >= stop))
                rows = np.clip(wanted, low, stop - 1)
            else:
                rows = np.asarray([index])
            values = maps[key][rows - chunk.first_index]
            if is_visual(ft):
                value = torch.from_numpy(np.ascontiguousarray(values.transpose(0, 3, 1, 2)))
                if not self.uint8_images:
                    value = value.to(torch.float32).div_(255)
                if self.image_transforms is not None:
                    value = torch.stack([self.image_transforms(image) for image in value])
            else:
                value = torch.from_numpy(np.array(values))
            item[key] = value if key in self.delta_indices else value[0]
        frame_index = index - first
        item.update(timestamp=torch.tensor(frame_index / self.fps, dtype=torch.float32),
                    frame_index=torch.tensor(frame_index), episode_index=torch.tensor(int(t["ep_index"][ep])),
                    index=torch.tensor(index), task_index=torch.tensor(0), task=self.task)
        return item

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Plain integers, strings and lists (`torch.load(weights_only=True)` reads them)."""
        return {"features": self.features, "fps": self.fps, "task": self.task, "head": self.head,
                "next_index": self.next_index, "next_episode": self.next_episode,
                "chunks": [[c.id, c.first_index, c.first_episode, list(c.lengths)] for c in self.chunks],
                "pending": [[cid, list(lengths)] for cid, lengths in sorted(self.pending.items())]}

    def checkpoint_files(self) -> dict[str, tuple[Path, str, int]]:
        """`{path inside the checkpoint: (file, sha256, bytes)}` of every chunk the state names."""
        ids = [c.id for c in self.chunks] + sorted(self.pending)
        return {f"{FOLDER}/{rel}": (self.folder / rel, *self.hashes[rel]) for cid in ids
                for rel in (f"{chunk_name(cid)}/{key}.npy" for key in self.features)}

    def load_state_dict(self, state: Mapping, source: Path, listed: Mapping[str, tuple[str, int]],
                        link: bool = True) -> None:
        """The buffer as `state` describes it, its chunks in `source` (a checkpoint's `online_buffer/`),
        each of which must be listed in that checkpoint's manifest (`listed`: path -> (sha256, bytes)).
        `link`: rebuild the live folder from them (hard links, copies across file systems); otherwise
        read them where they are (exporting a checkpoint's buffer)."""
        where = f"{source.parent / 'training_state.pt'} (online buffer)"
        saved = check_features(state.get("features"), where) if isinstance(state, Mapping) else None
        if saved is None:
            raise OnlineBufferError(f"{where}: not a saved online buffer state")
        if saved != self.features:
            raise OnlineBufferError(f"{where}: it holds the features {saved}, this run's config gives {self.features}; "
                                    "resume with the config the run was trained with")
        try:
            head, next_index, next_episode = (int(state[k]) for k in ("head", "next_index", "next_episode"))
            chunks = [_Chunk(int(i), int(f), int(e), [int(n) for n in lengths]) for i, f, e, lengths in state["chunks"]]
            pending = {int(i): [int(n) for n in lengths] for i, lengths in state["pending"]}
        except (KeyError, TypeError, ValueError):
            raise OnlineBufferError(f"{where}: its chunk list is damaged") from None
        _check_chunks(chunks, pending, head, next_index, next_episode, where)
        hashes = {}
        for cid, frames in [(c.id, sum(c.lengths)) for c in chunks] + [(i, sum(n)) for i, n in pending.items()]:
            for key in self.features:
                rel = f"{chunk_name(cid)}/{key}.npy"
                if f"{FOLDER}/{rel}" not in listed:
                    raise OnlineBufferError(f"{source / rel}: the checkpoint's manifest does not list it, so it cannot "
                                            "be checked; resume from an intact checkpoint")
                hashes[rel] = listed[f"{FOLDER}/{rel}"]
                self._open(source, cid, key, frames)  # its header: dtype and shape
        if link:
            self.clear_folder()
            for rel in hashes:
                (self.folder / rel).parent.mkdir(exist_ok=True)
                try:
                    os.link(source / rel, self.folder / rel)
                except OSError:  # another file system, or links refused: a copy
                    shutil.copyfile(source / rel, self.folder / rel)
        else:
            self.folder = source
        self.head, self.next_index, self.next_episode = head, next_index, next_episode
        self.chunks, self.pending, self.hashes = chunks, pending, hashes
        self._maps, self._tables = {}, None

    # ------------------------------------------------------------------ export
    def export(self, root: str | Path, robot_type: str = "unknown", use_videos: bool = True,
               codebase_version: str | None = None) -> Path:
        """Writes the buffer's episodes as a LeRobotDataset at `root` (one episode per buffer episode,
        without its final-observation frame, so frame t holds observation t, action t and next.* of
        step t as in a recorded dataset); the oldest episode starts at `head` if eviction cut it."""
        from data.lerobot_writer import CODEBASE_VERSION, LeRobotDatasetWriter

        t = self._table()
        if not any(e - 1 > max(f, self.head) for f, e in zip(t["ep_first"], t["ep_end"])):
            raise OnlineBufferError("the online buffer holds no complete step to export")
        features = {k: {**ft, "names": None} for k, ft in self.features.items()}
        writer = LeRobotDatasetWriter(root, fps=round(self.fps), features=features, robot_type=robot_type,
                                      use_videos=use_videos, codebase_version=codebase_version or CODEBASE_VERSION)
        try:
            for first, end, c in zip(t["ep_first"].tolist(), t["ep_end"].tolist(), t["ep_chunk"].tolist()):
                frames = range(max(first, self.head), end - 1)
                if not frames:
                    continue
                chunk = self.chunks[c]
                maps = self._map(chunk)
                for index in frames:
                    writer.add_frame({key: maps[key][index - chunk.first_index] for key in self.features})
                writer.save_episode(task=self.task)
            return writer.finalize()
        except BaseException:
            writer.abort()
            raise


def _check_chunks(chunks: list[_Chunk], pending: dict[int, list[int]], head: int, next_index: int,
                  next_episode: int, where: str) -> None:
    """A saved chunk list is consistent: chunks in order and contiguous, episodes of at least one frame,
    `head` inside the first chunk, counters at the end of the last one."""
    problem = None
    ids = [c.id for c in chunks] + list(pending)
    if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
        problem = "chunk ids repeat or are negative"
    elif any(not lengths or min(lengths) < 1 for lengths in [c.lengths for c in chunks] + list(pending.values())):
        problem = "an episode without frames"
    elif any(b.first_index != a.end or b.first_episode != a.first_episode + len(a.lengths) or b.id <= a.id
             for a, b in zip(chunks, chunks[1:])):
        problem = "chunks are not contiguous"
    elif chunks and (chunks[-1].end != next_index or chunks[-1].first_episode + len(chunks[-1].lengths) != next_episode
                     or not chunks[0].first_index <= head < chunks[0].end):
        problem = "its counters do not match its chunks"
    elif not chunks and (head != next_index or min(head, next_episode) < 0):
        problem = "its counters do not match its chunks"
    if problem:
        raise OnlineBufferError(f"{where}: {problem}; resume from an intact checkpoint")
