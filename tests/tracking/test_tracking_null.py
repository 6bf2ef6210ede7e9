"""The interface shared by all trackers: local metric log, finish rules, config helpers, git."""

import shutil
import subprocess

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tracking import NullTracker, flatten_params, git_commit, git_dirty, git_tags, read_metrics


def test_null_tracker_writes_metrics_jsonl(tmp_path):
    tracker = instantiate(OmegaConf.create({"_target_": "tracking.base.NullTracker"}))
    assert isinstance(tracker, NullTracker)
    run_dir = tmp_path / "run"
    assert tracker.start(run_dir, {"a": 1}, {"family": "policy"}) is None
    tracker.log_metrics({"loss": 0.5, "lr": np.float32(1e-4)}, step=10)
    tracker.log_metrics({"loss": 0.25}, step=20)
    tracker.finish("FINISHED")

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [10, 20]
    assert rows[0]["loss"] == 0.5 and rows[0]["lr"] == pytest.approx(1e-4)
    assert all(isinstance(r["time"], float) for r in rows)
    assert tracker.run_id is None


def test_non_numeric_metric_is_dropped_with_one_warning(tmp_path, caplog):
    tracker = NullTracker()
    tracker.start(tmp_path, {}, {})
    for step in range(3):
        tracker.log_metrics({"loss": 1.0, "note": "text"}, step)
    tracker.finish("FINISHED")
    assert [r.getMessage() for r in caplog.records].count(
        "metric 'note' is not logged: metric value must be a number, got str"
    ) == 1
    assert all("note" not in r for r in read_metrics(tmp_path / "metrics.jsonl"))


def test_finish_is_idempotent_and_checks_status(tmp_path):
    tracker = NullTracker()
    tracker.finish("FAILED")  # before start: nothing to end
    tracker.start(tmp_path, {}, {})
    with pytest.raises(ValueError):
        tracker.finish("DONE")
    tracker.finish("KILLED")
    tracker.finish("FINISHED")
    tracker.start(tmp_path, {}, {})  # a finished tracker can run again (multirun in-process)
    tracker.finish("FINISHED")


def test_context_manager_finishes_with_failed(tmp_path, monkeypatch):
    statuses = []
    monkeypatch.setattr(NullTracker, "_finish", lambda self, status: statuses.append(status))
    with pytest.raises(RuntimeError):
        with NullTracker() as tracker:
            tracker.start(tmp_path, {}, {})
            raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt):
        with NullTracker() as tracker:
            tracker.start(tmp_path, {}, {})
            raise KeyboardInterrupt
    assert statuses == ["FAILED", "KILLED"]


def test_log_metrics_before_start_is_an_error():
    with pytest.raises(RuntimeError):
        NullTracker().log_metrics({"loss": 1.0}, 0)


def test_flatten_params():
    nested = {"policy": {"name": "act", "dims": [1, 2]}, "steps": 10, "empty": {}}
    assert flatten_params(nested) == {
        "policy.name": "act",
        "policy.dims": [1, 2],
        "steps": 10,
        "empty": {},
    }


def _git(cwd, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, check=True, capture_output=True,
    )


@pytest.mark.skipif(shutil.which("git") is None,
                    reason="the git helpers are tested on a repository made with the git CLI; git is not installed")
def test_git_helpers(tmp_path):
    assert git_commit(tmp_path) is None
    assert git_tags(tmp_path) == {}
    _git(tmp_path, "init", "-q")
    assert git_commit(tmp_path) is None  # no commit yet
    (tmp_path / "f.txt").write_text("a")
    _git(tmp_path, "add", "f.txt")
    _git(tmp_path, "commit", "-q", "-m", "init")
    commit = git_commit(tmp_path)
    assert commit is not None and len(commit) == 40
    (tmp_path / "untracked.txt").write_text("x")
    assert git_dirty(tmp_path) is False
    assert git_tags(tmp_path) == {"mlflow.source.git.commit": commit, "git.dirty": "false"}
    (tmp_path / "f.txt").write_text("b")
    assert git_tags(tmp_path)["git.dirty"] == "true"


def test_resume_cuts_metrics_jsonl_back_to_the_checkpoint_step(tmp_path):
    """A run resumed from step 4 logs steps 5, 6, ... again: the first attempt's records of them go."""
    first = NullTracker()
    first.start(tmp_path, {}, {})
    for step in (2, 4, 4, 6, 8):
        first.log_metrics({"loss": float(step)}, step)
    first.finish("KILLED")
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 9, "ti')  # torn by a kill mid-write

    resumed = NullTracker()
    resumed.start(tmp_path, {}, {}, resume_step=4)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [2, 4, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left behind
    resumed.log_metrics({"loss": 0.5}, 6)
    resumed.finish("FINISHED")
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [
        (2, 2.0), (4, 4.0), (4, 4.0), (6, 0.5)]

    again = NullTracker()
    again.start(tmp_path, {}, {}, resume_step=6)  # nothing after step 6: the file is left as it is
    again.finish("FINISHED")
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 4
