"""Each bad input gets one `error:` line naming the problem and the fix, exit code 2, no
traceback, no MLflow run left RUNNING and nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import one_error_line, run_train, tiny_overrides

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("override, expected", [
    ("policy=foo", ["policy=foo", "options: act, diffusion, pi0, tdmpc, vqbet"]),
    ("policy=diffusin", ["did you mean diffusion"]),
    ("policy.horizn=3", ["policy.horizn is not a config key", "did you mean policy.horizon"]),
    ("batch_size=abc", ["wrong type", "batch_size"]),
    ("policy.n_action_steps=20", ["policy.n_action_steps=20 exceeds", "lower policy.n_action_steps"]),
    ("machine.device_type=tpu", ["machine.device_type='tpu' is not one of auto, cpu, cuda, mps"]),
    ("amp_dtype=fp32", ["amp_dtype='fp32' is not one of bf16, fp16", "amp_dtype=bf16"]),
])
def test_bad_overrides_fail_before_a_run_directory_exists(tmp_path, override, expected):
    run_dir = tmp_path / "run"
    line = one_error_line(run_train(["logger=none", f"hydra.run.dir={run_dir}", override]))
    for text in expected:
        assert text in line
    assert not run_dir.exists()


@pytest.mark.parametrize("sweep, expected", [
    (["seed=1,one"], "sweep value seed=one: wrong type for seed"),
    (["optimizer=adam,sgdd", "seed=range(1,3)"], "sweep value optimizer=sgdd: optimizer=sgdd is not an option"),
    (["seed=1,2", "policy.horizn=3"], "policy.horizn is not a config key"),
])
def test_a_bad_sweep_value_fails_before_any_job_starts(tmp_path, sweep, expected):
    sweep_dir = tmp_path / "sweep"
    line = one_error_line(run_train(["-m", "logger=none", f"hydra.sweep.dir={sweep_dir}", "steps=0", *sweep]))
    assert expected in line
    assert not sweep_dir.exists()


def test_unknown_seed_flag_names_the_closest(tmp_path):
    line = one_error_line(run_train(["--policy.horizn=3", f"hydra.run.dir={tmp_path / 'run'}"]))
    assert "--policy.horizn" in line and "--policy.horizon" in line


def _no_running_mlflow_runs(db: Path) -> None:
    if not db.exists():
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            assert run.info.status != "RUNNING"


def _mlflow(tmp_path: Path) -> list[str]:
    return ["logger=mlflow", f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]


def test_missing_dataset(tmp_path, pusht_root):
    args = tiny_overrides(pusht_root, tmp_path / "run", *_mlflow(tmp_path), f"dataset.root={tmp_path / 'nowhere'}",
                          "dataset.demos=null")
    line = one_error_line(run_train(args))
    assert f"no LeRobotDataset at {tmp_path / 'nowhere'}" in line and "dataset.root" in line
    _no_running_mlflow_runs(tmp_path / "mlflow.db")
    assert not (tmp_path / "run").exists()  # Hydra's run directory is removed with the failed start


def test_corrupt_dataset_names_the_file(tmp_path, pusht_root):
    bad = tmp_path / "bad"
    shutil.copytree(pusht_root, bad)
    info = json.loads((bad / "meta" / "info.json").read_text())
    info["total_frames"] += 5
    (bad / "meta" / "info.json").write_text(json.dumps(info))
    line = one_error_line(run_train(tiny_overrides(pusht_root, tmp_path / "run", *_mlflow(tmp_path),
                                                    f"dataset.root={bad}")))
    assert "info.json" in line or "total_frames" in line
    _no_running_mlflow_runs(tmp_path / "mlflow.db")
    assert not (tmp_path / "run").exists()


def test_resume_without_checkpoint(tmp_path, pusht_root):
    run_dir = tmp_path / "run"
    line = one_error_line(run_train(tiny_overrides(pusht_root, run_dir, "resume=true")))
    assert "resume=true" in line and "has no checkpoint" in line
    assert not run_dir.exists()


def test_resume_from_corrupt_checkpoint_is_refused_and_marks_nothing_running(tmp_path, pusht_root):
    run_dir = tmp_path / "run"
    r = run_train(tiny_overrides(pusht_root, run_dir, *_mlflow(tmp_path), "steps=2"))
    assert r.returncode == 0, r.stderr[-2000:]
    weights = run_dir / "checkpoints" / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    line = one_error_line(run_train(tiny_overrides(pusht_root, run_dir, *_mlflow(tmp_path), "steps=2",
                                                    "resume=true")))
    assert "checkpoints/000002 is damaged" in line and "model.safetensors is 100 bytes where" in line
    assert "no intact checkpoint is left" in line and "start a new run" in line
    _no_running_mlflow_runs(tmp_path / "mlflow.db")
    assert (run_dir / "checkpoints" / "000002").is_dir() and (run_dir / "metrics.jsonl").is_file()  # kept


def test_resume_refuses_a_changed_group_choice(tmp_path, pusht_root):
    run_dir = tmp_path / "run"
    assert run_train(tiny_overrides(pusht_root, run_dir, "steps=2")).returncode == 0
    line = one_error_line(run_train(tiny_overrides(pusht_root, run_dir, "steps=2", "optimizer=sgd",
                                                    "resume=true")))
    assert "optimizer=sgd cannot change on resume" in line


def test_changed_weights_are_refused_naming_the_newest_intact_checkpoint(tmp_path, pusht_root):
    """Bytes changed in the middle of model.safetensors (its header intact, so safetensors itself loads
    it) are caught by the checkpoint's manifest on resume and in eval.py, which name step 2 instead."""
    run_dir = tmp_path / "run"
    assert run_train(tiny_overrides(pusht_root, run_dir, "steps=4", "save_freq=2")).returncode == 0
    weights = run_dir / "checkpoints" / "000004" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) * 3 // 4] ^= 0xFF
    weights.write_bytes(bytes(data))
    intact = run_dir / "checkpoints" / "000002"
    for r in (run_train(tiny_overrides(pusht_root, run_dir, "steps=6", "save_freq=2", "resume=true")),
              run_train([f"checkpoint={run_dir}", f"output_dir={tmp_path / 'out'}"], script="eval.py")):
        line = one_error_line(r)
        assert f"{weights} does not match the SHA-256" in line and f"newest intact checkpoint is {intact}" in line
    assert not (run_dir / "checkpoints" / "000006").exists() and not (tmp_path / "out").exists()
    r = run_train([f"checkpoint={intact}", f"output_dir={tmp_path / 'out'}", "eval.n_episodes=1",
                   "eval.batch_size=1", "eval.max_videos=0"], script="eval.py")
    assert r.returncode == 0, r.stderr[-2000:]


def test_disk_full_during_a_save_ends_in_one_line_and_keeps_the_previous_checkpoint(tmp_path, pusht_root):
    """The run folder of a 2-step run moves onto a disk with room for half a checkpoint more; resumed to
    step 4, the step-4 save runs out of space: one line with the space needed, no .tmp folder, and
    `last` still on the intact step-2 checkpoint."""
    from helpers import tmpfs
    from training import checkpoint as ckpt_lib

    source = tmp_path / "source"
    assert run_train(tiny_overrides(pusht_root, source, "steps=2")).returncode == 0
    files = [f for f in source.rglob("*") if f.is_file() and not f.is_symlink()]
    used = sum(f.stat().st_size + 4096 for f in files)  # a tmpfs gives each file whole pages
    ckpt_bytes = sum(f.stat().st_size for f in (source / "checkpoints" / "000002").iterdir())
    with tmpfs(tmp_path / "disk", used + ckpt_bytes // 2) as disk:
        run_dir = disk / "run"
        shutil.copytree(source, run_dir, symlinks=True)
        r = run_train(tiny_overrides(pusht_root, run_dir, "steps=4", "resume=true"))
        line = one_error_line(r)
        assert "no space left to save checkpoint 000004" in line and "it needs about" in line, line
        assert "the previous checkpoint 000002 is intact" in line and "resume=true" in line, line
        assert not list((run_dir / "checkpoints").glob(".tmp-*"))
        assert ckpt_lib.last_checkpoint(run_dir).name == "000002"
        ckpt_lib.verify(run_dir / "checkpoints" / "000002")
