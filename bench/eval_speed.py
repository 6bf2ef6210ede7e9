"""Env steps per second of evaluate_policy on PushT (96x96 observations), sync vs async envs.

The policy is a constant action, so the numbers are the env + evaluator overhead a real policy
adds its own inference time to. ``build s`` is one ``make_env`` + ``close`` timed on its own (for
async: starting the spawned workers, each of which re-imports this script and so torch);
``eval_s`` and ``steps/s`` include one such build. Run: python bench/eval_speed.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from envs.configs import PushtEnvConfig  # noqa: E402
from envs.evaluate import evaluate_policy  # noqa: E402
from envs.factory import make_env  # noqa: E402


class CentrePolicy:
    def reset(self):
        pass

    def select_action(self, obs):
        return torch.full((obs["observation.state"].shape[0], 2), 256.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--episode-length", type=int, default=100)
    args = parser.parse_args()
    cfg = PushtEnvConfig(episode_length=args.episode_length)
    header = ("envs", "video", "episodes", "env steps", "eval_s", "build s", "steps/s")
    print("{:<6} {:<6} {:>8} {:>10} {:>7} {:>7} {:>8}".format(*header))
    for use_async in (False, True):
        start = time.perf_counter()
        make_env(cfg, args.batch_size, use_async).close()
        build_s = time.perf_counter() - start
        for video in (False, True):
            with tempfile.TemporaryDirectory() as videos_dir:
                result = evaluate_policy(
                    CentrePolicy(), cfg, args.episodes, args.batch_size, use_async, seed=0,
                    device="cpu", videos_dir=videos_dir if video else None, max_videos=1, progress=False,
                )
            steps = sum(e["length"] for e in result["per_episode"])
            seconds = result["aggregated"]["eval_s"]
            name = "async" if use_async else "sync"
            rate = steps / seconds
            row = (name, str(video), args.episodes, steps, f"{seconds:.2f}", f"{build_s:.2f}", f"{rate:.0f}")
            print("{:<6} {:<6} {:>8} {:>10} {:>7} {:>7} {:>8}".format(*row))


if __name__ == "__main__":
    main()
