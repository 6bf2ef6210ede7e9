"""nerfacto training-step throughput at the seed's defaults: rays/s, peak memory, per implementation.

The model's loss, backward and one Adam step on random rays (made on the device), the timed steps queued
back to back and the device synchronised only around them, as the training loop runs them; under the loop's
autocast and grad scaler (`--amp`: bf16, as train.py's nerfacto runs on CUDA; fp16 with loss scaling; off = fp32).
bench/nerfacto_quality.py measures the same through train.py, with the data and evaluation.

    python bench/nerfacto_step.py --device cuda --rays 4096 --steps 20
    python bench/nerfacto_step.py --device cuda --implementations torch triton --rays 4096 16384 --steps 20
    python bench/nerfacto_step.py --device cuda --amp off --steps 20
    python bench/nerfacto_step.py --device cpu --rays 256 --steps 3 --amp off
    python bench/nerfacto_step.py --device cuda --implementations triton --graph off on --steps 50 --warmup 12
    python bench/nerfacto_step.py --device cuda --implementations triton --graph on --compile off on --steps 50 --warmup 12

`--graph on` rows replay the step from CUDA graphs (machine.cuda_graph, training/step_graph.py) with a fused,
capturable Adam, and `graph_variant` run on the host before each replay, as the loop does. nerfacto's step has
two variants (proposal networks updated or not) and both are captured in the first 12 steps (updates every
step until step 10, then every other step early in the schedule): their warm-up steps are at least 12.
`--compile on` rows compile the model first (machine.compile, training/speed.py: on by default for nerfacto's
captured step); its warm-up steps then include the compilation, which the timed steps do not. Use it with
`--graph on`: compiled but eager, nerfacto's forward recompiles every step (the proposal schedule's host
integers), which is why machine.compile=null leaves such runs uncompiled.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

from data.nerf.rays import RayBundle  # noqa: E402
from models.nerfacto.model import NerfactoModel  # noqa: E402
from training.device import autocast, grad_scaler  # noqa: E402
from training.speed import prepare_model  # noqa: E402
from training.step_graph import StepGraph  # noqa: E402


def rays(n, device, num_cameras):
    origins = torch.nn.functional.normalize(torch.randn(n, 3, device=device), dim=-1) * 3.0
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, device=device) * 0.5 - origins, dim=-1)
    return RayBundle(origins, dirs, torch.full((n, 1), 1e-6, device=device),
                     torch.randint(0, num_cameras, (n, 1), device=device))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rays", type=int, nargs="+", default=[4096])
    p.add_argument("--implementations", nargs="+", default=["torch"], help="model.implementation values")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", default="bf16", choices=["off", "bf16", "fp16"], help="autocast dtype (off: fp32)")
    p.add_argument("--graph", nargs="+", default=["off"], choices=["off", "on"],
                   help="rows with the step replayed from CUDA graphs (CUDA, no fp16 loss scaling)")
    p.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"],
                   help="rows with the model compiled by torch.compile (machine.compile)")
    args = p.parse_args()
    if "on" in args.graph and (args.device != "cuda" or args.amp == "fp16"):
        p.error("--graph on needs --device cuda and --amp off or bf16 (a captured step takes no grad scaler)")
    if "on" in args.graph and "tcnn" in args.implementations:
        p.error("--graph on cannot take tcnn: its memory arena synchronises the device while a capture runs")
    device, use_amp, dtype = torch.device(args.device), args.amp != "off", "bf16" if args.amp == "off" else args.amp
    print(f"device {args.device} ({torch.cuda.get_device_name(0) if args.device == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, amp {args.amp}, 100 cameras, {args.steps} timed steps after {args.warmup}")
    print("| implementation | step | rays/step | ms/step | rays/s | vs torch eager | peak GiB | params | last loss |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for n_rays in args.rays:
        base = None
        for impl, graph, compiled in itertools.product(args.implementations, args.graph, args.compile):
            ms, mem, n_params, loss = measure(impl, n_rays, device, use_amp, dtype, args, graph == "on",
                                              compiled == "on")
            base = base or (ms if impl == "torch" and graph == "off" and compiled == "off" else None)
            ratio = f"{base / ms:.2f}x" if base else "-"
            step = ("CUDA graphs, fused Adam" if graph == "on" else "eager, foreach Adam") + \
                (", compiled" if compiled == "on" else "")
            print(f"| {impl} | {step} | {n_rays} | {ms:.1f} | {n_rays / ms * 1e3:.0f} | {ratio} | {mem:.2f} | "
                  f"{n_params:,} | {loss:.5f} |", flush=True)


def measure(impl, n_rays, device, use_amp, dtype, args, graphed=False, compiled=False):
    scaler = grad_scaler(device, use_amp, dtype)
    torch.manual_seed(0)
    model = NerfactoModel(100, None, implementation=impl).to(device).train()
    prepare_model(model, {"compile": compiled}, device)
    groups = model.get_param_groups()
    opt = torch.optim.Adam([{"params": v} for v in groups.values() if v], lr=1e-2, eps=1e-15,
                           **({"fused": True, "capturable": True} if graphed else {}))
    n_params = sum(p.numel() for p in model.parameters())

    def body(batch):  # what the graph captures; it adds the optimizer step
        rb, image = batch
        with autocast(device, use_amp, dtype, cache_enabled=not graphed):
            total, logs = model.loss(rb, {"image": image}, 0)
        total.backward()
        return logs

    graph = StepGraph(body, model, opt) if graphed else None
    warmup = max(args.warmup, 12) if graphed else args.warmup
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + args.steps):
        if step == warmup:  # timed steps are queued back to back, as the loop runs them (no host sync)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        torch.manual_seed(step)
        rb = rays(n_rays, device, 100)
        image = torch.rand(n_rays, 3, device=device)
        if graph is not None:
            logs = graph((rb, image), model.graph_variant(step))
            continue
        with autocast(device, use_amp, dtype):
            total, logs = model.loss(rb, {"image": image}, step)
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return 1e3 * seconds / args.steps, mem, n_params, float(logs["rgb_loss"])


if __name__ == "__main__":
    main()
