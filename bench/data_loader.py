"""Loader throughput: LeRobotDataset served from its decoded-frame cache vs decoding the mp4 per item.

The "decode" rows are what a loader without a cache does (LeRobot's pyav backend): for every
item, open the episode's video, seek to the keyframe before the first wanted timestamp and decode
up to the last one. Both go through the training loader (`BatchStream`: shuffled, batch 64,
persistent workers), once with single frames and once with the policy's delta_timestamps
(Diffusion Policy: 2 observation frames, 16 actions per sample).

    python bench/data_loader.py                      # the quickstart PushT demos (96x96), recorded if absent
    python bench/data_loader.py --root /data/lerobot/pusht --batches 50 --workers 0 2 8

The cache is built into a temporary folder first, so its build time is measured too.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from data.demos import ensure_dataset  # noqa: E402
from data.features import policy_features  # noqa: E402
from data.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata  # noqa: E402
from models.diffusion.config import DiffusionConfig  # noqa: E402
from pipelines.robot import delta_timestamps  # noqa: E402
from training.data_position import BatchStream  # noqa: E402

QUICKSTART = {"root": None, "repo_id": "local/pusht_scripted_quickstart",
              "demos": {"expert": "pusht", "n_episodes": 20, "seed": 0, "keep_failed": False, "use_videos": True}}


class DecodePerItem(LeRobotDataset):
    """Frames decoded from the video at every access, never from the cache."""

    def _frames(self, key: str, rows: np.ndarray) -> np.ndarray:
        ep = self.episodes[int(self._row_ep[rows[0]])]
        path = self.meta.get_video_file_path(ep, key)
        from_ts, _ = self.meta.episode_video_span(ep, key)  # v3.0 files hold several episodes
        seconds = from_ts + self._columns["timestamp"][rows].astype(np.float64).reshape(-1)
        wanted = np.rint(seconds * self.fps).astype(int)
        last, found = int(wanted.max()), {}
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(int(round(wanted.min() / self.fps / float(stream.time_base))), stream=stream)
            for frame in container.decode(stream):
                i = round(float(frame.pts * frame.time_base) * self.fps)
                if i in wanted:
                    found[i] = frame.to_ndarray(format="rgb24").transpose(2, 0, 1)
                if i >= last:
                    break
        return np.stack([found[i] for i in wanted])


def rate(dataset: LeRobotDataset, batch_size: int, workers: int, batches: int) -> float:
    """Items/s: the median over windows of a few batches, after the workers have started, so a
    burst of load from other processes on a shared machine moves one window, not the result."""
    window = max(2, 2 * workers)
    stream = iter(BatchStream(dataset, batch_size, seed=0, num_workers=workers))
    for _ in islice(stream, window):
        pass
    stamps = [time.perf_counter()]
    for _ in islice(stream, max(batches, window)):
        stamps.append(time.perf_counter())
    rates = [window * batch_size / (stamps[i + window] - stamps[i]) for i in range(0, len(stamps) - window, window)]
    return float(np.median(rates))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, help="a local LeRobotDataset (default: the quickstart PushT demos)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=16, help="timed batches per row")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the main process (workers use 1); with more, the float conversion of a "
                        "2-frame window crosses OpenMP's parallel threshold and costs ~1 ms on busy cores")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from omegaconf import OmegaConf

    root = args.root.expanduser() if args.root else ensure_dataset(OmegaConf.create(QUICKSTART))
    meta = LeRobotDatasetMetadata(root)
    windows = {"frame": None, "sample": delta_timestamps(DiffusionConfig(), policy_features(meta.features), meta.fps)}
    cache_dir = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        start = time.perf_counter()
        LeRobotDataset(root, cache_dir=cache_dir)
        build_s = time.perf_counter() - start
        cache_mb = sum(f.stat().st_size for f in cache_dir.rglob("*.npy")) / 2**20
        shapes = {k: meta.features[k]["shape"] for k in meta.video_keys}
        print(f"dataset {root}: {meta.total_episodes} episodes, {meta.total_frames} frames, videos {shapes}")
        print(f"decoded-frame cache: built in {build_s:.1f} s, {cache_mb:.0f} MB")
        print(f"sample window: {windows['sample']}")
        cached, decoded = (cls(root, delta_timestamps=windows["sample"], cache_dir=cache_dir)
                           for cls in (LeRobotDataset, DecodePerItem))
        for i in np.linspace(0, len(cached) - 1, 5).astype(int):
            for k in meta.video_keys:
                if not np.array_equal(cached[i][k].numpy(), decoded[i][k].numpy()):
                    raise SystemExit(f"decoding item {i} of {k} does not match the cache")
        print("decode path checked against the cache on 5 items: identical\n")
        rows = []
        for item, window in windows.items():
            frames_per_item = sum(len((window or {}).get(k, [0])) for k in meta.video_keys)
            for workers in args.workers:
                cached, decoded = (
                    rate(cls(root, delta_timestamps=window, cache_dir=cache_dir), args.batch_size, workers,
                         args.batches)
                    for cls in (LeRobotDataset, DecodePerItem))
                rows.append((item, workers, cached, decoded, frames_per_item))
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    print("| item | workers | cache items/s | decode items/s | cache frames/s | decode frames/s | cache / decode |")
    print("|---|---|---|---|---|---|---|")
    for item, workers, cached, decoded, n in rows:
        print(f"| {item} | {workers} | {cached:.0f} | {decoded:.0f} | {cached * n:.0f} | {decoded * n:.0f} | "
              f"{cached / decoded:.1f}x |")


if __name__ == "__main__":
    main()
