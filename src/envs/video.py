"""Rollout videos that a browser (and so MLflow's artifact view) plays inline."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int) -> Path:
    """Writes RGB ``uint8 (H, W, 3)`` frames as H.264 in MP4.

    yuv420p is the pixel format browsers decode, and it needs even sides, so an odd last row or
    column is dropped. ``faststart`` moves the index to the front so playback starts before the
    whole file has downloaded. The file appears under its name only once complete.
    """
    import av  # here, not at import: evaluation without videos runs where PyAV is not installed

    if len(frames) == 0:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = (dim - dim % 2 for dim in frames[0].shape[:2])
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    with av.open(str(partial), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            image = np.ascontiguousarray(frame[:height, :width, :3], dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    partial.replace(path)
    return path
