"""Opening videos (PyAV) and folders of frames, and reading their frames on demand.

One probe and one loader for everything that reads a video: :func:`open_video` checks the path (media
roots after resolving, regular files only, limits on frame count and frame size) and returns a
:class:`VideoSource` that decodes frames when they are asked for, keeping a bounded cache of model-ready
frames. Nothing decodes the whole video up front, so a session's host memory does not grow with its length.

Frames are resized to the model's square input and cached as uint8 (3 bytes a pixel: 3 MB a frame at
1008 px). When the model asks for one it is scaled to [0, 1], stored in fp16 and normalised in fp16, as the
official loader does (the fp16 storage quantises the normalised pixels; keeping it makes our tracks
comparable with the official ones). The normalisation is elementwise, so one frame at a time, from the
cached uint8 pixels, gives the same bits as the official whole-video tensor.

Note: the official 0.1.4 video-file loader (OpenCV) forgets the division by 255; its JPEG-folder
loader does not. We scale both to [0, 1].

Paths are resolved and checked by :mod:`sam3.inference.media_paths`. Hostile input here: a container
whose header lies about its frame count, frames of 8192 x 8192: each is a :class:`VideoReadError`
subclass with a message, never a crash or a blocked thread.
"""

from __future__ import annotations

import bisect
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sam3.device import upload
from sam3.inference.media_paths import (
    VideoReadError,
    check_file,
    VideoTooLarge,
    VideoUnsupported,
    VIDEO_EXTS,
    list_frame_files,
    open_regular,
    resolve_media_path,
    stat_path,
)

PIL_FORMATS = ("JPEG", "PNG")


@dataclass(frozen=True)
class VideoLimits:
    """What a video may be. ``max_frames`` is checked on the frames really present (packets counted, frame
    indices checked while decoding), never on the container's header; the size limits on every frame."""

    max_frames: int = 3000
    max_side: int = 8192
    max_pixels: int = 16_777_216  # 4096 x 4096 per frame
    max_aspect: float = 20.0
    cache_mb: float = 64.0  # resized uint8 frames kept decoded (at least two: the current one and the next)
    refuse_hardlinks: bool = False  # refuse files with more than one name (media_paths.check_file)

    def check_size(self, width: int, height: int, what: str) -> None:
        if width <= 0 or height <= 0:
            raise VideoReadError(f"{what} has an empty frame ({width}x{height})")
        if max(width, height) > self.max_side:
            raise VideoTooLarge(f"{what}: a {width}x{height} frame, over the side limit of {self.max_side} px")
        if width * height > self.max_pixels:
            raise VideoTooLarge(f"{what}: a {width}x{height} frame, over the limit of {self.max_pixels} pixels")
        if max(width, height) / min(width, height) > self.max_aspect:
            raise VideoTooLarge(f"{what}: a {width}x{height} frame, aspect ratio over {self.max_aspect:g}")


# ------------------------------------------------------------------------------------------------ frames
def resize_frame(img: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> (3, S, S) uint8 (PIL bilinear resize, as torchvision's TF.resize on PIL)."""
    img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def normalise_frame(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """(3, S, S) uint8 -> (3, S, S) fp16: scaled to [0, 1] in fp32, stored in fp16, normalised in fp16 (on the
    pixels' device: the same operations, so the same values, wherever it runs)."""
    frame = pixels.float().div_(255.0).to(torch.float16)
    frame -= upload(torch.tensor(mean, dtype=torch.float16).view(3, 1, 1), pixels.device)
    frame /= upload(torch.tensor(std, dtype=torch.float16).view(3, 1, 1), pixels.device)
    return frame


class VideoSource:
    """A video's frames, decoded on demand into model-ready (3, S, S) fp16 tensors, with a bounded cache
    of resized uint8 frames (``limits.cache_mb``; never fewer than two frames). With ``pin_memory`` (a CUDA
    model) the cached frames are in pinned memory, so :func:`~sam3.device.upload` copies them without waiting.

    Thread-safe: the server decodes the next frames in a worker thread outside the model lock
    (:meth:`prefetch`) while the model works; :meth:`frame` is what the model code calls.
    """

    def __init__(
        self,
        name: str,
        num_frames: int,
        width: int,
        height: int,
        fps: float | None,
        image_size: int,
        mean,
        std,
        limits: VideoLimits,
        pin_memory: bool = False,
    ):
        self.name = name
        self.num_frames = num_frames
        self.width = width
        self.height = height
        self.fps = fps
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.limits = limits
        self.pin_memory = pin_memory
        frame_bytes = 3 * image_size * image_size  # uint8
        self.cache_frames = max(2, int(limits.cache_mb * 1024 * 1024) // frame_bytes)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()  # index -> (3, S, S) uint8
        self._lock = threading.RLock()
        self._closed = False
        self.decoded = 0  # frames decoded so far (a cache miss costs one or more decodes)

    # ---------------------------------------------------------------- public
    def frame(self, idx: int) -> torch.Tensor:
        """(3, S, S) fp16 normalised frame ``idx``."""
        if not 0 <= idx < self.num_frames:
            raise IndexError(f"frame {idx} is outside the video (0..{self.num_frames - 1})")
        return normalise_frame(self.pixels(idx), self.mean, self.std)

    def image(self, idx: int) -> Image.Image:
        """Frame ``idx`` at the video's own size (RGB), read through the same checks and seeking reader as the
        model's frames, not cached (for previews)."""
        if not 0 <= idx < self.num_frames:
            raise IndexError(f"frame {idx} is outside the video (0..{self.num_frames - 1})")
        with self._lock:
            return self._image(idx)

    def prefetch(self, *indices: int) -> None:
        """Decode these frames into the cache now (frames outside the video are ignored, and so is every frame
        once the source is closed: a decode-ahead thread may still ask after the session ended)."""
        for idx in indices:
            with self._lock:
                if self._closed:
                    return
                if 0 <= idx < self.num_frames:
                    self.pixels(idx)

    def pixels(self, idx: int) -> torch.Tensor:
        """(3, S, S) uint8 frame ``idx`` resized, not normalised (for an upload before :func:`normalise_frame`),
        from the cache (refreshed as most recent), decoded on a miss. Not to be written to."""
        if not 0 <= idx < self.num_frames:
            raise IndexError(f"frame {idx} is outside the video (0..{self.num_frames - 1})")
        with self._lock:
            pixels = self._cache.get(idx)
            if pixels is not None:
                self._cache.move_to_end(idx)
                return pixels
            self._decode(idx)
            return self._cache[idx]

    def cached_bytes(self) -> int:
        with self._lock:
            return sum(t.numel() * t.element_size() for t in self._cache.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cache.clear()
            self._close()

    # ---------------------------------------------------------------- for subclasses
    def _put(self, idx: int, img: Image.Image) -> None:
        self.limits.check_size(img.width, img.height, f"{self.name} frame {idx}")
        pixels = resize_frame(img, self.image_size)
        self._cache[idx] = pixels.pin_memory() if self.pin_memory else pixels
        self._cache.move_to_end(idx)
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)

    def _decode(self, idx: int) -> None:
        raise NotImplementedError

    def _image(self, idx: int) -> Image.Image:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class FolderSource(VideoSource):
    """A folder of JPEG/PNG frames; every file is resolved and checked against the roots when opened."""

    def __init__(self, files: list[Path], roots, **kw):
        super().__init__(**kw)
        self.files = files
        self.roots = roots

    def _decode(self, idx: int) -> None:
        f = self.files[idx]
        img = read_frame_file(f, self.roots, self.limits)
        self.decoded += 1
        self._put(idx, img)

    def _image(self, idx: int) -> Image.Image:
        return read_frame_file(self.files[idx], self.roots, self.limits).convert("RGB")


def read_frame_file(path: Path, roots, limits: VideoLimits) -> Image.Image:
    with open_regular(path, roots, path.name, limits.refuse_hardlinks) as fh:
        try:
            with Image.open(fh, formats=PIL_FORMATS) as im:
                limits.check_size(im.width, im.height, f"frame {path.name}")
                im.load()
                return im.copy()
        except VideoReadError:
            raise
        except Exception as exc:  # noqa: BLE001 -- PIL signals broken files with many exception types
            raise VideoReadError(f"frame {path.name} is unreadable ({type(exc).__name__})") from None


class FileSource(VideoSource):
    """A video file read with PyAV: sequential decoding, seeking to the nearest keyframe for a jump back.

    The frame index is the rank of the packet's presentation time among all video packets, counted once
    when the file is opened (demuxing only, no decoding); a decoded frame beyond that count is ignored.
    """

    def __init__(self, path: Path, roots, pts: list[int] | None, keyframes: list[int], **kw):
        super().__init__(**kw)
        self.path = path
        self.roots = roots
        self.pts = pts  # sorted presentation times, or None when the stream has none (sequential only)
        self.index_of = {p: i for i, p in enumerate(pts)} if pts else {}
        self.keyframes = keyframes  # sorted keyframe presentation times
        self._fh = None
        self._container = None
        self._frames = None  # the decode iterator
        self._next = 0  # index of the frame the iterator yields next
        self._seq = 0  # frames decoded since the last (re)open, for streams without timestamps

    def _open(self):
        import av

        self._close()
        self._fh = open_regular(self.path, self.roots, self.path.name, self.limits.refuse_hardlinks)
        self._container = av.open(self._fh)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        return stream

    def _close(self) -> None:
        if self._container is not None:
            self._container.close()
        if self._fh is not None:
            self._fh.close()
        self._container = self._fh = self._frames = None

    def _decode(self, idx: int) -> None:
        room = self.cache_frames - 1  # the frames just before ``idx`` are the next ones read backwards

        def keep(i: int, frame) -> None:
            if i >= idx - room:
                self.limits.check_size(frame.width, frame.height, f"{self.name} frame {i}")
                self._put(i, frame.to_image())

        self._read_to(idx, keep)
        if idx not in self._cache:
            raise VideoReadError(f"{self.name}: frame {idx} is missing from the stream")

    def _image(self, idx: int) -> Image.Image:
        found: list[Image.Image] = []

        def keep(i: int, frame) -> None:
            if i == idx:
                self.limits.check_size(frame.width, frame.height, f"{self.name} frame {i}")
                found.append(frame.to_image())

        self._read_to(idx, keep)
        if not found:
            raise VideoReadError(f"{self.name}: frame {idx} is missing from the stream")
        return found[0].convert("RGB")

    def _read_to(self, idx: int, keep) -> None:
        """Decode up to frame ``idx`` (seeking to the nearest keyframe before it when it is behind or far
        ahead), handing every decoded frame to ``keep(index, frame)``."""
        import av

        try:
            if self._frames is None or idx < self._next or idx > self._next + 2 * self.cache_frames:
                self._seek(idx)
            while True:
                frame = next(self._frames, None)
                if frame is None:
                    raise VideoReadError(f"{self.name}: frame {idx} cannot be decoded (the video ends early)")
                i = self._index(frame)
                if i is None or i >= self.num_frames:
                    continue
                self.decoded += 1
                self._next = i + 1
                keep(i, frame)
                if i >= idx:
                    return
        except VideoReadError:
            self._close()
            raise
        except (av.error.FFmpegError, OSError) as exc:
            self._close()
            raise VideoReadError(f"{self.name}: frame {idx} cannot be decoded ({exc})") from None

    def _index(self, frame) -> int | None:
        if self.pts is None:
            i = self._seq
            self._seq += 1
            return i
        return self.index_of.get(frame.pts)

    def _seek(self, idx: int) -> None:
        stream = self._open()
        self._seq = 0
        if self.pts is not None and idx > 0:
            target = self.pts[idx]
            k = bisect.bisect_right(self.keyframes, target) - 1
            if k >= 0 and self.keyframes[k] > self.pts[0]:
                self._container.seek(self.keyframes[k], stream=stream, backward=True, any_frame=False)
        self._frames = self._container.decode(stream)
        self._next = 0


# ------------------------------------------------------------------------------------------------ opening
def open_video(
    path: str | os.PathLike,
    image_size: int,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    limits: VideoLimits | None = None,
    roots: tuple[Path, ...] | None = None,
    pin_memory: bool = False,
) -> VideoSource:
    """Check and open a video file or a folder of JPEG/PNG frames (first frame read to learn the size);
    ``pin_memory``: keep the decoded frames in pinned memory (for a CUDA model)."""
    limits = limits or VideoLimits()
    real = resolve_media_path(path, roots)
    mode = stat_path(real, real.name or str(real)).st_mode
    kw = {"image_size": image_size, "mean": mean, "std": std, "limits": limits, "pin_memory": pin_memory}
    if stat.S_ISDIR(mode):
        files = list_frame_files(real, limits.max_frames)
        if not files:
            raise VideoUnsupported(f"the folder {real.name} holds no JPEG/PNG frames")
        first = read_frame_file(files[0], roots, limits)
        # Every frame file must lead inside the roots and be a regular file (a named pipe among the frames
        # would fail every prompt that reads ahead to it): checked now, and again when read.
        for f in files:
            check_file(stat_path(resolve_media_path(f, roots), f.name), f.name, limits.refuse_hardlinks)
        src = FolderSource(
            files, roots, name=real.name, num_frames=len(files), width=first.width, height=first.height, fps=None, **kw
        )
        src._put(0, first)
        return src
    if not stat.S_ISREG(mode):
        raise VideoUnsupported(f"{real.name[:300]} is not a regular file or a folder")
    if real.suffix.lower() not in VIDEO_EXTS:
        raise VideoUnsupported(
            f"{real.name[:300]!r} is not a supported video ({', '.join(e[1:] for e in VIDEO_EXTS)}) "
            "or a folder of JPEG/PNG frames"
        )
    return _open_file(real, roots, limits, kw)


def _open_file(real: Path, roots, limits: VideoLimits, kw: dict) -> FileSource:
    import av

    try:
        with open_regular(real, roots, real.name, limits.refuse_hardlinks) as fh, av.open(fh) as container:
            if not container.streams.video:
                raise VideoUnsupported(f"{real.name} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            pts: list[int] = []
            keyframes: list[int] = []
            has_pts = True
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if len(pts) >= limits.max_frames:
                    raise VideoTooLarge(f"{real.name}: more than {limits.max_frames} frames (SAM_MAX_VIDEO_FRAMES)")
                p = packet.pts if packet.pts is not None else packet.dts
                has_pts &= p is not None
                pts.append(p if p is not None else len(pts))
                if packet.is_keyframe and p is not None:
                    keyframes.append(p)
            container.seek(0)
            first = next(container.decode(stream), None)
    except VideoReadError:
        raise
    except av.error.FFmpegError as exc:
        raise VideoUnsupported(f"{real.name} is not a readable video ({type(exc).__name__})") from None
    except OSError as exc:
        raise VideoReadError(f"cannot read {real.name}: {exc.strerror or exc}") from None
    if first is None or not pts:
        raise VideoReadError(f"{real.name} has no decodable frames")
    limits.check_size(first.width, first.height, real.name)
    pts.sort()
    keyframes.sort()
    if not has_pts or len(set(pts)) != len(pts):
        pts_or_none = None  # no usable timestamps: decode sequentially from the start when jumping back
    else:
        pts_or_none = pts
    return FileSource(
        real,
        roots,
        pts_or_none,
        keyframes,
        name=real.name,
        num_frames=len(pts),
        width=first.width,
        height=first.height,
        fps=fps,
        **kw,
    )


def probe_video(
    path: str | os.PathLike, limits: VideoLimits | None = None, roots: tuple[Path, ...] | None = None
) -> tuple[int, int, int, float | None]:
    """(num_frames, width, height, fps) of a video file or frame folder, after every check of :func:`open_video`."""
    src = open_video(path, image_size=16, limits=limits, roots=roots)
    src.close()
    return src.num_frames, src.width, src.height, src.fps


@dataclass
class VideoFrames:
    """A whole decoded video (for tests and benchmarks; sessions read frames on demand).

    frames: (T, 3, S, S) fp16 on the CPU, normalised
    """

    frames: torch.Tensor
    height: int
    width: int
    fps: float | None

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]


def load_video_frames(
    path, image_size: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), max_frames: int | None = None
) -> VideoFrames:
    """Decode the first ``max_frames`` frames (all by default) into one tensor."""
    src = open_video(path, image_size, mean, std)
    n = src.num_frames if max_frames is None else min(max_frames, src.num_frames)
    frames = torch.stack([src.frame(i) for i in range(n)])
    src.close()
    return VideoFrames(frames, src.height, src.width, src.fps)
