"""Render a trained neural field along a camera trajectory (nerfstudio's ns-render):

    python src/render.py checkpoint=<run>/checkpoints/last camera_path=orbit frames=120 fps=24
    python src/render.py checkpoint=<run> camera_path=camera_path.json rendered_output_names=[rgb,depth]

Options (rendering/run.py: RenderOptions): camera_path, output, output_format=video|images,
rendered_output_names, camera_path_frame=original|dataparser, and for the orbit frames, fps, radius,
height. Other `key=value` pairs override the checkpoint's config (machine.device_type=cpu, eval.chunk).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli.entry import fail, report_user_errors  # noqa: E402
from training.threads import passive_waits  # noqa: E402

passive_waits()  # before torch loads (training/threads.py)

if __name__ == "__main__":
    from config.store import register_schemas
    from rendering.run import render

    argv = sys.argv[1:]
    if any("=" not in a for a in argv):
        fail(f"usage: python src/render.py checkpoint=<ckpt> [camera_path=orbit|<file.json>] [key=value ...] "
             f"(got {' '.join(argv)})")
    register_schemas()
    with report_user_errors():
        written = render(dict(a.split("=", 1) for a in argv))
    print(f"wrote {written.absolute()}")
