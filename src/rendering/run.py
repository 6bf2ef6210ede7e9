"""`python src/render.py checkpoint=<ckpt> camera_path=orbit|<camera_path.json> [option=value ...]`.

Renders a neural-field checkpoint along a trajectory (see `rendering.camera_paths`) to an mp4
(H.264, PyAV) or a folder of PNG frames, nerfstudio's ns-render. `rendered_output_names` puts
several model outputs side by side (`[rgb,depth]`); a one-channel output (depth, accumulation) is
shown in grey, scaled by its range over the whole trajectory so that the video does not flicker.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import yaml

from config.errors import ConfigError
from rendering.camera_paths import FRAMES, orbit, read_camera_path

ORBIT = "orbit"


@dataclass
class RenderOptions:
    camera_path: str = ORBIT  # "orbit" or a nerfstudio camera_path.json
    output: str | None = None  # default: <run dir>/renders/<orbit | the json's name>[.mp4]
    output_format: str = "video"  # video (mp4) | images (a folder of 00000.png, ...)
    rendered_output_names: list = field(default_factory=lambda: ["rgb"])
    camera_path_frame: str = "original"  # a camera_path.json's frame: original (the dataset's) | dataparser
    frames: int | None = None  # orbit only (default 120)
    fps: float | None = None  # orbit only (default 24); a camera_path.json has its own
    radius: float | None = None  # orbit only (default: the training cameras' median)
    height: float | None = None  # orbit only (default: the training cameras' median, along their up)


ORBIT_ONLY = ("frames", "fps", "radius", "height")


def split_args(args: dict[str, str]) -> tuple[RenderOptions, dict[str, str]]:
    """Render options (typed as YAML values) and the rest: overrides of the checkpoint's config."""
    names = {f.name for f in dataclasses.fields(RenderOptions)}
    values = {k: yaml.safe_load(v) for k, v in args.items() if k in names}
    for k in ORBIT_ONLY:
        v = values.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int if k == "frames" else (int, float))):
            raise ConfigError(f"{k}={v} is not {'an integer' if k == 'frames' else 'a number'}")
    opts = RenderOptions(**values)
    if opts.camera_path != ORBIT and (given := [k for k in ORBIT_ONLY if values.get(k) is not None]):
        raise ConfigError(f"{', '.join(given)} only apply to camera_path=orbit; {opts.camera_path} sets its own frames")
    if opts.output_format not in ("video", "images"):
        raise ConfigError(f"output_format={opts.output_format} is not one of video, images")
    if opts.camera_path_frame not in FRAMES:
        raise ConfigError(f"camera_path_frame={opts.camera_path_frame} is not one of {', '.join(FRAMES)}")
    names_out = opts.rendered_output_names
    if isinstance(names_out, str):
        opts.rendered_output_names = [names_out]
    return opts, {k: v for k, v in args.items() if k not in names}


def trajectory(pipeline, opts: RenderOptions):
    """(cameras on the model's device, fps) for the options."""
    dm = pipeline.datamanager
    if opts.camera_path == ORBIT:
        cams = orbit(dm.train_cameras, opts.frames or 120, opts.radius, opts.height)
        fps = opts.fps or 24
    else:
        out = dm.train_outputs
        cams, fps = read_camera_path(opts.camera_path, out.file_transform, out.file_scale, opts.camera_path_frame)
    return cams.to(pipeline.device), fps


@torch.no_grad()
def render_frames(model, cameras, names: list[str], chunk: int | None = None) -> list[np.ndarray]:
    """uint8 (H, W * len(names), 3) frames, the outputs side by side."""
    model.eval()
    panels: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for i in range(len(cameras)):
        h, w = int(cameras.height[i, 0]), int(cameras.width[i, 0])
        outputs = model.render_image(cameras.generate_image_rays(i), chunk)
        missing = [n for n in names if n not in outputs]
        if missing:
            raise ConfigError(f"rendered_output_names: {', '.join(missing)} not among the model's outputs "
                              f"({', '.join(sorted(outputs))})")
        for n in names:
            panels[n].append(outputs[n].view(h, w, -1).float().cpu())
    for n, images in panels.items():
        if images[0].shape[-1] == 1:  # depth-like: grey, one scale for the whole trajectory
            lo = min(float(im.min()) for im in images)
            hi = max(float(im.max()) for im in images)
            panels[n] = [((im - lo) / max(hi - lo, 1e-8)).expand(*im.shape[:2], 3) for im in images]
    frames = []
    for i in range(len(cameras)):
        row = torch.cat([panels[n][i][..., :3].clamp(0, 1) for n in names], dim=1)
        frames.append((row * 255).round().to(torch.uint8).numpy())
    return frames


def write(frames: list[np.ndarray], output: Path, output_format: str, fps: float) -> Path:
    if output_format == "images":
        from PIL import Image

        output.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(output / f"{i:05d}.png")
        return output
    from envs.video import write_video

    return write_video(output, frames, Fraction(fps).limit_denominator(1001))


def render(args: dict[str, str]) -> Path:
    from pipelines import load_checkpoint

    if "checkpoint" not in args:
        raise ConfigError("render.py needs checkpoint=<run dir or checkpoint dir>")
    opts, overrides = split_args({k: v for k, v in args.items() if k != "checkpoint"})
    ckpt, pipeline, cfg, state, _ = load_checkpoint(args["checkpoint"], overrides)
    if pipeline.family != "nerf":
        raise ConfigError(f"{ckpt} holds a {pipeline.family} model; render.py renders neural fields "
                          "(evaluate a policy with src/eval.py)")
    pipeline.at_step(int(state["step"]))  # renders as the in-training evaluation of this checkpoint did
    cams, fps = trajectory(pipeline, opts)
    frames = render_frames(pipeline.model, cams, list(opts.rendered_output_names), cfg.eval.chunk)
    name = ORBIT if opts.camera_path == ORBIT else Path(opts.camera_path).stem
    from training.checkpoint import run_dir_of

    run_dir = run_dir_of(ckpt, cfg.get("relative_model_dir"))
    default = run_dir / "renders" / (f"{name}.mp4" if opts.output_format == "video" else name)
    return write(frames, Path(opts.output) if opts.output else default, opts.output_format, fps)
