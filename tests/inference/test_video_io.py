"""Video reading: a real generated mp4 (PyAV) and a folder of real frames."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from sam3.inference.media_paths import VideoReadError
from sam3.inference.video_io import load_video_frames, probe_video


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


# ------------------------------------------------------------------------------------------------ hostile paths
from sam3.inference.media_paths import (  # noqa: E402  (the hostile-path tests read as their own section)
    VideoForbidden,
    VideoTooLarge,
    VideoUnsupported,
)
from sam3.inference.video_io import VideoLimits, open_video  # noqa: E402


def _folder(path, n=3, name=lambda i: f"{i}.png"):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((16, 24, 3), 40 * i, np.uint8)).save(path / name(i))
    return path


def test_paths_are_checked_after_resolving(tmp_path):
    root = tmp_path / "media"
    outside = _folder(tmp_path / "outside")
    root.mkdir()
    roots = (root.resolve(),)
    (root / "link").symlink_to(outside)
    with pytest.raises(VideoForbidden) as err:
        open_video(root / "link", 32, roots=roots)
    # one message for every path outside the roots: never where a symlink leads, nor the roots
    assert str(err.value) == "outside the media roots (SAM_MEDIA_ROOTS)"
    assert str(outside) not in str(err.value) and str(root) not in str(err.value)
    # a folder inside the roots whose frame files are symlinks to files outside them
    inner = root / "frames"
    inner.mkdir()
    for f in outside.iterdir():
        (inner / f.name).symlink_to(f)
    with pytest.raises(VideoForbidden):
        open_video(inner, 32, roots=roots)
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(VideoReadError, match="symlink loop|cannot"):
        open_video(root / "loop", 32, roots=roots)
    with pytest.raises(VideoForbidden):  # ~user is outside the roots whether the user exists or not
        open_video("~nosuchuser_xyz/clip.mp4", 32, roots=roots)
    with pytest.raises(VideoReadError, match="too long|cannot"):
        open_video(root / ("a" * 300 + ".mp4"), 32, roots=roots)
    with pytest.raises(VideoReadError, match="NUL"):
        open_video(str(root) + "/a\x00b", 32, roots=roots)


def test_a_named_pipe_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(VideoUnsupported, match="not a regular file"):
        open_video(fifo, 32)
    frames = _folder(tmp_path / "frames", 2)
    (frames / "0.png").unlink()
    os.mkfifo(frames / "0.png")
    with pytest.raises(VideoUnsupported, match="not a regular file"):
        open_video(frames, 32)


def test_every_frame_file_is_checked_at_open(tmp_path):
    import os

    frames = _folder(tmp_path / "frames", 4)
    (frames / "1.png").unlink()
    os.mkfifo(frames / "1.png")  # not the first file: the open reads only frame 0
    with pytest.raises(VideoUnsupported, match="1.png is not a regular file"):
        open_video(frames, 32)


def test_hard_links_are_refused_only_when_asked(tmp_path, coffee):
    import os

    root = tmp_path / "media"
    frames = _folder(root / "frames", 2)
    outside = tmp_path / "outside.mp4"
    write_mp4(outside, [coffee[:64, :96]] * 3)
    os.link(outside, root / "linked.mp4")
    os.link(frames / "1.png", tmp_path / "other_name.png")
    roots = (root.resolve(),)
    refuse = VideoLimits(refuse_hardlinks=True)
    assert open_video(root / "linked.mp4", 32, roots=roots).num_frames == 3  # the platform cannot tell by default
    assert open_video(frames, 32, roots=roots).num_frames == 2
    with pytest.raises(VideoForbidden, match="2 hard links"):
        open_video(root / "linked.mp4", 32, roots=roots, limits=refuse)
    with pytest.raises(VideoForbidden, match="1.png has 2 hard links"):
        open_video(frames, 32, roots=roots, limits=refuse)


def test_non_ascii_digit_names_sort_by_name(tmp_path):
    arabic = "٠١٢"
    src = _folder(tmp_path / "f", 3, name=lambda i: f"{arabic[i]}.png")
    assert open_video(src, 32).num_frames == 3
    mixed = _folder(tmp_path / "g", 2)
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(mixed / "².png")
    assert open_video(mixed, 32).num_frames == 3


def test_frame_count_and_frame_size_limits(tmp_path, coffee):
    clip = tmp_path / "clip.mp4"
    write_mp4(clip, [coffee[:64, :96]] * 6)
    with pytest.raises(VideoTooLarge, match="more than 5 frames"):
        open_video(clip, 32, limits=VideoLimits(max_frames=5))
    with pytest.raises(VideoTooLarge, match="more than 2 frames"):
        open_video(_folder(tmp_path / "many", 3), 32, limits=VideoLimits(max_frames=2))
    with pytest.raises(VideoTooLarge, match="side limit"):
        open_video(clip, 32, limits=VideoLimits(max_side=64))
    with pytest.raises(VideoTooLarge, match="pixels"):
        open_video(clip, 32, limits=VideoLimits(max_pixels=1000))
    thin = tmp_path / "thin"
    thin.mkdir()
    Image.fromarray(np.zeros((2, 400, 3), np.uint8)).save(thin / "0.png")
    with pytest.raises(VideoTooLarge, match="aspect"):
        open_video(thin, 32)


def test_lazy_reading_matches_eager_in_any_order(tmp_path, coffee):
    """Frames read on demand, backwards and with a tiny cache, equal the frames decoded in one pass."""
    frames = [np.ascontiguousarray(np.roll(coffee[:96, :128], 5 * i, axis=1)) for i in range(12)]
    clip = tmp_path / "clip.mp4"
    write_mp4(clip, frames)
    eager = load_video_frames(clip, image_size=32)
    src = open_video(clip, 32, limits=VideoLimits(cache_mb=3 * 32 * 32 * 3 / 2**20))  # three uint8 frames
    assert src.cache_frames == 3
    for i in [11, 10, 9, 3, 4, 0, 7, 6, 5, 2, 1, 8]:
        assert torch.equal(src.frame(i), eager.frames[i]), i
    assert src.cached_bytes() <= 3 * 3 * 32 * 32
    src.close()
