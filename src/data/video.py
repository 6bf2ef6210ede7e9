"""Encode and decode episode videos with PyAV (no ffmpeg binary needed).

Encoding uses H.264 (libx264) in yuv444p at crf 0: quantisation-free, so the only loss is the
RGB <-> YCbCr rounding (1-2 levels per channel at most), which keeps PNG-like fidelity for the
small camera images robot datasets hold while staying a codec every ffmpeg-based reader
(LeRobot's torchcodec/pyav backends included) decodes. One keyframe per second bounds the cost
of readers that seek to a timestamp.

Frame i of an episode is written with pts i in a 1/fps time base, so its timestamp is exactly
i / fps, which is what the parquet's `timestamp` column says.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

VIDEO_CODEC = "libx264"
VIDEO_PIX_FMT = "yuv444p"
_CODEC_OPTIONS = {"crf": "0"}


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def encode_video(frames: np.ndarray, path: str | Path, fps: float) -> None:
    """Write uint8 RGB frames `(N, H, W, 3)` to an mp4, frame i at timestamp i / fps."""
    import av  # here, not at import: datasets without videos load where PyAV is absent
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"encode_video wants uint8 frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
    n, height, width, _ = frames.shape
    rate = _fps_fraction(fps)
    time_base = 1 / rate
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(VIDEO_CODEC, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, VIDEO_PIX_FMT
        stream.time_base = time_base
        stream.options = {**_CODEC_OPTIONS, "g": str(max(1, round(float(rate))))}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts, frame.time_base = i, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_video(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole video: uint8 frames `(N, 3, H, W)` (the layout the dataset serves) and
    their presentation timestamps in seconds `(N,)`."""
    import av  # here, not at import: datasets without videos load where PyAV is absent
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24").transpose(2, 0, 1))
            times.append(float(frame.pts * frame.time_base) if frame.pts is not None else np.nan)
    if not frames:
        return np.empty((0, 3, 0, 0), np.uint8), np.empty((0,), np.float64)
    return np.ascontiguousarray(np.stack(frames)), np.asarray(times, np.float64)


def decode_video_to_npy(path: str | Path, frames_path: str | Path) -> np.ndarray:
    """Decode a whole video straight into a uint8 `.npy` of `(N, 3, H, W)` frames at `frames_path`
    (written through a memory map, so memory stays flat however long the video) and return the
    frames' timestamps in seconds `(N,)`. N is counted from the packets first (one per frame);
    a file whose last packets do not decode (truncated) gets an array of the frames that did."""
    import av  # here, not at import: datasets without videos load where PyAV is absent
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for packet in container.demux(stream) if packet.size)
    times = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        shape = (n, 3, stream.codec_context.height, stream.codec_context.width)
        out = np.lib.format.open_memmap(str(frames_path), mode="w+", dtype=np.uint8, shape=shape)
        for frame in container.decode(stream):
            if len(times) == n:
                raise av.error.InvalidDataError(0, f"more frames than the {n} packets counted")
            out[len(times)] = frame.to_ndarray(format="rgb24").transpose(2, 0, 1)
            times.append(float(frame.pts * frame.time_base) if frame.pts is not None else np.nan)
        out.flush()
    if len(times) < n:  # rare: copy the decoded prefix into a file of the right length
        short = np.ascontiguousarray(out[: len(times)])
        del out
        np.save(str(frames_path), short)
    return np.asarray(times, np.float64)


def video_info(path: str | Path) -> dict:
    """The `info` block LeRobot v2.1 stores with each video feature in `info.json`."""
    import av  # here, not at import: datasets without videos load where PyAV is absent
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {
            "video.fps": float(stream.average_rate or stream.guessed_rate or 0),
            "video.height": stream.codec_context.height,
            "video.width": stream.codec_context.width,
            "video.channels": 3,
            "video.codec": stream.codec_context.name,
            "video.pix_fmt": stream.codec_context.pix_fmt,
            "video.is_depth_map": False,
            "has_audio": any(s.type == "audio" for s in container.streams),
        }
