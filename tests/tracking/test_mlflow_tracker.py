"""MLflowTracker against a real sqlite store (and, marked slow, a real `mlflow server` that dies and
comes back mid-run).

The store is shared by the module: creating a fresh MLflow sqlite database runs its migrations,
which takes about 2 s; runs are independent because each test makes its own.
"""

import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from config.errors import ConfigError
from mlflow_server import free_port, start_server, stop_server
from tracking import MLflowTracker, read_metrics
from tracking import mlflow_tracker as mt

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

WARNING_LOGGER = "tracking.mlflow_tracker"

# mlflow 3.17's sqlite store uses a SQLAlchemy loader option that SQLAlchemy deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.store.*")


@pytest.fixture(autouse=True)
def _no_ambient_mlflow_env(monkeypatch, tmp_path):
    """Tests must not log to a tracking server configured in the developer's shell, nor leave
    ./mlruns in the working directory."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("outputs")


def _tracker(store_dir, **kwargs):
    cfg = {
        "_target_": "tracking.mlflow_tracker.MLflowTracker",
        "tracking_uri": None,
        "experiment_name": "hydrabot",
        "run_name": None,
        "log_system_metrics": False,
        "default_store_dir": str(store_dir),
        **kwargs,
    }
    return instantiate(OmegaConf.create(cfg))


def _client(store_dir):
    return MlflowClient(f"sqlite:///{store_dir / 'mlflow.db'}")


def _tracking_warnings(caplog):
    return [r for r in caplog.records if r.name == WARNING_LOGGER and r.levelno == logging.WARNING]


def test_limits_match_installed_mlflow():
    from mlflow.utils import validation

    assert mt.MAX_PARAM_VALUE_CHARS == validation.MAX_PARAM_VAL_LENGTH
    assert mt.MAX_TAG_VALUE_CHARS == validation.MAX_TAG_VAL_LENGTH
    assert mt.MAX_KEY_CHARS == validation.MAX_ENTITY_KEY_LENGTH
    assert mt.MAX_PARAMS_PER_BATCH == validation.MAX_PARAMS_TAGS_PER_BATCH
    assert mt.MAX_METRICS_PER_BATCH == validation.MAX_METRICS_PER_BATCH


def test_constructor_touches_nothing(tmp_path):
    tracker = _tracker(tmp_path / "never", tracking_uri="http://127.0.0.1:1")
    assert isinstance(tracker, MLflowTracker)
    assert not (tmp_path / "never").exists()
    assert tracker.run_id is None and tracker.resolved_uri is None
    tracker.finish("FAILED")  # finish without start is a no-op


def test_run_roundtrip(store_dir, tmp_path):
    run_dir = tmp_path / "run"
    params = {f"group.key_{i:03d}": i for i in range(250)}  # three log_batch calls
    params["dataset.long"] = "x" * 10_000
    params["weird key=(1)"] = "ok"
    tags = {"family": "policy", "overrides": "policy=act env=pusht"}
    artifact = tmp_path / "config.yaml"
    artifact.write_text("steps: 10\n")

    tracker = _tracker(store_dir, run_name="roundtrip")
    run_id = tracker.start(run_dir, params, tags)
    assert run_id is not None and tracker.run_id == run_id
    for step in (0, 10, 20):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1), "train/lr": 1e-4}, step)
    tracker.log_artifact(artifact)
    tracker.log_artifact(artifact, artifact_path="configs")
    tracker.finish("FINISHED")
    tracker.finish("FAILED")  # second call changes nothing

    client = _client(store_dir)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "roundtrip"
    assert len(run.data.params) == 252
    assert run.data.params["group.key_007"] == "7"
    assert run.data.params["weird key__1_"] == "ok"
    long = run.data.params["dataset.long"]
    assert len(long) == 6000 and long.endswith("[truncated, 10000 chars]")
    assert run.data.tags["family"] == "policy"
    assert run.data.tags["overrides"] == "policy=act env=pusht"
    assert run.data.tags["run_dir"] == str(run_dir)
    assert "mlflow.user" in run.data.tags
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (10, 1 / 11), (20, 1 / 21)]
    assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml", "configs"]

    artifact_root = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifact_root.is_relative_to(store_dir / "mlartifacts" / "hydrabot")
    assert (artifact_root / "configs" / "config.yaml").read_text() == "steps: 10\n"
    assert not (Path.cwd() / "mlruns").exists()

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 10, 20]


def test_failed_status_and_parent(store_dir, tmp_path):
    parent = _tracker(store_dir)
    parent_id = parent.start(tmp_path / "sweep", {}, {})
    child = _tracker(store_dir)
    child_id = child.start(tmp_path / "job0", {"lr": 0.1}, {}, parent_run_id=parent_id)
    child.log_metrics({"loss": float("nan")}, 0)
    child.finish("FAILED")
    parent.finish("KILLED")

    client = _client(store_dir)
    child_run = client.get_run(child_id)
    assert child_run.info.status == "FAILED"
    assert child_run.data.tags["mlflow.parentRunId"] == parent_id
    assert client.get_run(parent_id).info.status == "KILLED"


def test_resume_continues_the_same_run(store_dir, tmp_path, caplog):
    run_dir = tmp_path / "run"
    first = _tracker(store_dir)
    run_id = first.start(run_dir, {"steps": 100, "lr": 0.1}, {"attempt": "1"})
    first.log_metrics({"loss": 1.0}, 50)
    first.finish("KILLED")

    second = _tracker(store_dir)
    assert second.start(run_dir, {"steps": 200, "lr": 0.1, "new": "x"}, {"attempt": "2"},
                        resume_run_id=run_id) == run_id
    client = _client(store_dir)
    assert client.get_run(run_id).info.status == "RUNNING"
    second.log_metrics({"loss": 0.5}, 100)
    second.finish("FINISHED")

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"steps": "100", "lr": "0.1", "new": "x"}
    assert run.data.tags["attempt"] == "2"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [
        (50, 1.0), (100, 0.5)
    ]
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [50, 100]
    assert any("steps" in r.getMessage() for r in _tracking_warnings(caplog))
    assert len(client.search_runs([run.info.experiment_id])) >= 1


@pytest.mark.parametrize("missing", ["0" * 32, "not-a-run-id"])
def test_resume_of_unknown_run_starts_a_new_one(store_dir, tmp_path, missing):
    tracker = _tracker(store_dir)
    run_id = tracker.start(tmp_path, {}, {}, resume_run_id=missing)
    tracker.finish("FINISHED")
    assert run_id not in (None, missing)
    run = _client(store_dir).get_run(run_id)
    assert run.data.tags["resumed_from_run_id"] == missing
    assert run.info.status == "FINISHED"


def test_env_tracking_uri_is_honoured(store_dir, tmp_path, monkeypatch):
    env_uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    tracker = _tracker(tmp_path / "unused")
    run_id = tracker.start(tmp_path / "run", {"a": 1}, {})
    tracker.finish("FINISHED")

    assert tracker.resolved_uri == env_uri
    assert not (tmp_path / "unused").exists()
    assert MlflowClient(env_uri).get_run(run_id).info.status == "FINISHED"


def test_explicit_uri_beats_env(store_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    tracker = _tracker(tmp_path, tracking_uri=f"sqlite:///{store_dir / 'mlflow.db'}")
    assert tracker.start(tmp_path / "run", {}, {}) is not None
    tracker.finish("FINISHED")
    assert tracker.enabled is False and tracker.resolved_uri.startswith("sqlite:///")


def test_dead_server_costs_seconds_and_one_warning(tmp_path, caplog):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run_dir = tmp_path / "run"
    tracker = _tracker(tmp_path / "unused", tracking_uri=uri)

    t0 = time.monotonic()
    assert tracker.start(run_dir, {"a": 1}, {"t": "v"}) is None
    for step in range(5):
        tracker.log_metrics({"loss": float(step)}, step)
    tracker.log_artifact(__file__)
    tracker.finish("FINISHED")
    tracker.finish("FAILED")
    assert time.monotonic() - t0 < 10

    warnings = _tracking_warnings(caplog)
    assert len(warnings) == 1
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    message = warnings[0].getMessage()
    assert uri in message and str(run_dir / "metrics.jsonl") in message
    assert [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")] == [0, 1, 2, 3, 4]
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the probe's limits are undone


def test_resume_with_dead_server_keeps_the_run_id(tmp_path):
    tracker = _tracker(tmp_path, tracking_uri=f"http://127.0.0.1:{free_port()}")
    assert tracker.start(tmp_path / "run", {}, {}, resume_run_id="abc") == "abc"
    tracker.finish("FAILED")


def _wait_until(condition, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:.0f} s"
        time.sleep(0.05)


def _steps(client, run_id, key):
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_outage_mid_run_is_sent_once_the_server_answers_again(store_dir, tmp_path, caplog):
    tracker = _tracker(store_dir)
    run_id = tracker.start(tmp_path / "run", {"lr": 0.1}, {})
    real = tracker._client.log_batch
    down = threading.Event()
    down.set()
    attempts = []

    def flaky(*args, **kwargs):
        attempts.append(1)
        if down.is_set():
            raise ConnectionError("server went away")
        return real(*args, **kwargs)

    assert tracker.flush(60), "the params did not reach the store"
    tracker._client.log_batch = flaky
    for step in range(5):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step)
    assert tracker.pending == 5  # queued: the steps did not wait for the server
    _wait_until(lambda: len(attempts) >= 2, "a retry after the first failure")
    down.clear()
    for step in range(5, 8):
        tracker.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step)
    tracker.finish("FINISHED")

    client = _client(store_dir)
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in ("loss", "lr"):
        assert _steps(client, run_id, key) == list(range(8)), key
    assert client.get_run(run_id).data.params == {"lr": "0.1"}
    warnings = [r.getMessage() for r in _tracking_warnings(caplog)]
    assert len(warnings) == 1 and "sent again in the background" in warnings[0]
    assert str(tmp_path / "run" / "metrics.jsonl") in warnings[0]


def test_a_batch_resent_after_a_lost_answer_is_stored_once(store_dir, tmp_path):
    """The first attempt commits but its answer never arrives: the retry must not duplicate steps."""
    tracker = _tracker(store_dir)
    run_id = tracker.start(tmp_path / "run", {}, {})
    real = tracker._client.log_batch
    lost = []

    def commit_then_lose_the_answer(*args, **kwargs):
        real(*args, **kwargs)
        if not lost:
            lost.append(1)
            raise ConnectionError("connection reset before the answer")

    tracker._client.log_batch = commit_then_lose_the_answer
    for step in range(3):
        tracker.log_metrics({"loss": float(step), "lr": 0.1}, step)
    tracker.finish("FINISHED")

    assert lost, "the lost answer was never simulated"
    client = _client(store_dir)
    for key in ("loss", "lr"):
        assert _steps(client, run_id, key) == [0, 1, 2], key


def test_server_down_at_the_end_then_a_resume_sends_the_rest(store_dir, tmp_path, caplog):
    run_dir = tmp_path / "run"
    tracker = _tracker(store_dir, flush_timeout_s=0.5)
    run_id = tracker.start(run_dir, {}, {})
    for step in (1, 2):
        tracker.log_metrics({"loss": float(step)}, step)
    assert tracker.flush(60)

    def broken(*args, **kwargs):
        raise ConnectionError("server went away")

    tracker._client.log_batch = broken
    tracker._client.set_terminated = broken
    for step in (3, 4):
        tracker.log_metrics({"loss": float(step)}, step)
    tracker.finish("KILLED")

    client = _client(store_dir)
    assert client.get_run(run_id).info.status == "RUNNING"  # the server never heard
    assert _steps(client, run_id, "loss") == [1, 2]
    final = _tracking_warnings(caplog)[-1].getMessage()
    assert "2 metric values (steps 3-4)" in final and "the KILLED status" in final
    assert str(run_dir / "metrics.jsonl") in final and "flush_timeout_s=0.5" in final

    # resumed from a checkpoint of step 3: step 4 leaves metrics.jsonl, step 3 reaches the server
    resumed = _tracker(store_dir)
    assert resumed.start(run_dir, {}, {}, resume_run_id=run_id, resume_step=3) == run_id
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    resumed.log_metrics({"loss": 40.0}, 4)
    resumed.finish("FINISHED")
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_no_flush_time_still_sends_what_the_server_takes_at_once(store_dir, tmp_path):
    tracker = _tracker(store_dir, flush_timeout_s=0)
    run_id = tracker.start(tmp_path / "run", {}, {})
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.finish("FINISHED")
    client = _client(store_dir)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert _steps(client, run_id, "loss") == [1]


@pytest.mark.parametrize("value", [-1, 3601])
def test_flush_timeout_out_of_range_is_one_clear_error(store_dir, tmp_path, value):
    tracker = _tracker(store_dir, flush_timeout_s=value)
    with pytest.raises(ConfigError, match=r"logger.flush_timeout_s=.* is out of range; use 0 to 3600"):
        tracker.start(tmp_path / "run", {}, {})
    tracker.finish("FAILED")


def test_system_metrics_failure_only_warns(store_dir, tmp_path, caplog, monkeypatch):
    """psutil is optional: without it (or with a broken monitor) the run is tracked anyway."""
    monkeypatch.setitem(sys.modules, "mlflow.system_metrics.system_metrics_monitor", None)
    tracker = _tracker(store_dir, log_system_metrics=True)
    run_id = tracker.start(tmp_path, {}, {})
    tracker.log_metrics({"loss": 1.0}, 0)
    tracker.finish("FINISHED")
    assert tracker.run_id == run_id
    assert _client(store_dir).get_run(run_id).info.status == "FINISHED"
    warnings = [r.getMessage() for r in _tracking_warnings(caplog)]
    assert len(warnings) == 1 and warnings[0].startswith("MLflow system metrics are off: ")


@pytest.mark.slow
def test_real_server_killed_and_restarted_mid_run(tmp_path, caplog):
    """The issue's scenario: the server dies mid-run and comes back; it ends with every step, once."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    servers = [start_server(port, tmp_path)]
    try:
        run_dir = tmp_path / "run"
        artifact = tmp_path / "note.txt"
        artifact.write_text("hello")
        tracker = _tracker(tmp_path / "unused", tracking_uri=uri, request_timeout_s=2, flush_timeout_s=120)
        run_id = tracker.start(run_dir, {"lr": 0.1, "long": "y" * 7000}, {"family": "policy"})
        assert run_id is not None
        for step in range(3):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step)
        tracker.log_artifact(artifact)
        assert tracker.flush(60), "the first steps did not reach the server"
        client = MlflowClient(uri)
        run = client.get_run(run_id)
        assert run.info.status == "RUNNING"
        assert run.data.params["lr"] == "0.1" and len(run.data.params["long"]) == 6000

        stop_server(servers[0])
        for step in range(3, 6):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step)
        tracker.log_artifact(artifact, artifact_path="during_outage")
        assert tracker.pending == 4  # queued, not sent: the steps did not wait for the dead server
        _wait_until(lambda: _tracking_warnings(caplog), "the warning about the dead server")

        servers.append(start_server(port, tmp_path))  # the same store, as a restarted service has
        for step in range(6, 9):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step)
        tracker.finish("FINISHED")

        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key in ("loss", "lr"):
            assert _steps(client, run_id, key) == list(range(9)), key
        assert sorted(a.path for a in client.list_artifacts(run_id)) == ["during_outage", "note.txt"]
        assert len(_tracking_warnings(caplog)) == 1  # the outage, once; nothing was left unsent
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                    and r.name != WARNING_LOGGER]  # urllib3's retry lines are demoted
        assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(range(9))
    finally:
        for server in servers:
            stop_server(server)


def test_experiments_are_marked_as_model_training_and_a_chosen_kind_is_kept(store_dir):
    """MLflow's experiment-kind tag: set on experiments this tracker creates, added to one made before
    (or by another tool) without it, and left alone where someone picked a kind."""
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("made_elsewhere")
    picked = client.create_experiment("picked_kind", tags={mt.EXPERIMENT_KIND_TAG: "genai_development"})
    for name in ("fresh_kind", "made_elsewhere", "picked_kind"):
        tracker = _tracker(store_dir, experiment_name=name)
        tracker.start(store_dir / f"run_{name}", {}, {})
        tracker.finish()
    kind = lambda name: client.get_experiment_by_name(name).tags.get(mt.EXPERIMENT_KIND_TAG)  # noqa: E731
    assert kind("fresh_kind") == kind("made_elsewhere") == mt.TRAINING_EXPERIMENT_KIND == "custom_model_development"
    assert kind("picked_kind") == "genai_development"
    assert {old, picked} <= {e.experiment_id for e in client.search_experiments()}


def test_a_new_run_takes_the_given_name_unless_the_config_names_it(store_dir):
    uri = f"sqlite:///{store_dir / 'mlflow.db'}"
    given = _tracker(store_dir, experiment_name="names")
    run_id = given.start(store_dir / "named", {}, {}, run_name="quickstart steps=5 12-04 10:00:00")
    where = given.location()
    given.finish()
    assert MlflowClient(uri).get_run(run_id).info.run_name == "quickstart steps=5 12-04 10:00:00"
    assert where["run_name"] == "quickstart steps=5 12-04 10:00:00" and where["uri"] == uri
    assert where["command"].endswith(f"mlflow ui --backend-store-uri {uri}")
    assert where["url"].endswith(f"/runs/{run_id}?workflowType=machine_learning")
    configured = _tracker(store_dir, experiment_name="names", run_name="my name")
    run_id = configured.start(store_dir / "named2", {}, {}, run_name="generated")
    configured.finish()
    assert MlflowClient(uri).get_run(run_id).info.run_name == "my name"
