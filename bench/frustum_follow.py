"""What it costs the viewer to keep the training cameras' frustums at their refined poses (viewer/poses.py).

For N frustums on a real viser server (nobody connected: a browser would only add the sending): the
training thread's `request()` (the camera optimizer's corrected poses queued on the device and copied to
the host without waiting), and the panel thread's `apply()` when every frustum moved and when none did.
Each is the median over `--repeats`, with fresh random pose adjustments each time.

    python bench/frustum_follow.py                       # the CPU
    python bench/frustum_follow.py --device cuda         # request() on the GPU (its copy waited for after)
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402
import viser  # noqa: E402

from models.fields.camera_optimizer import CameraOptimizer  # noqa: E402
from viewer.poses import FrustumPoses  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(n: int, device: torch.device, repeats: int) -> dict:
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        handles = [server.scene.add_camera_frustum(f"/cameras/{i:05d}", fov=1.0, aspect=1.0, scale=0.1,
                                                   position=(0.0, 0.0, float(i))) for i in range(n)]
        optimizer = CameraOptimizer(n, mode="SO3xR3").to(device)
        c2w = torch.eye(4, device=device)[:3].repeat(n, 1, 1)
        follow = FrustumPoses(torch.no_grad()(lambda idx: optimizer.corrected_poses(c2w[idx], idx)), range(n),
                              handles, device, server.atomic)
        times = {"request": [], "apply_all_moved": [], "apply_none_moved": []}
        for step in range(repeats):
            with torch.no_grad():
                optimizer.pose_adjustment.normal_(0.0, 0.01)
            t = time.perf_counter()
            follow.request(step, force=True)
            times["request"].append(time.perf_counter() - t)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            assert follow.apply()
            times["apply_all_moved"].append(time.perf_counter() - t)
            follow.request(step, force=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            assert follow.apply()
            times["apply_none_moved"].append(time.perf_counter() - t)
        return {key: 1e3 * statistics.median(values) for key, values in times.items()}
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--frustums", type=int, nargs="+", default=[64, 512])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no OpenMP team to contend)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, viser {viser.__version__}, {args.repeats} repeats (medians)")
    print(f"{'frustums':>9} {'request ms':>11} {'apply, all moved ms':>20} {'apply, none moved ms':>21}")
    for n in args.frustums:
        r = measure(n, device, args.repeats)
        print(f"{n:>9} {r['request']:>11.2f} {r['apply_all_moved']:>20.1f} {r['apply_none_moved']:>21.2f}")


if __name__ == "__main__":
    main()
