"""How much the live viewer slows nerfacto training: steps/s through the real Trainer, without and with it.

Modes, each on a fresh pipeline built from the same seed (same work), repeated in rotation:
  off     no viewer (the loop's no-op hooks)
  idle    viewer=web serving, nobody connected (the server, the panel's metrics feed)
  static  a camera that rests: progressive renders up to 512 px, then the full view again each second
          while the model changes (what a user watching training sees)
  moving  a camera that moves all the time: a coarse render is always due, so the renderer uses its whole
          share (the worst case)
The cameras are scripted targets of the viewer's own renderer whose pictures are encoded and sent through
viser as a browser's would be (to no one), so no browser is needed. Per mode: steps/s, the slowdown against
`off`, the share of the wall time spent rendering, the renders shown, and the median and 99th percentile
of the time between two steps as the host sees them (a render chunk lent between two steps lengthens that
interval; on CUDA the host runs ahead of the GPU between renders, so these are launch intervals there). Each mode is
one training run: the warm-up steps (kernels, the allocator, the step's capture into a CUDA graph where the
run captures it, the first renders), then the timed steps, from a point where the GPU has been waited for.

    python bench/viewer_overhead.py                                   # CUDA: nerfacto's defaults, 300 steps x 3
    python bench/viewer_overhead.py --graph on off                    # captured step and eager step, a table each
    python bench/viewer_overhead.py --train-util 0.85                 # nerfstudio's default share
    OMP_WAIT_POLICY=PASSIVE python bench/viewer_overhead.py --tiny   # CPU (tiny model)

On a CPU shared with other work, set OMP_WAIT_POLICY=PASSIVE: OpenMP's spinning workers otherwise make
every mode several times slower whenever another process holds a core, and the render thread's own
OpenMP team changes how much they spin (libgomp throttles spinning once there are more threads than
cores), which reads as the viewer making training faster.
"""

from __future__ import annotations

import argparse
import math
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from composed import compose_train  # noqa: E402
from training.loop import LoopConfig, LoopHooks, Trainer  # noqa: E402

MODES = ("off", "idle", "static", "moving")
GRAPH = {"auto": None, "on": True, "off": False}
NERF = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto", "data=synthetic",
        "logger=none", "eval.steps_per_eval_batch=0", "eval.steps_per_eval_image=0",
        "eval.steps_per_eval_all_images=0"]
TINY = ["machine.device_type=cpu", "data.scene.name=bench_tiny32", "data.scene.n_views=16", "data.scene.size=32",
        "data.train_num_rays_per_batch=256", "model.num_levels=6", "model.base_res=8", "model.max_res=64",
        "model.log2_hashmap_size=12", "model.hidden_dim=32", "model.hidden_dim_color=32",
        "model.num_proposal_samples_per_ray=[32,16]", "model.num_nerf_samples_per_ray=16", "use_amp=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stamps(LoopHooks):
    """The viewer's hooks (or none), with the time of each finished step after the warm-up. At the last
    warm-up step the GPU is waited for (the host runs ahead of it) and the viewer's counters are read:
    the timed window starts there."""

    def __init__(self, inner: LoopHooks, warmup: int, device: torch.device, viewer):
        self.inner, self.warmup, self.device, self.viewer = inner, warmup, device, viewer
        self.times: list[float] = []
        self.start, self.shown0, self.render0 = None, 0, 0.0

    def fit_started(self, step):
        self.inner.fit_started(step)

    def step_done(self, step):
        if step == self.warmup:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if self.viewer is not None:
                self.shown0, self.render0 = self.viewer.renderer.images_shown, self.viewer.share.render_seconds
            self.start = time.perf_counter()
        elif step > self.warmup:
            self.times.append(time.perf_counter())
        self.inner.step_done(step)

    def fit_ended(self):
        self.inner.fit_ended()


def scripted_camera(viewer, moving: bool, stop: threading.Event) -> threading.Thread:
    """A renderer target at an orbit around the scene: still, or moved every 50 ms."""
    import viser.transforms as vtf

    from viewer.render import Target, View

    scene = viewer.scene
    center = np.asarray(scene.center, dtype=np.float64)
    start = scene.cameras.camera_to_worlds[0, :, 3].cpu().numpy() - center

    def show(image, depth):
        viewer.server.scene.set_background_image(image, format=viewer.settings.image_format,
                                                 jpeg_quality=viewer.settings.jpeg_quality, depth=depth)

    target = Target(-1, show)

    def view(angle: float) -> View:
        rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
        position = center + 1.5 * rot @ start
        forward = (center - position) / np.linalg.norm(center - position)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        wxyz = vtf.SO3.from_matrix(np.stack([right, down, forward], axis=1)).wxyz  # OpenCV axes
        return View(tuple(wxyz), tuple(position), 0.9, 16 / 9)

    target.move(view(0.0))
    viewer.renderer.add(target)

    def run():
        angle = 0.0
        while not stop.wait(0.05):
            if moving:
                angle += 0.02
                target.move(view(angle))
                viewer.renderer.wake()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run_mode(mode: str, cfg, steps: int, warmup: int, train_util: float, chunk: int, graph: bool | None) -> dict:
    from pipelines.nerf import NerfPipeline
    from tracking.base import NullTracker
    from training.rng import seed_everything
    from viewer.web import WebViewer

    seed_everything(cfg.machine.seed)
    device = torch.device("cuda" if cfg.machine.device_type in ("cuda", "auto") and torch.cuda.is_available()
                          else "cpu")
    pipe = NerfPipeline(cfg, device)
    run_dir = Path(tempfile.mkdtemp(prefix=f"viewer-bench-{mode}-"))
    viewer, stop = None, threading.Event()
    if mode != "off":
        viewer = WebViewer(pipe, run_dir, training=True, total_steps=warmup + steps, relative_log_filename="viewer.txt",
                           websocket_port=None, websocket_port_default=free_port(), websocket_host="127.0.0.1",
                           num_rays_per_chunk=chunk, max_num_display_images=512, quit_on_train_completion=True,
                           image_format="jpeg", jpeg_quality=90, train_util=train_util)
        if mode in ("static", "moving"):
            scripted_camera(viewer, mode == "moving", stop)
    hooks = Stamps(viewer or LoopHooks(), warmup, device, viewer)
    tracker = NullTracker()
    tracker.start(run_dir, params={}, tags={})
    # one fit: the warm-up steps (kernels, allocator, the step's capture where it is captured, the first
    # renders) and then the timed ones
    loop = LoopConfig(steps=warmup + steps, use_amp=cfg.use_amp, amp_dtype=cfg.amp_dtype, log_freq=0, eval_freq=0,
                      save_freq=0, save_checkpoint=False, progress_bar=False, cuda_graph=graph)
    trainer = Trainer(loop, pipe, cfg.optimizer, cfg.scheduler, tracker, run_dir, device, "", hooks=hooks)
    try:
        trainer.fit()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - hooks.start
    finally:
        stop.set()
        if viewer is not None:
            viewer.close()
    gaps = np.diff([hooks.start, *hooks.times])
    return {"steps_per_s": steps / wall, "render_share": ((viewer.share.render_seconds - hooks.render0) / wall
                                                          if viewer else 0.0),
            "shown": (viewer.renderer.images_shown - hooks.shown0) if viewer else 0,
            "gap_median_ms": float(np.median(gaps)) * 1e3, "gap_p99_ms": float(np.percentile(gaps, 99)) * 1e3,
            "device": str(device), "captured": trainer.graphed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-util", type=float, default=0.95, help="the viewer's train_util (its default: 0.95)")
    p.add_argument("--chunk", type=int, default=32768, help="viewer.num_rays_per_chunk (default 32768)")
    p.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (a smoke run)")
    p.add_argument("--graph", nargs="+", default=["auto"], choices=list(GRAPH),
                   help="machine.cuda_graph for the training step: auto (the default: captured where the run allows "
                        "it), on, off; one table each")
    p.add_argument("overrides", nargs="*", help="more Hydra overrides (data.scene.size=128, ...)")
    args = p.parse_args()
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1 (the timed window starts at the last warm-up step)")
    cfg = compose_train([*NERF, *(TINY if args.tiny else []), *args.overrides], resolve=True)
    for setting in args.graph:
        graph = GRAPH[setting]
        results = {mode: [] for mode in MODES}
        for r in range(args.repeats):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):  # alternate the order against drift
                results[mode].append(run_mode(mode, cfg, args.steps, args.warmup, args.train_util, args.chunk, graph))
                print(f"  graph {setting}, repeat {r + 1} {mode:>7}: {results[mode][-1]['steps_per_s']:.2f} steps/s",
                      file=sys.stderr)
        print_table(results, cfg, args, setting)


def print_table(results: dict, cfg, args, setting: str) -> None:
    device = results["off"][0]["device"]
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    captured = {m["captured"] for runs in results.values() for m in runs}
    print(f"device {device} ({name}), torch {torch.__version__}, rays/batch {cfg.data.train_num_rays_per_batch}, "
          f"amp {cfg.use_amp}, implementation {cfg.model.implementation}, train_util {args.train_util}, chunk "
          f"{args.chunk}, {args.steps} steps x {args.repeats} (after {args.warmup} warm-up steps), --graph {setting}: "
          f"step {'captured' if captured == {True} else 'eager' if captured == {False} else 'mixed'}")
    base = statistics.mean(m["steps_per_s"] for m in results["off"])
    print(f"{'mode':>8}{'steps/s':>10}{'min':>8}{'max':>8}{'slowdown':>10}{'render share':>14}{'renders':>9}"
          f"{'gap med ms':>12}{'gap p99 ms':>12}")
    for mode, runs in results.items():
        rate = [m["steps_per_s"] for m in runs]
        mean = statistics.mean(rate)
        print(f"{mode:>8}{mean:>10.2f}{min(rate):>8.2f}{max(rate):>8.2f}{(1 - mean / base) * 100:>9.1f}%"
              f"{statistics.mean(m['render_share'] for m in runs) * 100:>13.1f}%"
              f"{statistics.mean(m['shown'] for m in runs):>9.1f}"
              f"{statistics.mean(m['gap_median_ms'] for m in runs):>12.1f}"
              f"{statistics.mean(m['gap_p99_ms'] for m in runs):>12.1f}")

if __name__ == "__main__":
    main()
