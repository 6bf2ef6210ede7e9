"""ACT on scripted ALOHA transfer-cube demonstrations: our implementation beside LeRobot 0.4.4's,
trained on the same batches for the same number of steps and evaluated on the same seeds.

What it does, in one command:
1. records `--episodes` scripted demonstrations (`envs.aloha_expert.TransferCubeExpert`, seeds 0, 1,
   ...; the `top` camera at 480x640, the 14 joint positions and actions) in `--workers` processes;
2. trains ours and LeRobot's ACT at the recipe's settings (batch 8, chunk 100, AdamW 1e-5 with the
   backbone group at 1e-5, weight decay 1e-4, gradients clipped at 10) in two processes at once on one
   GPU, both drawing the same frame indices from one seeded generator; each saves its weights every
   `--save-every` steps until `--seconds` have passed or `--steps` are done;
3. evaluates both at the last step both reached, `--eval-episodes` episodes of AlohaTransferCube-v0
   with seeds 100000, 100001, ... (never a demonstration's seed), through the project's evaluator.

Both see the same normalisation (mean/std of the demonstrations' state, action and per-channel image
values): ours normalises inside the policy; LeRobot's policy gets the batch normalised here, as its
processor pipeline would. The ResNet-18 backbone starts from random weights in both
(`pretrained_backbone_weights=None`): no ImageNet weights can be downloaded on the measuring machine.
The table gives the success rate and the mean of each episode's highest reward (gym-aloha's stages:
1 touched, 2 lifted, 3 transfer attempted, 4 transferred).

    python bench/act_success.py --seconds 330 --out /tmp/act_success          # one GPU
    python bench/act_success.py --small --episodes 1 --steps 4 --save-every 2 --eval-episodes 1 \
        --eval-length 10 --device cpu                                        # a smoke run

LeRobot is used when `import lerobot` works (see bench/policy_throughput.py); without it only our
row is trained and evaluated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

TASK = "AlohaTransferCube-v0"
IMAGE_KEY = "observation.images.top"
EVAL_SEED = 100_000
SMALL = {"dim_model": 64, "dim_feedforward": 128, "n_encoder_layers": 1, "n_vae_encoder_layers": 1,
         "chunk_size": 10, "n_action_steps": 10}


# ----------------------------------------------------------------------------- 1. demonstrations
def record_episodes(seeds: list[int], out: str) -> list[tuple[int, bool, int]]:
    """Runs the scripted expert on each seed and saves frames (observation before the action) as
    `ep_<seed>.npz`; returns (seed, success, length) per episode."""
    import gymnasium as gym

    from envs.aloha_expert import TransferCubeExpert, render_only
    from envs.factory import import_env_package

    import_env_package("aloha")
    env = gym.make(f"gym_aloha/{TASK}", obs_type="pixels_agent_pos", max_episode_steps=400,
                   disable_env_checker=True)
    render_only(env, ("top",))
    expert = TransferCubeExpert()
    results = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        expert.reset(env)
        images, states, actions, success = [], [], [], False
        for _ in range(400):
            action = expert.act(env)
            images.append(obs["pixels"]["top"])
            states.append(np.asarray(obs["agent_pos"], dtype=np.float32))
            actions.append(np.asarray(action, dtype=np.float32))
            obs, _, terminated, truncated, info = env.step(action)
            success = bool(info.get("is_success", terminated))
            if terminated or truncated:
                break
        np.savez(Path(out) / f"ep_{seed:05d}.npz", image=np.stack(images), state=np.stack(states),
                 action=np.stack(actions))
        results.append((seed, success, len(actions)))
    env.close()
    return results


def record(args, work: Path) -> dict:
    """The demonstrations as one memory-mapped array set plus their statistics."""
    start = time.perf_counter()
    seeds = list(range(args.episodes))
    shards = [seeds[i::args.workers] for i in range(min(args.workers, len(seeds)))]
    with ProcessPoolExecutor(len(shards), mp_context=get_context("spawn")) as pool:
        results = [r for part in pool.map(record_episodes, shards, [str(work)] * len(shards)) for r in part]
    results.sort()
    lengths = [n for _, _, n in results]
    n = sum(lengths)
    images = np.lib.format.open_memmap(work / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 480, 640, 3))
    states, actions, ends = np.zeros((n, 14), np.float32), np.zeros((n, 14), np.float32), np.zeros(n, np.int64)
    at = 0
    for seed, _, length in results:
        path = work / f"ep_{seed:05d}.npz"
        with np.load(path) as ep:
            images[at:at + length], states[at:at + length], actions[at:at + length] = ep["image"], ep["state"], ep["action"]
        ends[at:at + length] = at + length
        at += length
        path.unlink()
    images.flush()
    np.savez(work / "lowdim.npz", state=states, action=actions, end=ends)
    sample = images[:: max(1, n // 500)].astype(np.float32) / 255
    stats = {
        IMAGE_KEY: {"mean": sample.mean(axis=(0, 1, 2)).reshape(3, 1, 1).tolist(),
                    "std": sample.std(axis=(0, 1, 2)).reshape(3, 1, 1).tolist()},
        "observation.state": {"mean": states.mean(0).tolist(), "std": states.std(0).tolist()},
        "action": {"mean": actions.mean(0).tolist(), "std": actions.std(0).tolist()},
    }
    (work / "stats.json").write_text(json.dumps(stats))
    return {"episodes": len(results), "expert_successes": sum(s for _, s, _ in results), "frames": n,
            "mean_length": float(np.mean(lengths)), "record_s": time.perf_counter() - start}


# ----------------------------------------------------------------------------- 2. the two policies
def build(impl: str, stats: dict, small: bool, device: str):
    import torch

    extra = SMALL if small else {}
    torch.manual_seed(0)
    if impl == "ours":
        from data.features import FeatureType, PolicyFeature
        from models.act.modeling import ACTPolicy

        feats = {IMAGE_KEY: PolicyFeature(FeatureType.VISUAL, (3, 480, 640)),
                 "observation.state": PolicyFeature(FeatureType.STATE, (14,)),
                 "action": PolicyFeature(FeatureType.ACTION, (14,))}
        policy = ACTPolicy(features=feats, stats={k: {s: np.asarray(v) for s, v in d.items()} for k, d in stats.items()},
                           pretrained_backbone_weights=None, **extra)
    else:
        from policy_throughput import _import_lerobot_policies

        _import_lerobot_policies()
        from lerobot.configs.types import FeatureType, PolicyFeature
        from lerobot.policies.act.configuration_act import ACTConfig
        from lerobot.policies.act.modeling_act import ACTPolicy

        inputs = {IMAGE_KEY: PolicyFeature(FeatureType.VISUAL, (3, 480, 640)),
                  "observation.state": PolicyFeature(FeatureType.STATE, (14,))}
        policy = ACTPolicy(ACTConfig(input_features=inputs,
                                     output_features={"action": PolicyFeature(FeatureType.ACTION, (14,))},
                                     pretrained_backbone_weights=None, device=device, **extra))
    return policy.to(device)


class Normalised:
    """LeRobot's ACT expects normalised inputs and returns normalised actions (LeRobot >= 0.4 runs
    normalisation in processors outside the policy): this applies the same mean/std as ours."""

    def __init__(self, stats: dict, device) -> None:
        import torch

        self.stats = {k: {s: torch.tensor(v, dtype=torch.float32, device=device) for s, v in d.items()}
                      for k, d in stats.items()}

    def forward(self, batch: dict) -> dict:
        return {k: (v - self.stats[k]["mean"]) / (self.stats[k]["std"] + 1e-8) if k in self.stats else v
                for k, v in batch.items()}

    def inverse_action(self, action):
        return action * (self.stats["action"]["std"] + 1e-8) + self.stats["action"]["mean"]


def train(args, work: Path) -> None:
    """One implementation's training run (a subprocess of the driver)."""
    import torch

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    stats = json.loads((work / "stats.json").read_text())
    images = torch.from_numpy(np.load(work / "images.npy")).to(device)
    lowdim = np.load(work / "lowdim.npz")
    states, actions, ends = (torch.from_numpy(lowdim[k]).to(device) for k in ("state", "action", "end"))
    n = images.shape[0]
    policy = build(args.impl, stats, args.small, args.device)
    policy.train()
    normalise = Normalised(stats, device) if args.impl == "lerobot" else None
    optimizer = torch.optim.AdamW(policy.get_optim_params(), lr=1e-5, weight_decay=1e-4)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    chunk = SMALL["chunk_size"] if args.small else 100
    offsets = torch.arange(chunk, device=device)
    sampler = torch.Generator().manual_seed(args.seed)
    log, start, step = [], time.perf_counter(), 0
    deadline = start + args.seconds
    while step < args.steps and time.perf_counter() < deadline:
        idx = torch.randint(n, (args.batch_size,), generator=sampler).to(device)
        future = idx[:, None] + offsets
        pad = future >= ends[idx][:, None]
        batch = {IMAGE_KEY: images[idx].permute(0, 3, 1, 2).float().div_(255), "observation.state": states[idx],
                 "action": actions[torch.minimum(future, ends[idx][:, None] - 1)], "action_is_pad": pad}
        if normalise is not None:
            batch = normalise.forward(batch)
        loss, _ = policy.forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % args.save_every == 0:
            torch.save(policy.state_dict(), work / f"{args.impl}_{step}.pt")
            log.append({"step": step, "loss": float(loss.detach()), "s": time.perf_counter() - start})
            print(f"{args.impl} step {step} loss {float(loss.detach()):.4f} {time.perf_counter() - start:.0f}s", flush=True)
    (work / f"{args.impl}_train.json").write_text(json.dumps({"steps": step, "log": log,
                                                             "samples_per_s": step * args.batch_size /
                                                             (time.perf_counter() - start)}))


# ----------------------------------------------------------------------------- 3. evaluation
def evaluate(args, work: Path) -> None:
    """One implementation's evaluation at `args.at_step` (a subprocess of the driver)."""
    import torch
    import yaml

    from envs.evaluate import evaluate_policy

    stats = json.loads((work / "stats.json").read_text())
    policy = build(args.impl, stats, args.small, args.device)
    policy.load_state_dict(torch.load(work / f"{args.impl}_{args.at_step}.pt", map_location=args.device))
    normalise = Normalised(stats, args.device) if args.impl == "lerobot" else None

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def reset(self) -> None:
            self.policy.reset()

        def select_action(self, obs):
            if normalise is None:
                return self.policy.select_action(obs)
            return normalise.inverse_action(self.policy.select_action(normalise.forward(obs)))

    env_cfg = yaml.safe_load((ROOT / "conf" / "env" / "aloha.yaml").read_text())
    env_cfg.pop("defaults")
    env_cfg.update(task=TASK, episode_length=args.eval_length)
    result = evaluate_policy(Wrapped(), env_cfg, n_episodes=args.eval_episodes, batch_size=args.eval_batch,
                             use_async=args.eval_batch > 1, seed=EVAL_SEED, device=args.device, videos_dir=None,
                             progress=False)
    (work / f"{args.impl}_eval.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------- driver
def run_roles(role: str, impls: list[str], args, extra: list[str]) -> None:
    """Runs `role` for every implementation at once, as subprocesses of this script."""
    base = [sys.executable, __file__, "--role", role, "--out", str(args.out), "--device", args.device,
            "--seed", str(args.seed), "--batch-size", str(args.batch_size)] + (["--small"] if args.small else [])
    procs = [subprocess.Popen(base + ["--impl", impl] + extra) for impl in impls]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"{role} failed: exit codes {dict(zip(impls, codes))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/act_success"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=330)
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--eval-batch", type=int, default=25)
    parser.add_argument("--eval-length", type=int, default=400)
    parser.add_argument("--small", action="store_true", help="tiny widths and a chunk of 10: a smoke run")
    parser.add_argument("--role", choices=["driver", "train", "eval"], default="driver", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["ours", "lerobot"], help=argparse.SUPPRESS)
    parser.add_argument("--at-step", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.out
    if args.role == "train":
        return train(args, work)
    if args.role == "eval":
        return evaluate(args, work)

    work.mkdir(parents=True, exist_ok=True)
    try:
        from policy_throughput import _import_lerobot_policies

        _import_lerobot_policies()
        impls = ["ours", "lerobot"]
    except ImportError as e:
        impls = ["ours"]
        print(f"lerobot is not importable ({e}): only our row", file=sys.stderr)
    demos = record(args, work)
    print(f"demonstrations: {json.dumps(demos)}", flush=True)
    run_roles("train", impls, args, ["--steps", str(args.steps), "--seconds", str(args.seconds),
                                     "--save-every", str(args.save_every)])
    trained = {impl: json.loads((work / f"{impl}_train.json").read_text()) for impl in impls}
    at_step = min(t["steps"] // args.save_every * args.save_every for t in trained.values())
    if at_step == 0:
        raise SystemExit(f"no implementation reached --save-every={args.save_every} steps: {trained}")
    run_roles("eval", impls, args, ["--at-step", str(at_step), "--eval-episodes", str(args.eval_episodes),
                                    "--eval-batch", str(args.eval_batch), "--eval-length", str(args.eval_length)])
    import torch

    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"\nACT, AlohaTransferCube-v0: {demos['episodes']} scripted demos ({demos['frames']} frames), "
          f"{at_step} steps at batch {args.batch_size}, {args.eval_episodes} eval episodes "
          f"(seeds {EVAL_SEED}+), {name}, torch {torch.__version__}, both trained at once on one device")
    print("| implementation | steps | success | mean max reward | final train loss | training samples/s (shared GPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for impl in impls:
        result = json.loads((work / f"{impl}_eval.json").read_text())
        loss = next(e["loss"] for e in trained[impl]["log"] if e["step"] == at_step)
        print(f"| {impl} | {at_step} | {result['aggregated']['pc_success']:.0f}% | "
              f"{result['aggregated']['avg_max_reward']:.2f} | {loss:.4f} | {trained[impl]['samples_per_s']:.1f} |")


if __name__ == "__main__":
    main()
