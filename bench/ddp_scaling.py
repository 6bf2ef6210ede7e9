"""Data-parallel scaling of Diffusion Policy training: train.py at 1..N ranks, one table.

    python bench/ddp_scaling.py --world-sizes 1 2 --device cuda --steps 60 --batch-size 64

Each world size is a real `src/train.py` run (`machine.num_devices=N`, per-rank batch
`--batch-size`), logger off, no evaluation; samples/s are read back from the run's metrics.jsonl,
the first log interval (warmup) dropped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(world: int, args) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"ddp{world}_"))
    cmd = [sys.executable, str(REPO / "src" / "train.py"), "logger=none", "progress_bar=false", "eval_freq=0",
           "save_checkpoint=false", f"steps={args.steps}", f"log_freq={args.steps // 3}",
           f"batch_size={args.batch_size}", f"num_workers={args.num_workers}", f"machine.num_devices={world}",
           f"machine.device_type={args.device}", f"hydra.run.dir={run_dir}", *args.overrides]
    subprocess.run(cmd, check=True, cwd=REPO)
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    return {"world_size": world, "global_batch": args.batch_size * world,
            "samples_per_s": sum(m["train/samples_per_s"] for m in logs) / len(logs),
            "data_share": sum(m["train/data_share"] for m in logs) / len(logs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=60, help="a multiple of 3: three log intervals, the first dropped")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = p.parse_args()
    rows = [run(w, args) for w in args.world_sizes]
    base = rows[0]["samples_per_s"] / rows[0]["world_size"]
    print("| ranks | global batch | samples/s | scaling efficiency | data-wait share |")
    print("|---|---|---|---|---|")
    for r in rows:
        eff = r["samples_per_s"] / (base * r["world_size"])
        print(f"| {r['world_size']} | {r['global_batch']} | {r['samples_per_s']:.0f} | {eff:.0%} | {r['data_share']:.1%} |")


if __name__ == "__main__":
    main()
