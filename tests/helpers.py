"""Helpers the tests share (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = str(REPO / "conf")

# A Diffusion Policy small enough for a CPU test step in well under a second.
TINY_POLICY = [
    "policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4", "policy.n_groups=4",
    "policy.diffusion_step_embed_dim=16", "policy.spatial_softmax_num_keypoints=8",
    "policy.noise_scheduler_type=DDIM", "policy.num_inference_steps=2", "policy.drop_n_last_frames=3",
]


def tiny_overrides(pusht_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "experiment=quickstart", "logger=none", "machine.device_type=cpu", "progress_bar=false",
        f"dataset.root={pusht_root}", "steps=4", "batch_size=4", "num_workers=0", "log_freq=2",
        "save_freq=2", "eval_freq=0", "eval.n_episodes=1", "eval.batch_size=1", "env.episode_length=12",
        f"hydra.run.dir={run_dir}", *TINY_POLICY, *extra,
    ]


def run_train(args: list[str], script: str = "train.py", env: dict | None = None,
              timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / "src" / script), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
