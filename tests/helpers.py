"""Helpers the tests share (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = str(REPO / "conf")

# A Diffusion Policy small enough for a CPU test step in well under a second.
TINY_POLICY = [
    "policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4", "policy.n_groups=4",
    "policy.diffusion_step_embed_dim=16", "policy.spatial_softmax_num_keypoints=8",
    "policy.noise_scheduler_type=DDIM", "policy.num_inference_steps=2", "policy.drop_n_last_frames=3",
]


# A TD-MPC small enough for a CPU test step.
TINY_TDMPC = [
    "policy.latent_dim=8", "policy.mlp_dim=16", "policy.state_encoder_hidden_dim=16",
    "policy.image_encoder_hidden_dim=4", "policy.q_ensemble_size=3", "policy.horizon=3",
    "policy.n_gaussian_samples=16", "policy.n_pi_samples=4", "policy.n_elites=4", "policy.cem_iterations=2",
]


def tdmpc_overrides(env: str, root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["policy=tdmpc", f"env={env}", f"dataset.root={root}", "logger=none", "machine.device_type=cpu",
            "progress_bar=false", "steps=4", "batch_size=4", "num_workers=0", "log_freq=2", "save_freq=2",
            "eval_freq=0", "eval.n_episodes=1", "eval.batch_size=1", "eval.max_videos=0", "env.episode_length=10",
            f"hydra.run.dir={run_dir}", *TINY_TDMPC, *extra]


def tiny_overrides(pusht_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "experiment=quickstart", "logger=none", "machine.device_type=cpu", "progress_bar=false",
        f"dataset.root={pusht_root}", "steps=4", "batch_size=4", "num_workers=0", "log_freq=2",
        "save_freq=2", "eval_freq=0", "eval.n_episodes=1", "eval.batch_size=1", "env.episode_length=12",
        f"hydra.run.dir={run_dir}", *TINY_POLICY, *extra,
    ]


def copy_as_killed_after(full: Path, part: Path, step: int) -> Path:
    """`part`: a copy of the finished run `full` as if it had been killed right after its checkpoint at
    `step` (later checkpoints and evaluations gone, `last` pointing at that step), to resume."""
    shutil.copytree(full, part, symlinks=True)
    shutil.rmtree(part / "eval", ignore_errors=True)
    for ckpt in (part / "checkpoints").iterdir():
        if ckpt.name != "last" and int(ckpt.name) > step:
            shutil.rmtree(ckpt)
    (part / "checkpoints" / "last").unlink()
    (part / "checkpoints" / "last").symlink_to(f"{step:06d}")
    return part


def run_bounded(cmd: list[str], env: dict | None = None, timeout: float = 600,
                cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command in its own process group, its output in files rather than pipes.

    Past `timeout` the whole group is killed (daemons and workers it started included) and the
    error carries the output so far. Files, not pipes: a daemon that inherits the output never
    keeps the test waiting for an end of file. Standard input is /dev/null, whatever the test
    runner was given (CI gives none), so nothing waits on a terminal or reads a stray descriptor."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            out.seek(0), err.seek(0)
            raise RuntimeError(f"{' '.join(map(str, cmd))[:300]} did not end within {timeout:.0f} s; "
                               f"its output so far:\n{out.read()[-4000:]}\n{err.read()[-6000:]}") from None
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def run_train(args: list[str], script: str = "train.py", env: dict | None = None,
              timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return run_bounded([sys.executable, str(REPO / "src" / script), *args], env=full_env, timeout=timeout,
                       cwd=REPO)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The bad-input contract: exit 2, no traceback, exactly one `error:` line (returned)."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr[-2000:]
    return errors[0]


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int):
    """A real small disk (tmpfs) mounted at `path` for the block, for disk-full tests; skips the test where
    mounting is not allowed (not root, or no mount privilege in this container)."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def read_metrics(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl records, in order."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
