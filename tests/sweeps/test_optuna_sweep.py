"""hydra/sweeper=optuna_small for real: a 2-trial Optuna search with the basic launcher, each trial
a tiny training run whose final evaluation metric (what train.py's main returns) is the value
Optuna optimises."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from helpers import run_train, tiny_overrides

pytestmark = pytest.mark.slow  # two trials of a few steps each, a minute on a busy 2-core machine


def final_eval(job_dir: Path, metric: str) -> float:
    values = [json.loads(line)[f"eval/{metric}"] for line in (job_dir / "metrics.jsonl").read_text().splitlines()
              if f"eval/{metric}" in line]
    assert values, f"{job_dir} logged no eval/{metric}"
    return values[-1]


def test_optuna_small_gets_the_jobs_eval_metric(pusht_root, tmp_path):
    sweep = tmp_path / "sweep"
    args = [a for a in tiny_overrides(pusht_root, tmp_path / "unused") if not a.startswith("hydra.run.dir=")]
    args = ["-m", *args, "steps=2", "save_freq=0", "eval_freq=2", "eval.max_videos=0", "env.episode_length=8",
            f"hydra.sweep.dir={sweep}", "hydra/sweeper=optuna_small", "hydra.sweeper.n_trials=2",
            # pc_success of one 8-step episode is 0 for every trial; the summed reward is not
            "objective=avg_sum_reward"]  # batch_size=4 on the command line fixes it: lr is searched
    proc = run_train(args, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "Sampler: TPESampler" in out

    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    values = {job.name: final_eval(job, "avg_sum_reward") for job in jobs}
    lrs = {job.name: yaml.safe_load((job / "config.yaml").read_text())["optimizer"]["lr"] for job in jobs}

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    # the sweeper maximised what the jobs returned: the best of their final eval metrics ...
    assert math.isclose(results["best_value"], max(values.values()), rel_tol=1e-9)
    # ... and its best parameters are those of a job that reached it
    best_lr = results["best_params"]["optimizer.lr"]
    best_jobs = [j for j, lr in lrs.items() if math.isclose(lr, best_lr, rel_tol=1e-6)]
    assert best_jobs and math.isclose(values[best_jobs[0]], results["best_value"], rel_tol=1e-9)
    assert all(1e-5 <= lr <= 1e-3 for lr in lrs.values())
