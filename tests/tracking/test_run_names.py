"""Run names that say what a run is (training.run.run_name) and the swept keys a sweep hands its jobs."""

from __future__ import annotations

from omegaconf import OmegaConf

from sweeps.mlflow_parent import swept_keys
from training.run import run_name

T1 = 1796400000.0  # two start times a second apart
T2 = T1 + 1


def test_the_job_its_distinguishing_overrides_and_the_time():
    overrides = ["experiment=quickstart", "optimizer.lr=3e-4", "hydra.run.dir=/tmp/x", "dataset.root=/data/sets/pusht",
                 "resume=true"]
    name = run_name("quickstart", overrides, started=T1)
    assert name.startswith("quickstart optimizer.lr=3e-4 dataset.root=pusht ")  # a path by its last part
    assert "hydra" not in name and "experiment=" not in name and "resume" not in name
    # the same command twice: two names (MLflow's generated ones repeat whenever the seed does)
    assert run_name("quickstart", overrides, started=T2) != name
    assert run_name("act_aloha", ["policy=act", "env=aloha", "batch_size=8"], started=T1).startswith(
        "act_aloha batch_size=8 ")  # group choices the job name spells are left out
    assert len(run_name("q", [f"k{i}=" + "v" * 30 for i in range(20)], started=T1)) < 160


def test_a_sweep_job_is_named_by_the_values_the_sweep_varies():
    overrides = ["optimizer.lr=1e-4", "seed=2", "machine.partition=gpu"]
    assert run_name("quickstart", overrides, swept=["optimizer.lr", "seed"]) == "optimizer.lr=1e-4 seed=2"


def test_swept_keys_of_a_command_line_and_of_an_optuna_search_space():
    grid = OmegaConf.create({"hydra": {"overrides": {"task": ["optimizer.lr=1e-4,3e-4", "seed=range(1,3)",
                                                              "steps=10"]}}})
    assert swept_keys(grid) == ["optimizer.lr", "seed"]
    optuna = OmegaConf.create({"hydra": {"overrides": {"task": ["steps=10"]},
                                         "sweeper": {"params": {"optimizer.lr": "interval(1e-5, 1e-3)",
                                                                "batch_size": "choice(8, 16)"}}}})
    assert swept_keys(optuna) == ["optimizer.lr", "batch_size"]


def test_what_the_entry_point_added_is_not_in_the_name(monkeypatch, tmp_path):
    """`experiment=nerfacto_quickstart` makes the entry add `~policy data=synthetic optimizer=preset/nerfacto
    scheduler=preset/nerfacto`; the name keeps what was typed."""
    from cli.entry import ADDED_OVERRIDES_ENV, prepare_argv
    from config.store import register_schemas
    from helpers import CONF_DIR
    from training.run import typed_overrides

    register_schemas()
    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path))
    monkeypatch.setenv(ADDED_OVERRIDES_ENV, "[]")  # restored after the test
    typed = ["experiment=nerfacto_quickstart", "steps=10", f"hydra.run.dir={tmp_path / 'run'}"]
    argv = prepare_argv(["train.py", *typed], CONF_DIR, "train")
    assert "optimizer=preset/nerfacto" in argv and "data=synthetic" in argv
    assert typed_overrides(argv[1:]) == typed
    name = run_name("nerfacto_quickstart", typed_overrides(argv[1:]), started=T1)
    assert name.startswith("nerfacto_quickstart steps=10 ")
