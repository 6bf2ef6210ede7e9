"""Success rate and cost of the scripted PushT expert (seeds 0..N-1 by default).

Run from the repository root: `python bench/pusht_expert_success.py --n 50`.
The time column is the expert's own CPU time per episode (`act` calls only); the env's stepping
is reported separately so the two can be told apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from envs.pusht_expert import PushTExpert  # noqa: E402


def run_episode(env, expert: PushTExpert, seed: int, max_steps: int) -> dict:
    env.reset(seed=seed)
    expert.reset()
    unwrapped = env.unwrapped
    act_time = step_time = 0.0
    max_coverage = 0.0
    success = False
    steps = 0
    for steps in range(1, max_steps + 1):
        t0 = time.process_time()
        action = expert.act(unwrapped)
        t1 = time.process_time()
        _, _, terminated, truncated, info = env.step(action)
        step_time += time.process_time() - t1
        act_time += t1 - t0
        max_coverage = max(max_coverage, float(info["coverage"]))
        if terminated:
            success = bool(info["is_success"])
            break
        if truncated:
            break
    return {"success": success, "max_coverage": max_coverage, "length": steps,
            "act_s": act_time, "step_s": step_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="episodes, seeds 0..n-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--verbose", action="store_true", help="one line per episode")
    args = parser.parse_args()

    env = gym.make("gym_pusht/PushT-v0", obs_type="state", max_episode_steps=args.max_steps)
    expert = PushTExpert()
    results = []
    for seed in range(args.first_seed, args.first_seed + args.n):
        r = run_episode(env, expert, seed, args.max_steps)
        results.append(r)
        if args.verbose:
            print(f"seed {seed:3d}  success {int(r['success'])}  max_cov {r['max_coverage']:.3f}  "
                  f"len {r['length']:3d}  expert_s {r['act_s']:.3f}")
    env.close()

    def mean(key):
        return float(np.mean([r[key] for r in results]))

    rows = [
        ("episodes", f"{args.n}"),
        ("success rate", f"{mean('success'):.3f}"),
        ("mean max coverage", f"{mean('max_coverage'):.3f}"),
        ("mean episode length", f"{mean('length'):.1f}"),
        ("mean length (successes)",
         f"{np.mean([r['length'] for r in results if r['success']]):.1f}" if any(r["success"] for r in results)
         else "n/a"),
        ("expert CPU s / episode", f"{mean('act_s'):.3f}"),
        ("env step CPU s / episode", f"{mean('step_s'):.3f}"),
        ("expert CPU ms / step", f"{1000 * sum(r['act_s'] for r in results) / sum(r['length'] for r in results):.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
