"""Online training throughput: rollout env steps/s and training samples/s, offline vs. online (sync, async).

Runs the project's own loop (pipeline + Trainer + OnlinePhase, no tracking service) for each mode, with
Diffusion Policy on PushT by default (`--policy tdmpc --env xarm`: TD-MPC on xArm lift), and prints one
table:
  env_steps/s   the rollouts' env steps per second (policy inference + simulator, as they feed the buffer)
  rollout_s     seconds spent rolling out (inside the training process for sync, in the other one for async)
  train samp/s  the loop's samples/s over its steps (data + update; rollouts not counted)
  e2e samp/s    samples trained per wall-clock second of the whole run, rollouts and waits included
  online share  the share of batch items drawn from the online buffer

    python bench/online_rollout.py --device cpu --size tiny       # minutes on a shared 2-core CPU
    python bench/online_rollout.py --device cuda --size default --batch-size 64 --steps 200 \\
        --steps-between-rollouts 50 --rollout-episodes 8 --rollout-batch-size 8 --episode-length 300 --num-workers 4
    python bench/online_rollout.py --device cuda --size default --policy tdmpc --env xarm --batch-size 256 \\
        --steps 200 --steps-between-rollouts 50 --rollout-episodes 8 --rollout-batch-size 8 --episode-length 200

The offline dataset: the env's scripted demos, recorded on first use into
$HYDRABOT_HOME/datasets/local/<env>_scripted_bench_online (xArm needs the `xarm` extra and MuJoCo).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

TINY = {
    "diffusion": ["policy.down_dims=[16,32]", "policy.horizon=8", "policy.n_action_steps=4", "policy.n_groups=4",
                  "policy.diffusion_step_embed_dim=16", "policy.spatial_softmax_num_keypoints=8",
                  "policy.noise_scheduler_type=DDIM", "policy.num_inference_steps=2", "policy.drop_n_last_frames=3"],
    "tdmpc": ["policy.latent_dim=8", "policy.mlp_dim=16", "policy.state_encoder_hidden_dim=16",
              "policy.image_encoder_hidden_dim=4", "policy.q_ensemble_size=3", "policy.horizon=3",
              "policy.n_gaussian_samples=16", "policy.n_pi_samples=4", "policy.n_elites=4", "policy.cem_iterations=2"],
}
# Scripted demos of each env, under a name of the bench's own (a small recording never replaces the default's).
DATASETS = {"pusht": "pusht", "xarm": "xarm_lift"}


def measure(mode: str, args) -> dict:
    import torch

    from config.ranges import check_ranges
    from composed import compose_train
    from pipelines import build_pipeline
    from tracking.base import NullTracker
    from tracking.local_log import read_metrics
    from training.loop import LoopConfig, Trainer
    from training.rng import seed_everything

    online = [] if mode == "offline" else [
        f"online.steps={args.steps}", f"online.steps_between_rollouts={args.steps_between_rollouts}",
        f"online.rollout_n_episodes={args.rollout_episodes}", f"online.rollout_batch_size={args.rollout_batch_size}",
        f"online.sampling_ratio={args.sampling_ratio}", f"online.do_rollout_async={mode == 'async'}"]
    overrides = [f"policy={args.policy}", f"env={args.env}", f"dataset={DATASETS[args.env]}",
                 f"batch_size={args.batch_size}", f"num_workers={args.num_workers}", "logger=none",
                 f"dataset.repo_id=local/{args.env}_scripted_bench_online", f"dataset.demos.n_episodes={args.episodes}", f"machine.device_type={args.device}",
                 f"env.episode_length={args.episode_length}", f"steps={args.steps if mode == 'offline' else 0}",
                 *(TINY[args.policy] if args.size == "tiny" else []), *online, *args.overrides]
    cfg = compose_train(overrides)
    check_ranges(cfg)
    seed_everything(0)
    device = torch.device(args.device)
    pipeline = build_pipeline(cfg, device)
    run_dir = Path(tempfile.mkdtemp(prefix="bench_online_"))
    try:
        tracker = NullTracker()
        tracker.start(run_dir, params={}, tags={})
        # eager in every row: the online rows cannot capture their step (their batches change keys), so the
        # offline row does not either, and the rows compare rollouts, not step capture
        loop = LoopConfig(steps=args.steps, log_freq=args.steps_between_rollouts, eval_freq=0, save_freq=0,
                          save_checkpoint=False, progress_bar=False, cuda_graph=False)
        trainer = Trainer(loop, pipeline, cfg.optimizer, cfg.scheduler, tracker, run_dir, device, "")
        start = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - start
        logs = read_metrics(run_dir / "metrics.jsonl")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    train = [m for m in logs if "train/samples_per_s" in m]
    rollouts = [m for m in logs if "online/env_steps" in m]
    env_steps = sum(m.get("online/env_steps_per_s", 0) * m.get("online/rollout_s", 0) for m in rollouts)
    rollout_s = sum(m.get("online/rollout_s", 0) for m in rollouts)
    shares = [m["train/online_share"] for m in train if "train/online_share" in m]
    return {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
            "mode": mode, "policy": args.policy, "env": args.env, "size": args.size, "batch": args.batch_size, "steps": args.steps,
            "rollouts": round(rollouts[-1]["online/episodes"] / args.rollout_episodes) if rollouts else 0,
            "env_steps": env_steps,
            "env_steps_per_s": env_steps / rollout_s if rollout_s else float("nan"), "rollout_s": rollout_s,
            "train_samples_per_s": sum(m["train/samples_per_s"] for m in train) / len(train),
            "e2e_samples_per_s": args.steps * args.batch_size / wall,
            "online_share": sum(shares) / len(shares) if shares else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--policy", default="diffusion", choices=sorted(TINY))
    p.add_argument("--env", default="pusht", choices=sorted(DATASETS))
    p.add_argument("--size", default="tiny", choices=["tiny", "default"], help="tiny widths, or LeRobot's defaults")
    p.add_argument("--modes", nargs="+", default=["offline", "sync", "async"], choices=["offline", "sync", "async"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per mode (all online for sync/async)")
    p.add_argument("--steps-between-rollouts", type=int, default=4)
    p.add_argument("--rollout-episodes", type=int, default=2)
    p.add_argument("--rollout-batch-size", type=int, default=2)
    p.add_argument("--episode-length", type=int, default=20)
    p.add_argument("--sampling-ratio", type=float, default=0.5)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--episodes", type=int, default=4, help="scripted episodes to record if the cache is empty")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides (policy.*, ...)")
    args = p.parse_args()
    if args.steps % args.steps_between_rollouts:
        raise SystemExit("--steps must be a multiple of --steps-between-rollouts (metrics are logged per rollout)")
    rows = [measure(mode, args) for mode in args.modes]
    head = f"{'mode':8} {'rollouts':>8} {'env steps':>9} {'env_steps/s':>11} {'rollout_s':>9} {'train samp/s':>12} " \
           f"{'e2e samp/s':>10} {'online share':>12}"
    print(f"device: {rows[0]['device']}, {args.policy} ({args.size}) on {args.env}, batch {args.batch_size}, "
          f"{args.steps} steps, rollouts of {args.rollout_episodes} episodes x {args.episode_length} steps on "
          f"{args.rollout_batch_size} envs every {args.steps_between_rollouts} steps")
    print(head)
    for r in rows:
        print(f"{r['mode']:8} {r['rollouts']:>8} {r['env_steps']:>9.0f} {r['env_steps_per_s']:>11.1f} "
              f"{r['rollout_s']:>9.2f} {r['train_samples_per_s']:>12.1f} {r['e2e_samples_per_s']:>10.1f} "
              f"{r['online_share']:>12.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
