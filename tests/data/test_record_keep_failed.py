"""A recording keeps only the expert's successful episodes unless `keep_failed`."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import envs.pusht_expert
from data.demos import record_pusht
from data.lerobot_dataset import LeRobotDatasetMetadata


class EverySecondEpisodeFails(envs.pusht_expert.PushTExpert):
    """The real expert on episodes 0, 2, ...; on 1, 3, ... it holds the pointer still, so the T never moves."""

    episodes = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        EverySecondEpisodeFails.episodes = 0  # count the recorder's episodes only

    def reset(self):
        super().reset()
        EverySecondEpisodeFails.episodes += 1

    def act(self, env):
        if self.episodes % 2 == 0:
            return np.asarray(env.agent.position, dtype=np.float64)
        return super().act(env)


def _final_success(root) -> list[bool]:
    meta = LeRobotDatasetMetadata(root)
    out = []
    for ep in meta.episodes:
        table = pq.read_table(meta.get_data_file_path(ep))
        out.append(bool(table.column("next.success").to_pylist()[-1]))
    return out


@pytest.mark.parametrize("keep_failed, expected", [(False, [True, True]), (True, [True, False])])
def test_failed_episodes_are_dropped_unless_kept(tmp_path, monkeypatch, keep_failed, expected):
    EverySecondEpisodeFails.episodes = 0
    monkeypatch.setattr(envs.pusht_expert, "PushTExpert", EverySecondEpisodeFails)
    root = record_pusht(tmp_path / "ds", n_episodes=2, seed=0, keep_failed=keep_failed, use_videos=False,
                        progress=False)
    assert EverySecondEpisodeFails.episodes == (3 if not keep_failed else 2)  # one failure re-drawn, or kept
    assert _final_success(root) == expected


def test_the_recorder_cli_writes_a_dataset_and_never_overwrites_one(tmp_path):
    from helpers import run_train

    root = tmp_path / "pusht"
    r = run_train(["expert=pusht", "n_episodes=1", f"root={root}", "use_videos=false"], script="record.py")
    assert r.returncode == 0, r.stderr[-2000:]
    assert LeRobotDatasetMetadata(root).total_episodes == 1
    again = run_train(["expert=pusht", "n_episodes=1", f"root={root}"], script="record.py")
    assert again.returncode == 2 and f"error: {root} already holds a dataset" in again.stderr
    assert LeRobotDatasetMetadata(root).total_episodes == 1
