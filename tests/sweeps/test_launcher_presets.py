"""The launcher presets (conf/hydra/launcher/) take a cluster's resources from the `machine` group:
composed with Hydra's hydra node, then turned into the sbatch script submitit would submit (no
SLURM needed: the script is only written, never sent)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from omegaconf import OmegaConf

from helpers import CONF_DIR

CLUSTER = ["machine.partition=gpu", "machine.timeout_min=30", "machine.cpus_per_task=4", "machine.mem_gb=16",
           "machine.num_devices=2", "machine.num_machines=3", "machine.max_requeues=5", "machine.signal_delay_s=60"]


def launcher_config(*overrides: str) -> dict:
    """hydra.launcher as a sweep with these overrides would get it, resolved."""
    from hydra import compose, initialize_config_dir

    from config.store import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with_dir = OmegaConf.merge(cfg, {"hydra": {"sweep": {"dir": "/tmp/sweep"}, "job": {"name": "train"}}})
    return OmegaConf.to_container(with_dir.hydra.launcher, resolve=True)


def sbatch_script(launcher: dict, folder: Path) -> tuple[str, object]:
    """What hydra-submitit-launcher's SlurmLauncher.launch hands submitit, as the sbatch text.

    submitit's SlurmExecutor refuses to be built where `srun` is not on PATH (its `affinity()`), though
    writing the script calls no SLURM command; so it is told it is on a cluster, and these tests pass on
    a machine without SLURM as on one with it."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor

    params = {k: v for k, v in launcher.items() if k != "_target_"}
    with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 2)):
        executor = submitit.AutoExecutor(cluster="slurm", folder=folder,
                                         slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid"), executor._executor


def sbatch_options(script: str) -> dict[str, str]:
    lines = [line[len("#SBATCH --"):] for line in script.splitlines() if line.startswith("#SBATCH --")]
    return dict(line.split("=", 1) if "=" in line else (line, "") for line in lines)


@pytest.mark.parametrize("preset, gpus", [("slurm", None), ("slurm_gpu", 2)])
def test_slurm_presets_take_the_machine_group(tmp_path, preset, gpus):
    launcher = launcher_config(f"hydra/launcher={preset}", *CLUSTER)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu"
    assert launcher["timeout_min"] == 30
    assert launcher["cpus_per_task"] == 4
    assert launcher["mem_gb"] == 16
    assert launcher["nodes"] == 3  # machine.num_machines
    # one task per device on every node, CPU jobs too: ranks are SLURM tasks (training.distributed)
    assert launcher["tasks_per_node"] == 2
    assert launcher["gpus_per_node"] == gpus
    assert launcher["max_num_timeout"] == 5 and launcher["signal_delay_s"] == 60

    script, executor = sbatch_script(launcher, tmp_path)
    options = sbatch_options(script)
    assert options["partition"] == "gpu" and options["time"] == "30"
    assert options["nodes"] == "3" and options["ntasks-per-node"] == "2"
    assert options["cpus-per-task"] == "4" and options["mem"] == "16GB"
    assert options["signal"] == "USR2@60"
    assert "requeue" in options  # a job that loses a node goes back in the queue
    assert options.get("gpus-per-node") == (str(gpus) if gpus else None)
    assert executor.max_num_timeout == 5
    assert "export PYTHONPATH=$SLURM_SUBMIT_DIR/src:$PYTHONPATH" in script


def test_slurm_preset_defaults(tmp_path):
    launcher = launcher_config("hydra/launcher=slurm")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["timeout_min"]) == (1, 1, 60)
    assert launcher["partition"] is None and launcher["cpus_per_task"] is None and launcher["mem_gb"] is None
    assert launcher["max_num_timeout"] == 3 and launcher["signal_delay_s"] == 120
    options = sbatch_options(sbatch_script(launcher, tmp_path)[0])
    assert "partition" not in options and "gpus-per-node" not in options and "mem" not in options
    assert options["ntasks-per-node"] == "1" and options["nodes"] == "1"


def test_a_command_line_launcher_key_wins():
    launcher = launcher_config("hydra/launcher=slurm_gpu", *CLUSTER, "hydra.launcher.partition=long",
                               "hydra.launcher.timeout_min=600")
    assert launcher["partition"] == "long" and launcher["timeout_min"] == 600
    assert launcher["gpus_per_node"] == 2


def test_local_preset():
    launcher = launcher_config("hydra/launcher=local", "machine.timeout_min=30", "machine.num_devices=2",
                               "machine.cpus_per_task=2")
    assert launcher["_target_"].endswith("LocalLauncher")
    assert launcher["timeout_min"] == 30 and launcher["cpus_per_task"] == 2
    # one process per job (it spawns its ranks); the job sees machine.num_devices GPUs
    assert launcher["tasks_per_node"] == 1 and launcher["gpus_per_node"] == 2
