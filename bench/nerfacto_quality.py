"""nerfacto on the synthetic scene: train rays/s, peak GPU memory and held-out PSNR/SSIM after 1k, 5k
and 30k steps (implementation=torch, AMP on), through the project's own entry point.

Runs `python src/train.py model=nerfacto experiment=nerfacto_blender use_amp=true logger=none
progress_bar=false ...` (nerfstudio's Blender-scene flags on the generated scene in the Blender format;
nerfacto's defaults otherwise: 4096 rays per batch), with the all-images
evaluation every `--eval-every` steps, then reads `<run dir>/metrics.jsonl` and prints one markdown
table. A run can be trained in pieces: `--max-steps` stops this invocation there (a checkpoint is
written at every piece's end), and the next invocation on the same `--run-dir` continues it with
`resume=true` (same schedule: `steps` is only where this piece stops; nerfacto's schedulers have
their own length). `--time-limit` stops the training process after that many seconds; the run then
continues from its last checkpoint (every `--save-freq` steps) next time.

    python bench/nerfacto_quality.py                                   # 30k steps in one go
    python bench/nerfacto_quality.py --max-steps 12000 --time-limit 500    # a first piece ...
    python bench/nerfacto_quality.py                                   # ... continued to 30k
    python bench/nerfacto_quality.py --report                          # only the table of the run dir
    python bench/nerfacto_quality.py --fresh --steps 20 --report-steps 10 20 --eval-every 10 \\
        machine.device_type=cpu data.train_num_rays_per_batch=256     # a smoke test; overrides at the end

The scene is generated on first use into $HYDRABOT_HOME/scenes/synthetic100_blender.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

# nerfstudio's Blender-scene flags (conf/experiment/nerfacto_blender.yaml: near 2 / far 6, no scene
# contraction, white background, uniform initial sampler, pose refinement off) on the project's scene in
# the Blender format, 100 train views at 128 px, scored on its 8 test views. nerfacto's own defaults are
# for unbounded captures; on this bounded scene they score about what an untrained model does on held-out
# views (docs/NEURAL_FIELDS.md, Benchmark, has the measurements).
BASE = ["model=nerfacto", "experiment=nerfacto_blender", "model.implementation=torch", "use_amp=true",
        "amp_dtype=bf16", "logger=none", "progress_bar=false"]
INVOCATIONS = "bench_invocations.jsonl"  # one line per piece: start/end time and step (wall-time column)


def last_checkpoint_step(run_dir: Path) -> int | None:
    last = run_dir / "checkpoints" / "last"
    if not last.exists():
        return None
    import torch

    return int(torch.load(last / "training_state.pt", map_location="cpu", weights_only=True)["step"])


def stop_group(proc: subprocess.Popen) -> int:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    return {"gpu": gpu, "torch": torch.__version__}


def train_piece(args, run_dir: Path) -> list[str]:
    """One invocation of train.py up to min(max_steps, steps); returns the command it ran."""
    start_step = last_checkpoint_step(run_dir)
    stop = min(args.max_steps or args.steps, args.steps)
    if start_step is not None and start_step >= stop:
        print(f"{run_dir} is at step {start_step} already (>= {stop}): nothing to train")
        return []
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *BASE, f"steps={stop}",
           f"eval.steps_per_eval_all_images={args.eval_every}", f"save_freq={args.save_freq}",
           f"log_freq={args.log_freq}", f"hydra.run.dir={run_dir}", *args.overrides]
    if start_step is not None:
        cmd.append("resume=true")
    print("$ python", " ".join(str(Path(c).relative_to(ROOT)) if c == cmd[1] else c for c in cmd[1:]), flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"start_time": time.time(), "start_step": start_step or 0, "stop": stop}
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # the training runs in its own process group: stopped with it at --time-limit, or if this script is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rc = proc.wait(timeout=args.time_limit)
    except subprocess.TimeoutExpired:
        rc = stop_group(proc)
        print(f"stopped after --time-limit {args.time_limit} s; the next invocation resumes from the last checkpoint")
        record["stopped_by_time_limit"] = True
    finally:
        if proc.poll() is None:
            stop_group(proc)
    record.update(end_time=time.time(), returncode=rc, **machine())  # after the training: CUDA starts here
    with (run_dir / INVOCATIONS).open("a") as f:
        f.write(json.dumps(record) + "\n")
    if rc != 0 and not record.get("stopped_by_time_limit"):
        raise SystemExit(f"train.py exited with {rc}")
    return cmd


def read_records(run_dir: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """Training and all-images eval records by step; a step logged twice (a piece redone after a
    resume from an earlier checkpoint) keeps its last record."""
    from tracking.local_log import read_metrics

    train, evals = {}, {}
    for m in read_metrics(run_dir / "metrics.jsonl"):
        if "train/samples_per_s" in m:
            train[m["step"]] = m
        if "eval/psnr" in m:
            evals[m["step"]] = m
    return dict(sorted(train.items())), dict(sorted(evals.items()))


def wall_time(run_dir: Path, t: float) -> float | None:
    """Seconds of bench invocations (process start to exit: startup, training, evals, checkpoints)
    spent before wall-clock time `t`, which lies in one of them."""
    path = run_dir / INVOCATIONS
    if not path.exists():
        return None
    total = 0.0
    for line in path.read_text().splitlines():
        inv = json.loads(line)
        if inv["start_time"] <= t <= inv["end_time"]:
            return total + t - inv["start_time"]
        if inv["end_time"] < t:
            total += inv["end_time"] - inv["start_time"]
    return None


def table(run_dir: Path, report_steps: list[int]) -> list[dict]:
    train, evals = read_records(run_dir)
    rows, prev = [], 0
    for n in report_steps:
        ev = evals.get(n)
        if ev is None:  # not trained that far, or the piece was stopped between the checkpoint and the eval
            rows.append({"steps": n, "reached": False, "trained": bool(train) and max(train) >= n})
            continue
        logged = [(s, m) for s, m in train.items() if s <= n]
        steps_list = [0] + [s for s, _ in logged]
        # each record averages the steps since the one before it: its seconds are interval / steps_per_s
        secs = {s: (s - a) / m["train/steps_per_s"] for (s, m), a in zip(logged, steps_list)}
        rays = {s: m["train/samples_per_s"] * secs[s] for s, m in logged}
        window = [s for s in secs if s > prev]
        peaks = [m["train/peak_mem_gb"] for _, m in logged if "train/peak_mem_gb" in m]
        wall = wall_time(run_dir, ev["time"])
        rows.append({"steps": n, "reached": True,
                     "rays_per_s": sum(rays[s] for s in window) / sum(secs[s] for s in window) if window else math.nan,
                     "peak_mem_gib": max(peaks) if peaks else math.nan,
                     "psnr": ev["eval/psnr"], "psnr_std": ev.get("eval/psnr_std", math.nan),
                     "ssim": ev["eval/ssim"], "ssim_std": ev.get("eval/ssim_std", math.nan),
                     "num_images": int(ev.get("eval/num_images", 0)),
                     "train_s": sum(secs.values()), "wall_s": wall if wall is not None else math.nan})
        prev = n
    return rows


def print_table(rows: list[dict], run_dir: Path) -> None:
    print(f"run dir {run_dir}")
    print("| steps | train rays/s | peak GPU mem (GiB) | PSNR (dB) | SSIM | train time (s) | wall time (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if not r["reached"]:
            print(f"| {r['steps']} | {'trained, not evaluated' if r['trained'] else 'not reached'} | | | | | |")
            continue
        print(f"| {r['steps']} | {r['rays_per_s']:,.0f} | {r['peak_mem_gib']:.2f} | "
              f"{r['psnr']:.2f} ± {r['psnr_std']:.2f} | {r['ssim']:.4f} ± {r['ssim_std']:.4f} | "
              f"{r['train_s']:.0f} | {r['wall_s']:.0f} |")
    n_img = {r["num_images"] for r in rows if r["reached"]}
    if n_img:
        print(f"PSNR/SSIM: mean ± std over the {', '.join(map(str, sorted(n_img)))} held-out views")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=ROOT / "outputs" / "bench" / "nerfacto_quality")
    p.add_argument("--steps", type=int, default=30000, help="the run's last step")
    p.add_argument("--max-steps", type=int, default=None, help="stop this invocation at this step (default --steps)")
    p.add_argument("--report-steps", type=int, nargs="+", default=[1000, 5000, 30000])
    p.add_argument("--eval-every", type=int, default=None,
                   help="eval.steps_per_eval_all_images (default: the gcd of --report-steps)")
    p.add_argument("--save-freq", type=int, default=2000, help="checkpoint every this many steps (nerfstudio's)")
    p.add_argument("--log-freq", type=int, default=200)
    p.add_argument("--time-limit", type=float, default=None, help="seconds after which training is stopped")
    p.add_argument("--fresh", action="store_true", help="delete --run-dir first")
    p.add_argument("--report", action="store_true", help="print the table of --run-dir, train nothing")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for train.py (key=value)")
    args = p.parse_args()
    args.eval_every = args.eval_every or math.gcd(*args.report_steps)
    if any(n % args.eval_every for n in args.report_steps):
        raise SystemExit(f"--eval-every {args.eval_every} must divide every --report-steps {args.report_steps}")
    run_dir = args.run_dir.resolve()
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    if not args.report:
        train_piece(args, run_dir)
    inv = run_dir / INVOCATIONS  # where the run trained (its last piece), else this machine
    where = json.loads(inv.read_text().splitlines()[-1]) if inv.exists() else {}
    where = where if "gpu" in where else machine()
    # the overrides win; with --report these are this command's, not necessarily the run's
    settings = dict(o.split("=", 1) for o in [*BASE[1:5], "machine.cuda_graph=null", *args.overrides] if "=" in o)
    print(f"nerfacto ({', '.join(f'{k}={v}' for k, v in settings.items())}); {where['gpu']}, torch {where['torch']}")
    rows = table(run_dir, args.report_steps)
    print_table(rows, run_dir)
    if args.json:
        args.json.write_text(json.dumps({"gpu": where["gpu"], "torch": where["torch"], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
