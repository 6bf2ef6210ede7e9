"""A training run as MLflow shows it: one run per job, read back with the MLflow client."""

from __future__ import annotations

import json

import pytest

from helpers import read_metrics, run_train, tiny_overrides

pytestmark = pytest.mark.slow


def test_mlflow_run_holds_params_metrics_tags_artifacts_and_resume_continues_it(tmp_path, pusht_root):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    args = tiny_overrides(pusht_root, run_dir, "logger=mlflow", f"logger.tracking_uri={uri}", "steps=4",
                          "eval_freq=4")
    r = run_train(args)
    assert r.returncode == 0, r.stderr[-3000:]
    # the run ends by saying where everything is, and how to open the MLflow UI on it
    out = r.stdout + r.stderr
    assert f"run finished: {run_dir}" in out
    assert f"video        {run_dir}/eval/step_000004/eval_episode_0.mp4" in out
    assert f"ui --backend-store-uri {uri}" in out and "http://127.0.0.1:5000/#/experiments/" in out

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["policy.horizon"] == "8" and params["batch_size"] == "4"
    assert params["policy.input_features.observation.image.shape"] == "[3, 96, 96]"
    assert int(params["derived.num_params"]) > 0
    assert run.data.tags["family"] == "robot" and "policy.horizon=8" in run.data.tags["overrides"]
    # MLflow 3 opens a model-training experiment in its runs view (the GenAI view without the tag)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    # named by the job, what sets it apart and when, not by MLflow's seeded random words
    assert run.info.run_name.startswith("quickstart ") and "steps=4" in run.info.run_name
    assert "hydra.run.dir" not in run.info.run_name and "experiment=" not in run.info.run_name
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in loss] == [2, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/pc_success")] == [4]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config.yaml" in artifacts
    eval_files = {a.path for a in client.list_artifacts(run.info.run_id, "eval/step_000004")}
    assert any(p.endswith(".mp4") for p in eval_files) and any(p.endswith("eval_info.json") for p in eval_files)

    # resume to more steps: the same MLflow run continues
    r = run_train(args[:-2] + ["steps=6", "eval_freq=0", "resume=true"])
    assert r.returncode == 0, r.stderr[-3000:]
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [2, 4, 6]
    # the command that started the run stays; the resume's own overrides sit beside it
    tags = runs[0].data.tags
    assert tags["overrides"] == run.data.tags["overrides"] and "eval_freq=4" in tags["overrides"]
    assert "resume=true" in tags["resume_overrides"] and "steps=6" in tags["resume_overrides"]
    assert runs[0].info.run_name == run.info.run_name


def test_tracking_server_down_does_not_stop_training(tmp_path, pusht_root):
    run_dir = tmp_path / "run"
    r = run_train(tiny_overrides(pusht_root, run_dir, "logger=mlflow", "logger.tracking_uri=http://127.0.0.1:9",
                                 "steps=2"), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "127.0.0.1:9" in r.stdout + r.stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2]
    assert (run_dir / "checkpoints" / "last" / "model.safetensors").is_file()


def test_a_resume_from_an_earlier_checkpoint_logs_each_step_once(tmp_path, pusht_root):
    """Killed after the step-4 metrics but with only the step-2 checkpoint: the resumed run trains
    steps 3-4 again, and metrics.jsonl keeps one record of each step, the resumed run's."""
    run_dir = tmp_path / "run"
    r = run_train(tiny_overrides(pusht_root, run_dir, "steps=4", "save_freq=2"))
    assert r.returncode == 0, r.stderr[-3000:]
    last = run_dir / "checkpoints" / "last"
    last.unlink()
    last.symlink_to("000002")
    first_attempt = read_metrics(run_dir)
    assert [m["step"] for m in first_attempt] == [2, 4]

    r = run_train(tiny_overrides(pusht_root, run_dir, "steps=4", "save_freq=2", "resume=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = read_metrics(run_dir)
    assert [m["step"] for m in lines] == [2, 4]
    assert lines[0] == first_attempt[0] and lines[1]["time"] > first_attempt[1]["time"]


def test_runs_of_a_sweep_are_named_by_the_values_it_varies(tmp_path, pusht_root):
    """Two jobs of `-m seed=1,2` under the basic launcher: MLflow shows them as `seed=1` and `seed=2`
    under the sweep's parent, not as one generated name twice (MLflow's names come from `random`,
    which every run seeds alike)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [a for a in tiny_overrides(pusht_root, tmp_path / "unused", "logger=mlflow", f"logger.tracking_uri={uri}",
                                      "steps=2", "save_freq=0") if not a.startswith("hydra.run.dir=")]
    r = run_train(["-m", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}", "seed=1,2"])
    assert r.returncode == 0, r.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([exp.experiment_id])
    children = sorted(x.info.run_name for x in runs if x.data.tags.get("mlflow.parentRunId"))
    assert children == ["seed=1", "seed=2"]
