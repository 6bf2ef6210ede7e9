"""Seconds per training step of the quick start on the CPU, against torch's thread count and other work.

Each setting runs in a fresh process (OpenMP reads its environment once, when torch loads): the
quick start's Diffusion Policy (experiment=quickstart, its dataset recorded on first use into
$HYDRABOT_HOME) trains for `--steps` steps after `--warmup`, while `--busy` other processes spin on
the CPU, as other users' jobs do on a shared machine. Prints one table (median seconds per step and
the CPU seconds per step this process used).

    python bench/cpu_threads.py --threads 1 2 --busy 0 2 --steps 6
    python bench/cpu_threads.py --threads 1 2 4 8 --busy 0 4 --overrides batch_size=64

`machine.num_threads` (conf/machine/default.yaml) sets the count a run uses; its default comes from the
cores the process may use (training/threads.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def one_setting(threads: int, steps: int, warmup: int, overrides: list[str]) -> dict:
    """Runs in the child process: times training steps of the quick start's pipeline."""
    sys.path.insert(0, str(SRC))
    import torch

    torch.set_num_threads(threads)

    from composed import compose_train
    from pipelines import build_pipeline
    from training.optim import build_optimizer
    from training.rng import seed_everything

    cfg = compose_train(["experiment=quickstart", "logger=none", "machine.device_type=cpu", "num_workers=0",
                         *overrides])
    seed_everything(0)
    pipeline = build_pipeline(cfg, torch.device("cpu"))
    optimizer, _ = build_optimizer(cfg.optimizer, pipeline.optim_params())
    batches = iter(pipeline.batches)
    walls, cpus = [], []
    for i in range(warmup + steps):
        batch = next(batches)
        w, c = time.perf_counter(), time.process_time()
        loss, _ = pipeline.loss(pipeline.model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
    return {"s_per_step": statistics.median(walls), "cpu_s_per_step": statistics.median(cpus),
            "params_m": sum(p.numel() for p in pipeline.model.parameters()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2], help="spinning processes beside the run")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--wait-policy", nargs="+", default=["default"],
                        help="OMP_WAIT_POLICY of the run: default (unset), PASSIVE, ACTIVE")
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides of the quick start")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        threads = int(args.child)
        print(json.dumps(one_setting(threads, args.steps, args.warmup, args.overrides)))
        return
    print(f"cores this process may use: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'threads':>7} {'wait policy':>11} {'busy':>4} {'s/step':>8} {'cpu s/step':>10}")
    for busy in args.busy:
        stop = mp.Event()
        spinners = [mp.Process(target=spin, args=(stop,), daemon=True) for _ in range(busy)]
        for p in spinners:
            p.start()
        try:
            for threads, policy in [(t, w) for t in args.threads for w in args.wait_policy]:
                env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
                if policy != "default":
                    env["OMP_WAIT_POLICY"] = policy
                cmd = [sys.executable, __file__, "--child", str(threads), "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--overrides", *args.overrides]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-3000:])
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{threads:>7} {policy:>11} {busy:>4} {r['s_per_step']:>8.3f} {r['cpu_s_per_step']:>10.3f}", flush=True)
        finally:
            stop.set()
            for p in spinners:
                p.join()


if __name__ == "__main__":
    main()
