"""train.py end to end on a tiny config: training, checkpoints, exact resume, evaluation alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers import read_metrics, run_train, tiny_overrides

pytestmark = pytest.mark.slow


def _weights(ckpt: Path) -> dict:
    return load_file(str(ckpt / "model.safetensors"))


def test_resume_reproduces_uninterrupted_training(tmp_path, pusht_root):
    """Train 6 steps straight; separately, stop after the step-3 checkpoint and resume to 6: the
    weights must agree to 1e-6 (exact data position, RNG, optimizer and scheduler state)."""
    full = tmp_path / "full"
    r = run_train(tiny_overrides(pusht_root, full, "steps=6", "save_freq=3"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["000003", "000006", "last"]

    part = tmp_path / "part"
    shutil.copytree(full, part, symlinks=True)
    shutil.rmtree(part / "checkpoints" / "000006")
    (part / "checkpoints" / "last").unlink()
    (part / "checkpoints" / "last").symlink_to("000003")  # as if killed after the step-3 save
    # the README's form: the run folder alone; groups and values come from the checkpoint
    r = run_train(["resume=true", f"hydra.run.dir={part}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stdout
    # the resumed checkpoint records the run's group choices (logger=none, experiment=quickstart), not
    # the defaults a bare resume composes: eval.py and later resumes read them
    saved = (full / "checkpoints" / "000006" / "choices.yaml").read_text()
    assert (part / "checkpoints" / "000006" / "choices.yaml").read_text() == saved
    assert "logger: none" in saved

    a, b = _weights(full / "checkpoints" / "000006"), _weights(part / "checkpoints" / "000006")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 1e-6, k
    # and the resumed run did train: its weights moved since step 3
    c = _weights(full / "checkpoints" / "000003")
    assert any((a[k] - c[k]).abs().max() > 1e-6 for k in a)


def test_metrics_falling_eval_and_checkpoint_only_evaluation(tmp_path, pusht_root):
    run = tmp_path / "run"
    r = run_train(tiny_overrides(pusht_root, run, "steps=4", "eval_freq=4", "eval.max_videos=1"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = read_metrics(run)
    train = [m for m in lines if "train/loss" in m]
    assert [m["step"] for m in train] == [2, 4]
    ev = [m for m in lines if "eval/pc_success" in m]
    assert ev and ev[0]["step"] == 4 and ev[0]["eval/n_episodes"] == 1
    assert list((run / "eval" / "step_000004").glob("*.mp4"))

    # evaluation alone, from the checkpoint (no dataset needed: features are in its config)
    out = tmp_path / "eval_only"
    r = run_train([f"checkpoint={run}", f"output_dir={out}", "eval.n_episodes=2", "eval.batch_size=2"],
                  script="eval.py")
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((out / "eval.json").read_text())
    assert result["step"] == 4 and result["n_episodes"] == 2
    # its files sit in output_dir itself (no eval/step_N inside it), and it says where they are
    assert list(out.glob("*.mp4")) and not (out / "eval").exists()
    assert f"  {out / 'eval.json'}" in r.stdout and f"  {next(out.glob('*.mp4'))}" in r.stdout

    # and train.py with steps=0 on the finished run evaluates without training
    r = run_train(tiny_overrides(pusht_root, run, "resume=true", "steps=0"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "eval at step 4" in r.stdout and "saved checkpoint" not in r.stdout


def test_a_requeued_slurm_job_resumes_by_itself(tmp_path, pusht_root):
    run = tmp_path / "run"
    assert run_train(tiny_overrides(pusht_root, run, "steps=2", "save_freq=2")).returncode == 0
    r = run_train(tiny_overrides(pusht_root, run, "steps=4", "save_freq=2"), env={"SLURM_RESTART_COUNT": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "this job was requeued" in r.stdout
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["000002", "000004", "last"]


def test_a_warm_start_continues_another_runs_checkpoint_in_a_new_run(tmp_path, pusht_root):
    source = tmp_path / "source"
    assert run_train(tiny_overrides(pusht_root, source, "steps=2", "save_freq=2")).returncode == 0
    new = tmp_path / "new"
    r = run_train(tiny_overrides(pusht_root, new, "steps=4", "save_freq=4", f"load_dir={source}"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warm start from" in r.stdout + r.stderr
    assert sorted(p.name for p in (new / "checkpoints").iterdir()) == ["000004", "last"]
    lines = read_metrics(new)
    assert [m["step"] for m in lines if "train/loss" in m] == [4]  # steps 3 and 4 only (log_freq=2)
    a = _weights(source / "checkpoints" / "000002")
    b = _weights(new / "checkpoints" / "000004")
    assert any((a[k] - b[k]).abs().max() > 0 for k in a)  # it trained on from the loaded weights
