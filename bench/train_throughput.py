"""Diffusion Policy training throughput at the seed's defaults (LeRobot's DiffusionConfig, batch 64).

Runs the project's own loop (pipeline + Trainer, no tracking service) for each setting and prints
one table: samples/s, steps/s, the share of step time spent waiting for data (the loader, plus the
batch's copy to the device and, with uint8 transport, its conversion and augmentation there, as the host
sees it), on CUDA the share of the GPU's time it had no step queued (train/gpu_idle_share: what the wait for
data costs once the host runs ahead of the GPU), the bytes a batch carries from the loader to the device,
peak memory.

    python bench/train_throughput.py --device cpu --steps 6 --warmup 2
    python bench/train_throughput.py --device cuda --amp off bf16 fp16 --steps 60 --warmup 20
    python bench/train_throughput.py --device cuda --steps 100 --warmup 20 --num-workers 8 machine.channels_last=true
    python bench/train_throughput.py --device cuda --steps 100 --warmup 20 --num-workers 8 --transport float32 uint8
    python bench/train_throughput.py --device cuda --steps 100 --warmup 20 --num-workers 8 --graph off on
    python bench/train_throughput.py --device cuda --steps 100 --warmup 20 --num-workers 8 --transport float32 uint8 \
        dataset.image_transforms.enable=true

`--transport` is `machine.uint8_transport` (false: float32 frames made in the workers, as before it);
`--graph` is `machine.cuda_graph` (auto: null, the step captured wherever the run allows it).

Speed levers are the `machine.*` / `optimizer.fused` overrides (training/speed.py), applied as train.py does.

The dataset is the scripted PushT one (recorded on first use into $HYDRABOT_HOME).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))


def measure(amp: str, transport: str, graph: str, args) -> dict:
    import torch

    from composed import compose_train
    from pipelines import build_pipeline
    from tracking.base import NullTracker
    from tracking.local_log import read_metrics
    from training.loop import LoopConfig, Trainer
    from training.rng import seed_everything
    from training.speed import apply_backend_choices, prepare_model

    overrides = [f"batch_size={args.batch_size}", f"num_workers={args.num_workers}", "logger=none",
                 f"dataset.demos.n_episodes={args.episodes}", f"machine.device_type={args.device}",
                 f"machine.uint8_transport={str(transport == 'uint8').lower()}",
                 f"machine.cuda_graph={dict(auto='null', on='true', off='false')[graph]}", *args.overrides]
    cfg = compose_train(overrides)
    seed_everything(0)
    device = torch.device(args.device)
    apply_backend_choices(cfg.machine, device)
    pipeline = build_pipeline(cfg, device)
    prepare_model(pipeline.model, cfg.machine, device)
    carried = []  # bytes of each batch the loader hands to the pipeline's to_device
    to_device = pipeline.to_device

    def counted(batch: dict) -> dict:
        carried.append(sum(v.nbytes for v in batch.values() if isinstance(v, torch.Tensor)))
        return to_device(batch)

    pipeline.to_device = counted
    run_dir = Path(tempfile.mkdtemp(prefix="bench_"))
    tracker = NullTracker()
    tracker.start(run_dir, params={}, tags={})
    loop = LoopConfig(steps=args.warmup + args.steps, use_amp=amp != "off", amp_dtype=amp if amp != "off" else "bf16",
                      log_freq=args.warmup, eval_freq=0, save_freq=0, save_checkpoint=False, progress_bar=False,
                      cuda_graph=cfg.machine.cuda_graph)
    if args.steps % args.warmup:
        raise SystemExit("--steps must be a multiple of --warmup (metrics are averaged per log interval)")
    trainer = Trainer(loop, pipeline, cfg.optimizer, cfg.scheduler, tracker, run_dir, device, "")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit()
    logs = [m for m in read_metrics(run_dir / "metrics.jsonl") if "train/samples_per_s" in m][1:]
    shutil.rmtree(run_dir, ignore_errors=True)
    mean = lambda k: sum(m[k] for m in logs) / len(logs)  # noqa: E731
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
            "amp": amp, "transport": transport, "graph": trainer.graphed, "batch": args.batch_size,
            "params_M": sum(p.numel() for p in pipeline.model.parameters()) / 1e6,
            "samples_per_s": mean("train/samples_per_s"), "steps_per_s": mean("train/steps_per_s"),
            "data_share": mean("train/data_share"),
            "gpu_idle_share": mean("train/gpu_idle_share") if all("train/gpu_idle_share" in m for m in logs) else "-",
            "batch_MB": max(carried) / 1e6, "peak_mem_GiB": peak,
            "peak_kind": "CUDA allocated" if device.type == "cuda" else "process RSS"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", nargs="+", default=["off"], choices=["off", "bf16", "fp16"])
    p.add_argument("--transport", nargs="+", default=["uint8"], choices=["float32", "uint8"],
                   help="how camera frames travel from the loader (machine.uint8_transport)")
    p.add_argument("--graph", nargs="+", default=["auto"], choices=["auto", "on", "off"],
                   help="machine.cuda_graph: null (wherever the run allows it), true, false")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=6, help="measured steps (a multiple of --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--episodes", type=int, default=20, help="scripted episodes to record if the cache is empty")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. policy.down_dims=[256,512,1024]")
    args = p.parse_args()
    rows = [measure(amp, transport, graph, args) for amp in args.amp for transport in args.transport
            for graph in args.graph]
    cols = ["device", "amp", "transport", "graph", "batch", "params_M", "samples_per_s", "steps_per_s", "data_share",
            "gpu_idle_share", "batch_MB", "peak_mem_GiB", "peak_kind"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
