"""`python src/train.py` with a value out of its range (or of the wrong type) stops before it creates
anything: exit 2, one `error:` line naming the key, the value and the range, and no run folder,
dataset, scene or MLflow store in the working directory or in $HYDRABOT_HOME."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from helpers import REPO, one_error_line, run_bounded

pytestmark = pytest.mark.slow


def _train_in(tmp_path: Path, args: list[str]):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONUNBUFFERED="1", HYDRABOT_HOME=str(tmp_path / "home"))
    return run_bounded([sys.executable, str(REPO / "src" / "train.py"), *args], env=env, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("args, expected", [
    (["steps=-1"], "steps=-1 is out of range: must be >= 0"),
    (["save_freq=-5"], "save_freq=-5 is out of range: must be >= 0 (0: never)"),
    (["batch_size=0"], "batch_size=0 is out of range: must be >= 1"),
    (["eval.n_episodes=-1"], "eval.n_episodes=-1 is out of range: must be >= 1"),
    (["env.episode_length=0"], "env.episode_length=0 is out of range: must be >= 1"),
    (["use_amp=maybe"], "wrong type for use_amp: Value 'maybe' is not a valid bool"),
    (["policy.crop_shape=[120,120]"], "policy.crop_shape=[120, 120] is out of range: must fit in the env's image "
                                      "pixels of shape [96, 96, 3]"),
    (["model=nerfacto", "model.log2_hashmap_size=-1"], "model.log2_hashmap_size=-1 is out of range: must be >= 1"),
    (["--pipeline.model.proposal-net-args-list.0.num-levels", "0"],
     "model.proposal_net_args_list.0.num_levels=0 is out of range: must be >= 1"),
    (["-m", "seed=1,2", "batch_size=8,0"], "sweep value batch_size=0: batch_size=0 is out of range: must be >= 1"),
])
def test_a_value_out_of_range_stops_before_anything_is_created(tmp_path, args, expected):
    line = one_error_line(_train_in(tmp_path, args))
    assert expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a run folder, dataset or MLflow store was created"


def test_a_sweeper_sampled_value_out_of_range_fails_its_job_before_it_builds_anything(tmp_path):
    """An interval (optuna) lists no values to check up front: each job's value is checked when it starts."""
    sweep = tmp_path / "sweep"
    r = _train_in(tmp_path, ["-m", "hydra/sweeper=optuna_small", "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1",
                             "logger=none", "eval.n_episodes=int(interval(-3, -1))", f"hydra.sweep.dir={sweep}"])
    assert r.returncode != 0
    log = (sweep / "0" / "train.log").read_text()
    assert "error: eval.n_episodes=-" in log and "is out of range: must be >= 1" in log, log[-2000:]
    assert sorted(p.name for p in (sweep / "0").iterdir()) == [".hydra", "train.log"]  # nothing of a run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no dataset, no scene, no MLflow store
