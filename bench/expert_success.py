"""Success of every scripted expert over seeded episodes, one table row per expert.

    python bench/expert_success.py                                   # all experts, seeds 0-49
    python bench/expert_success.py --env pusht --episodes 300 --first-seed 50
    python bench/expert_success.py --env aloha_insertion --insert-gap 0.05    # ACT's final gap

Experts act on the simulator's true state, so nothing is rendered (xarm runs with
`obs_type=state`, aloha with no camera). An episode succeeds when the env reports success
(`terminated` with `is_success`) before its step limit. Aloha episodes take ~0.2-0.8 s each here;
recording them (rendering the camera) is what takes ~30 s. PushT's coverage and CPU cost per
step are in bench/pusht_expert_success.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from data.demos import EXPERTS, MUJOCO_EXPERTS, make_expert_env, run_expert_episode  # noqa: E402

PUSHT_STEPS = 300


def pusht_runner():
    import gymnasium as gym
    import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

    from envs.pusht_expert import PushTExpert

    env = gym.make("gym_pusht/PushT-v0", obs_type="state", max_episode_steps=PUSHT_STEPS)
    expert = PushTExpert()

    def episode(seed: int) -> tuple[bool, int]:
        env.reset(seed=seed)
        expert.reset()
        for steps in range(1, PUSHT_STEPS + 1):
            _, _, terminated, truncated, info = env.step(expert.act(env.unwrapped))
            if terminated or truncated:
                return bool(info.get("is_success", terminated)), steps
        return False, PUSHT_STEPS

    return env, episode


def mujoco_runner(name: str, insert_gap: float | None):
    env, expert = make_expert_env(name, render=False)
    if insert_gap is not None and name == "aloha_insertion":
        expert.insert_gap = insert_gap
    length = MUJOCO_EXPERTS[name][2]
    return env, lambda seed: run_expert_episode(env, expert, seed, length)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", nargs="+", choices=EXPERTS, default=list(EXPERTS), help="experts to run")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--insert-gap", type=float, help="aloha_insertion's final tool-point gap in m (default 0.04)")
    args = p.parse_args()

    seeds = range(args.first_seed, args.first_seed + args.episodes)
    rows = []
    for name in args.env:
        env, episode = pusht_runner() if name == "pusht" else mujoco_runner(name, args.insert_gap)
        start = time.perf_counter()
        results = [episode(seed) for seed in seeds]
        seconds = time.perf_counter() - start
        env.close()
        successes = sum(ok for ok, _ in results)
        mean_steps = sum(steps for _, steps in results) / len(results)
        rows.append((name, f"{successes}/{len(results)}", f"{mean_steps:.0f}", f"{seconds / len(results):.2f}"))
        print(f"{name}: {successes}/{len(results)}", file=sys.stderr)
    print(f"seeds {seeds.start}-{seeds.stop - 1}")
    print("| expert | successes | mean steps | s / episode |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
