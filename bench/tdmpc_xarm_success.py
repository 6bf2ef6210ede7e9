"""TD-MPC on xArm lift: ours beside LeRobot 0.4.4's TDMPCPolicy, trained offline on the same batches from
the same initial weights and evaluated on the same env seeds, in one process on one device.

1. The project's scripted xArm lift demonstrations (`experiment=tdmpc_xarm`: recorded on first use,
   `--episodes` of them, no video) and its data pipeline give every batch (batch 256, horizon 5, padded
   windows); both policies train on each batch in turn.
2. Both start from the same weights (ours from the seed; LeRobot's loads them: the state dicts share their
   names, see bench/tdmpc_lerobot_parity.py) and train at the recipe's settings: ours with the project's
   optimizer (Adam 3e-4, clipped at 10; fused on CUDA), LeRobot's with its own preset (`AdamConfig`,
   built as its training script builds it), each followed by its target network's moving average.
   LeRobot's policy gets the actions min/max-normalised to [-1, 1], as its processor pipeline would do
   (images and state are not normalised for TD-MPC), and its planned actions are mapped back.
3. Every `--eval-every` steps both are evaluated through the project's evaluator on `--eval-episodes`
   episodes of XarmLift-v0 with seeds 100000, 100001, ... (never a demonstration's seed).

Only the offline phase is side by side: LeRobot 0.4.4's training script has no online training (its
`TrainPipelineConfig` has no `online` options). Ours continues online with
`python src/train.py experiment=tdmpc_xarm ...` (docs/ROBOT_LEARNING.md).

    python bench/tdmpc_xarm_success.py --steps 2000 --eval-every 500                  # one GPU
    python bench/tdmpc_xarm_success.py --device cpu --episodes 2 --steps 4 --eval-every 2 --batch-size 8 \
        --eval-episodes 2 --eval-batch 2 policy.n_gaussian_samples=16 policy.n_pi_samples=4 \
        policy.n_elites=4 policy.cem_iterations=1 env.episode_length=10              # a smoke run

LeRobot is used when `import lerobot` works (see bench/policy_throughput.py); without it only our rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

EVAL_SEED = 100_000


def compose_config(args):
    from composed import compose_train

    return compose_train(["experiment=tdmpc_xarm", "online.steps=0", "logger=none", f"batch_size={args.batch_size}",
                          f"num_workers={args.num_workers}", f"dataset.demos.n_episodes={args.episodes}",
                          "dataset.demos.use_videos=false", f"machine.device_type={args.device}", f"seed={args.seed}",
                          *args.overrides])


class LeRobotTwin:
    """LeRobot's TDMPCPolicy with our policy's settings and weights, its optimizer preset, and the action
    normalisation its processors would apply outside the policy."""

    def __init__(self, ours, stats: dict, device) -> None:
        import torch
        from policy_throughput import _import_lerobot_policies

        _import_lerobot_policies()
        from lerobot.configs.types import FeatureType, PolicyFeature
        from lerobot.policies.tdmpc.configuration_tdmpc import TDMPCConfig
        from lerobot.policies.tdmpc.modeling_tdmpc import TDMPCPolicy

        ours_cfg = dataclasses.asdict(ours.config)
        names = {f.name for f in dataclasses.fields(TDMPCConfig)}
        skip = {"input_features", "output_features", "normalization_mapping", "device"}
        settings = {k: v for k, v in ours_cfg.items() if k in names and k not in skip}
        feature = lambda d: PolicyFeature(FeatureType[d["type"]], tuple(d["shape"]))  # noqa: E731
        config = TDMPCConfig(input_features={k: feature(v) for k, v in ours_cfg["input_features"].items()},
                             output_features={k: feature(v) for k, v in ours_cfg["output_features"].items()},
                             device=str(device), **settings)
        self.policy = TDMPCPolicy(config).to(device)
        self.policy.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("normalizer.")})
        preset = config.get_optimizer_preset()
        self.optimizer, self.clip = preset.build(self.policy.parameters()), preset.grad_clip_norm
        low = torch.as_tensor(stats["action"]["min"], dtype=torch.float32, device=device)
        span = torch.as_tensor(stats["action"]["max"], dtype=torch.float32, device=device) - low
        self.low, self.span = low, torch.where(span == 0, torch.full_like(span, 1e-8), span)

    def train_step(self, batch: dict) -> float:
        import torch

        batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        batch["action"] = (batch["action"] - self.low) / self.span * 2 - 1
        loss, _ = self.policy.forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.policy.update()
        return loss.detach()

    def evaluation_policy(self):
        import torch

        twin = self

        class Acting(torch.nn.Module):
            """The evaluator's interface: raw observations in, env actions out."""

            def __init__(self) -> None:
                super().__init__()
                self.policy = twin.policy

            def reset(self) -> None:
                self.policy.reset()

            def select_action(self, obs):
                action = self.policy.select_action({k: v for k, v in obs.items() if k.startswith("observation.")})
                return (action + 1) / 2 * twin.span + twin.low

        return Acting()


def evaluate(policy, cfg, args) -> dict:
    from envs.evaluate import evaluate_policy

    result = evaluate_policy(policy, cfg.env, n_episodes=args.eval_episodes, batch_size=args.eval_batch,
                             use_async=False, seed=EVAL_SEED, device=args.device, videos_dir=None, progress=False)
    agg = result["aggregated"]
    env_steps = sum(e["length"] for e in result["per_episode"])
    return {"return": agg["avg_sum_reward"], "success": agg["pc_success"], "eval_s": agg["eval_s"],
            "env_steps_per_s": env_steps / agg["eval_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--episodes", type=int, default=50, help="scripted demonstrations (recorded on first use)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--eval-batch", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (key=value)")
    args = parser.parse_args()

    import torch

    from pipelines import build_pipeline
    from training.optim import build_optimizer
    from training.rng import seed_everything
    from training.speed import apply_backend_choices

    cfg = compose_config(args)
    seed_everything(args.seed)
    device = torch.device(args.device)
    apply_backend_choices(cfg.machine, device)
    pipeline = build_pipeline(cfg, device)
    ours = pipeline.model
    optimizer, clip = build_optimizer(cfg.optimizer, pipeline.optim_params())
    params = [p for g in optimizer.param_groups for p in g["params"]]
    impls = {"ours": None}
    try:
        impls["LeRobot 0.4.4"] = LeRobotTwin(ours, pipeline.stats, device)
    except ImportError as e:
        print(f"lerobot is not importable ({e}): only our rows", file=sys.stderr)

    def ours_step(batch: dict):
        loss, _ = ours(dict(batch))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ours.on_optimizer_step()
        return loss.detach()

    steps = {name: (ours_step if twin is None else twin.train_step) for name, twin in impls.items()}
    busy = dict.fromkeys(impls, 0.0)  # seconds of training steps, synchronised around each
    losses = {name: [] for name in impls}
    rows, batches = [], iter(pipeline.batches)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in range(1, args.steps + 1):
        batch = pipeline.to_device(next(batches))
        for name, train_step in steps.items():
            sync()
            t = time.perf_counter()
            losses[name].append(train_step(batch))
            sync()
            busy[name] += time.perf_counter() - t
        if step % args.eval_every == 0 or step == args.steps:
            for name, twin in impls.items():
                policy = ours if twin is None else twin.evaluation_policy()
                result = evaluate(policy, cfg, args)
                if twin is None:
                    ours.train()
                else:
                    twin.policy.train()
                loss = float(torch.stack(losses[name][-args.eval_every:]).mean())
                rows.append({"impl": name, "step": step, "train_loss": loss,
                             "train_samples_per_s": step * args.batch_size / busy[name], **result})
                print(json.dumps(rows[-1]), flush=True)

    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\nTD-MPC, XarmLift-v0: {args.episodes} scripted demos, batch {args.batch_size}, "
          f"{args.eval_episodes} eval episodes (seeds {EVAL_SEED}+) of {cfg.env.episode_length} steps, "
          f"{name}, torch {torch.__version__}; both trained on the same batches from the same weights")
    print("| implementation | step | train loss | eval return (sum) | success | eval env steps/s | "
          "training samples/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['impl']} | {r['step']} | {r['train_loss']:.4f} | {r['return']:.2f} | {r['success']:.0f}% | "
              f"{r['env_steps_per_s']:.1f} | {r['train_samples_per_s']:,.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
