"""mp4 encode/decode: exact timestamps and near-lossless frames."""

import av
import numpy as np

from data.video import VIDEO_CODEC, decode_video, decode_video_to_npy, encode_video, video_info


def test_encode_decode_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.clip(rng.normal(128, 40, size=(25, 30, 34, 3)), 0, 255).astype(np.uint8)  # odd-ish sizes on purpose
    path = tmp_path / "v.mp4"
    encode_video(frames, path, fps=15)
    decoded, times = decode_video(path)
    assert decoded.shape == (25, 3, 30, 34) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(times, np.arange(25) / 15)
    assert np.abs(decoded.transpose(0, 2, 3, 1).astype(int) - frames).max() <= 2
    info = video_info(path)
    assert (info["video.height"], info["video.width"], info["video.fps"]) == (30, 34, 15.0)
    assert info["video.pix_fmt"] == "yuv444p" and info["video.codec"] == "h264"
    assert VIDEO_CODEC in av.codecs_available


def test_decoding_into_a_npy_file_gives_the_same_frames(tmp_path):
    frames = np.random.default_rng(1).integers(0, 255, size=(12, 16, 20, 3), dtype=np.uint8)
    path = tmp_path / "v.mp4"
    encode_video(frames, path, fps=10)
    expected, expected_times = decode_video(path)
    times = decode_video_to_npy(path, tmp_path / "f.npy")
    np.testing.assert_array_equal(times, expected_times)
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy", mmap_mode="r"), expected)
