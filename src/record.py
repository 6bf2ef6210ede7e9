"""Records scripted-expert demonstrations into a LeRobotDataset, or measures an expert's success.

    python src/record.py expert=aloha_transfer_cube n_episodes=50 root=/data/aloha_tc keep_failed=false
    python src/record.py expert=xarm_lift n_episodes=50 dry_run=true     # success rate only, no dataset

Keys: expert (pusht | aloha_transfer_cube | aloha_insertion | xarm_lift), n_episodes, root (default
$HYDRABOT_HOME/datasets/local/<expert>_scripted), seed (episodes use seed, seed+1, ...), keep_failed,
use_videos, codebase_version (v2.1, the default, or v3.0: LeRobot >= 0.4's many-episodes-per-file layout),
dry_run (run the expert without rendering or writing; aloha renders nothing then).
Prints a progress bar and a final ``success rate: k/n (p%)`` line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULTS = {"expert": "pusht", "n_episodes": 50, "root": None, "seed": 0, "keep_failed": False,
            "use_videos": True, "codebase_version": "v2.1", "dry_run": False}


def parse(argv: list[str]) -> dict:
    from omegaconf import OmegaConf

    bad = [arg for arg in argv if "=" not in arg]
    if bad:
        raise SystemExit(f"error: expected key=value arguments, got {bad}; keys: {', '.join(DEFAULTS)}")
    given = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise SystemExit(f"error: unknown keys {unknown}; keys: {', '.join(DEFAULTS)}")
    return {**DEFAULTS, **given}


def dry_run(expert: str, n_episodes: int, seed: int) -> tuple[int, int]:
    from tqdm import tqdm

    from data.demos import MUJOCO_EXPERTS, make_expert_env, run_expert_episode

    if expert not in MUJOCO_EXPERTS:
        raise SystemExit(f"error: dry_run supports {', '.join(MUJOCO_EXPERTS)} (pusht: bench/pusht_expert_success.py)")
    env, policy = make_expert_env(expert, render=False)
    length = MUJOCO_EXPERTS[expert][2]
    successes = 0
    with tqdm(total=n_episodes, desc=f"{expert} (dry run)", unit="episode") as bar:
        for i in range(n_episodes):
            success, _ = run_expert_episode(env, policy, seed + i, length)
            successes += success
            bar.update(1)
            bar.set_postfix(success=f"{successes}/{i + 1}", refresh=False)
    env.close()
    return successes, n_episodes


def main(argv: list[str]) -> int:
    args = parse(argv)
    from data.demos import EXPERTS, home, record_mujoco, record_pusht

    expert = args["expert"]
    if expert not in EXPERTS:
        print(f"error: unknown expert {expert!r}; available: {', '.join(EXPERTS)}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    if args["dry_run"]:
        successes, attempts = dry_run(expert, int(args["n_episodes"]), int(args["seed"]))
    else:
        root = Path(args["root"]).expanduser() if args["root"] else home() / "datasets" / "local" / f"{expert}_scripted"
        if (root / "meta" / "info.json").is_file():
            print(f"error: {root} already holds a dataset; remove it or pass root=<new path>", file=sys.stderr)
            return 2
        from data.lerobot_writer import CODEBASE_VERSIONS

        version = str(args["codebase_version"])
        if version not in CODEBASE_VERSIONS:
            print(f"error: codebase_version={version} cannot be written; use one of {', '.join(CODEBASE_VERSIONS)}",
                  file=sys.stderr)
            return 2
        kwargs = dict(n_episodes=int(args["n_episodes"]), seed=int(args["seed"]),
                      keep_failed=bool(args["keep_failed"]), use_videos=bool(args["use_videos"]),
                      codebase_version=version)
        if expert == "pusht":
            record_pusht(root, **kwargs)
            successes = attempts = None
        else:
            stats: dict = {}
            record_mujoco(root, expert, stats=stats, **kwargs)
            successes, attempts = stats["successes"], stats["attempts"]
        print(f"dataset: {root}")
    elapsed = time.perf_counter() - start
    if attempts:
        print(f"success rate: {successes}/{attempts} ({100.0 * successes / attempts:.1f}%) in {elapsed:.1f} s")
    else:
        print(f"recorded {args['n_episodes']} episodes in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
