"""Several LeRobotDatasets trained on as one (LeRobot's MultiLeRobotDataset), for `dataset.repo_id`
given as a list.

Items keep only the feature keys every dataset has (the others are dropped with a warning naming
them, since a batch needs the same keys in every item) and gain `dataset_index`, the position of
their dataset in the list. Stats are the count-weighted combination of each dataset's stats
(pooled mean and std, min of mins, max of maxes), so normalisation sees the union of the data.
"""

from __future__ import annotations

import bisect
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from data.errors import DatasetError
from data.features import is_visual
from data.lerobot_dataset import INFO_PATH, LeRobotDataset, LeRobotDatasetMetadata, checked_index
from data.stats import aggregate_stats

log = logging.getLogger(__name__)


def _common_features(metas: list[LeRobotDatasetMetadata]) -> tuple[dict[str, dict], list[str]]:
    """Features present in every dataset (in the first one's order), and the names of those dropped."""
    first = metas[0]
    common = [k for k in first.features if all(k in m.features for m in metas[1:])]
    dropped = sorted({k for m in metas for k in m.features} - set(common))
    for key in common:
        ref = first.features[key]
        for meta in metas[1:]:
            ft = meta.features[key]
            if list(ft["shape"]) != list(ref["shape"]) or is_visual(ft) != is_visual(ref):
                raise DatasetError(
                    f"{meta.root / INFO_PATH}: feature {key!r} is {ft['dtype']} {list(ft['shape'])} but "
                    f"{ref['dtype']} {list(ref['shape'])} in {first.root}; only datasets whose shared keys agree can "
                    f"be concatenated, drop one from dataset.repo_id"
                )
    return {k: first.features[k] for k in common}, dropped


class MultiLeRobotDatasetMetadata:
    """The metadata of several datasets seen as one: common features, one fps, combined stats."""

    def __init__(self, roots: list[str | Path]):
        if not roots:
            raise ValueError("MultiLeRobotDatasetMetadata needs at least one dataset root")
        self.metas = [LeRobotDatasetMetadata(root) for root in roots]
        self.roots = [m.root for m in self.metas]
        fps = {m.fps for m in self.metas}
        if len(fps) > 1:
            listed = ", ".join(f"{m.root}: {m.fps}" for m in self.metas)
            raise DatasetError(
                f"the datasets have different fps ({listed}); frames and delta_timestamps need one fps, "
                f"list only datasets recorded at the same rate"
            )
        self.fps = self.metas[0].fps
        self.features, self.dropped_keys = _common_features(self.metas)
        if self.dropped_keys:
            log.warning("features not in every dataset are dropped: %s", ", ".join(self.dropped_keys))
        self.stats = aggregate_stats([self._counted(m) for m in self.metas])

    def _counted(self, meta: LeRobotDatasetMetadata) -> dict[str, dict[str, np.ndarray]]:
        """A dataset's stats of the common keys; stats.json files without `count` (LeRobot v2.0) weigh
        by the dataset's frame count."""
        return {
            key: {"count": np.array([meta.total_frames]), **ft}
            for key, ft in meta.stats.items() if key in self.features
        }

    @property
    def root(self) -> str:
        """The roots joined by ", ", for logs and run parameters."""
        return ", ".join(str(r) for r in self.roots)

    @property
    def total_frames(self) -> int:
        return sum(m.total_frames for m in self.metas)

    @property
    def total_episodes(self) -> int:
        return sum(m.total_episodes for m in self.metas)

    @property
    def video_keys(self) -> list[str]:
        return [k for k in self.features if all(k in m.video_keys for m in self.metas)]

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if is_visual(ft)]


class MultiLeRobotDataset(torch.utils.data.Dataset):
    """The frames of several LeRobotDatasets, one after the other, restricted to their common keys.

    `episodes` is None (all) or one list (or None) per root. Other arguments are LeRobotDataset's;
    `delta_timestamps` may only name common keys.
    """

    def __init__(
        self,
        roots: list[str | Path],
        episodes: list[list[int] | None] | None = None,
        delta_timestamps: dict[str, list[float]] | None = None,
        image_transforms: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tolerance_s: float = 1e-4,
        video_backend: str = "pyav",
        meta: MultiLeRobotDatasetMetadata | None = None,
        uint8_images: bool = False,
    ):
        self.meta = meta if meta is not None else MultiLeRobotDatasetMetadata(roots)
        if episodes is not None and len(episodes) != len(roots):
            raise ValueError(f"episodes has {len(episodes)} entries for {len(roots)} datasets; give one per dataset")
        unknown = sorted(set(delta_timestamps or {}) - set(self.meta.features))
        if unknown:
            raise ValueError(f"delta_timestamps keys {unknown} are not common to all datasets {self.meta.root}")
        self.fps = self.meta.fps
        self.features = self.meta.features
        self.datasets = [
            LeRobotDataset(root, episodes=None if episodes is None else episodes[i], delta_timestamps=delta_timestamps,
                           image_transforms=image_transforms, tolerance_s=tolerance_s, video_backend=video_backend,
                           uint8_images=uint8_images)
            for i, root in enumerate(self.meta.roots)
        ]
        self._ends = np.cumsum([len(d) for d in self.datasets]).tolist()
        self._keep = set(self.features) | {f"{k}_is_pad" for k in delta_timestamps or {}} | {"task"}

    def __len__(self) -> int:
        return self._ends[-1]

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def num_episodes(self) -> int:
        return sum(d.num_episodes for d in self.datasets)

    @property
    def episode_lengths(self) -> list[int]:
        """Frame counts of all selected episodes, dataset after dataset, in index order."""
        return [n for d in self.datasets for n in d.episode_lengths]

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor | str]:
        idx = checked_index(idx, len(self))
        which = bisect.bisect_right(self._ends, idx)
        start = self._ends[which - 1] if which else 0
        item = self.datasets[which][idx - start]
        item = {k: v for k, v in item.items() if k in self._keep}
        item["dataset_index"] = torch.tensor(which, dtype=torch.int64)
        return item

    def __repr__(self) -> str:
        return (
            f"MultiLeRobotDataset(roots={[str(r) for r in self.meta.roots]}, episodes={self.num_episodes}, "
            f"frames={self.num_frames}, fps={self.fps}, features={list(self.features)})"
        )
