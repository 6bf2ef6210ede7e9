"""A folder the run must write but cannot ($HYDRABOT_HOME, the outputs folder, MLflow's sqlite
store) is one `error:` line naming it, the OS's reason and the fix, exit 2, before anything is
created. The folders are made immutable with `chattr +i`, which os.access does not see (nor does
root's permission check), so only trying to write tells."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, TINY_POLICY, one_error_line, run_bounded, tiny_overrides

pytestmark = pytest.mark.slow

TINY = ["experiment=quickstart", "logger=none", "machine.device_type=cpu", "progress_bar=false", "steps=2",
        "batch_size=4", "num_workers=0", "eval_freq=0", "dataset.demos.n_episodes=1", *TINY_POLICY]
TINY_NERF = ["model=nerfacto", "logger=none", "machine.device_type=cpu", "progress_bar=false", "steps=2",
             "data.scene.n_views=4", "data.scene.size=16"]


@contextlib.contextmanager
def immutable(folder: Path):
    """`folder` with the immutable attribute set (nothing can be created in it, not even by root)."""
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("chattr is not installed (e2fsprogs)")
    if done.returncode != 0:
        pytest.skip(f"this file system does not take chattr +i: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def train(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRABOT_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return run_bounded([sys.executable, str(REPO / "src" / "train.py"), *args], env=env, cwd=cwd, timeout=600)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("family", [TINY, TINY_NERF], ids=["dataset", "scene"])
def test_hydrabot_home_in_an_immutable_folder(tmp_path, family):
    with immutable(tmp_path / "locked") as locked:
        line = one_error_line(train([*family, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, locked / "home"))
        assert tree(locked) == []
    assert f"$HYDRABOT_HOME ({locked / 'home'})" in line
    assert f"({locked}: Operation not permitted)" in line and "set HYDRABOT_HOME to a writable folder" in line
    assert tree(tmp_path) == ["locked"]  # no run directory, no outputs/


def test_hydrabot_home_beneath_a_regular_file(tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_error_line(train([*TINY, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, tmp_path / "file" / "home"))
    assert f"({tmp_path / 'file'}: Not a directory)" in line and "set HYDRABOT_HOME to a writable folder" in line
    assert tree(tmp_path) == ["file"] and (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_an_immutable_outputs_folder(tmp_path, mode):
    """The default run (sweep) directory and MLflow store live in the working directory's outputs/."""
    args = [a for a in TINY if a != "logger=none"]
    if mode == "sweep":
        args = ["-m", *args, "seed=1,2"]
    with immutable(tmp_path / "outputs") as outputs:
        line = one_error_line(train(args, tmp_path, tmp_path / "home"))
        assert tree(outputs) == []
    assert f"the {mode} directory outputs/{mode}s/" in line.replace("multiruns", "sweeps")
    assert f"({outputs}: Operation not permitted)" in line and f"set hydra.{mode}.dir=<a writable folder>" in line
    assert tree(tmp_path) == ["outputs"]


def test_an_immutable_mlflow_store_folder(tmp_path, pusht_root):
    """The run directory is elsewhere, but the default sqlite store is in the immutable outputs/:
    refused at once, not after a minute of MLflow retries and a run that tracks nothing."""
    args = [a for a in tiny_overrides(pusht_root, tmp_path / "run") if a != "logger=none"]
    with immutable(tmp_path / "outputs") as outputs:
        line = one_error_line(train(args, tmp_path, tmp_path / "home"))
    assert f"MLflow store {outputs / 'mlflow.db'} cannot be written (Operation not permitted)" in line
    assert "logger.tracking_uri=sqlite:///" in line and "logger=none" in line
    assert tree(tmp_path) == ["outputs"]
