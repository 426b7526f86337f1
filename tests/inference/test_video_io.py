"""Video reading: a real generated mp4 (PyAV) and a folder of real frames."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from sam3.inference.video_io import VideoReadError, load_video_frames, probe_video


def write_mp4(path, frames: list[np.ndarray], fps: int = 10) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_mp4_round_trip(tmp_path, coffee):
    frames = [np.roll(coffee, 8 * i, axis=1) for i in range(5)]
    path = tmp_path / "clip.mp4"
    write_mp4(path, frames)
    n, w, h, fps = probe_video(path)
    assert (n, w, h) == (5, 600, 400) and fps == pytest.approx(10.0)
    video = load_video_frames(path, image_size=64)
    assert video.frames.shape == (5, 3, 64, 64) and video.frames.dtype == torch.float16
    assert (video.height, video.width) == (400, 600)
    # normalised to [-1, 1]; the content moves between frames
    assert video.frames.min() >= -1 and video.frames.max() <= 1
    assert (video.frames[0] - video.frames[4]).abs().mean() > 0.05


def test_folder_of_frames_sorted_numerically(tmp_path, astronaut):
    for i in (10, 2, 1):
        Image.fromarray(np.full_like(astronaut, i * 20)).save(tmp_path / f"{i}.png")
    video = load_video_frames(tmp_path, image_size=32)
    assert video.num_frames == 3 and video.fps is None
    firsts = [float(video.frames[k, 0, 0, 0]) for k in range(3)]
    assert firsts == sorted(firsts)  # 1, 2, 10 in numeric order


def test_broken_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(VideoReadError, match="bad.mp4"):
        probe_video(bad)
    with pytest.raises(VideoReadError):
        load_video_frames(bad, image_size=32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="no JPEG/PNG frames"):
        probe_video(empty)
