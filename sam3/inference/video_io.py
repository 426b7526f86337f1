"""Reading videos (PyAV) and folders of frames into model-ready tensors.

Frames are resized to the model's square input, scaled to [0, 1], stored on the CPU in fp16 and
normalised in fp16, as the official loader does (the fp16 storage quantises the normalised pixels;
keeping it makes our tracks comparable with the official ones). They are moved to the compute device
one frame at a time by the video predictor.

Note: the official 0.1.4 video-file loader (OpenCV) forgets the division by 255; its JPEG-folder
loader does not. We scale both to [0, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

VIDEO_EXTS = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


class VideoReadError(ValueError):
    """The resource is not a readable video or frame folder (the message says why)."""


@dataclass
class VideoFrames:
    """A decoded video.

    frames: (T, 3, S, S) fp16 on the CPU, normalised
    height, width: original frame size in pixels
    fps: frames per second (None for a folder of frames)
    """

    frames: torch.Tensor
    height: int
    width: int
    fps: float | None

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a folder, ordered by their integer stem when all stems are integers."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()]
    try:
        files.sort(key=lambda p: int(p.stem))
    except ValueError:
        files.sort(key=lambda p: p.name)
    return files


def _to_model_frame(img: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> (3, S, S) float in [0, 1] (PIL bilinear resize, as torchvision's TF.resize on PIL)."""
    img = img.convert("RGB").resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def _normalise_fp16(frames: torch.Tensor, mean, std) -> torch.Tensor:
    frames = frames.to(torch.float16)
    m = torch.tensor(mean, dtype=torch.float16).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float16).view(1, 3, 1, 1)
    frames -= m
    frames /= s
    return frames


def probe_video(path: str | os.PathLike) -> tuple[int, int, int, float | None]:
    """(num_frames, width, height, fps) without decoding every frame where the container says it."""
    path = Path(path)
    if path.is_dir():
        files = list_frame_files(path)
        if not files:
            raise VideoReadError(f"no JPEG/PNG frames in folder {path}")
        try:
            with Image.open(files[0]) as im:
                w, h = im.size
        except Exception as exc:  # PIL raises many types for broken files
            raise VideoReadError(f"cannot read frame {files[0].name}: {exc}") from exc
        return len(files), w, h, None
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate) if stream.average_rate else None
            n = stream.frames or 0
            w, h = stream.codec_context.width, stream.codec_context.height
            if n <= 0:
                n = sum(1 for _ in container.decode(stream))
    except VideoReadError:
        raise
    except Exception as exc:
        raise VideoReadError(f"cannot read video {path.name}: {exc}") from exc
    if n <= 0 or w <= 0 or h <= 0:
        raise VideoReadError(f"video {path.name} has no decodable frames")
    return n, w, h, fps


def load_video_frames(
    path: str | os.PathLike,
    image_size: int,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    max_frames: int | None = None,
) -> VideoFrames:
    """Decode a video file (PyAV) or a folder of JPEG/PNG frames into a :class:`VideoFrames`."""
    path = Path(path)
    frames: list[torch.Tensor] = []
    fps: float | None = None
    height = width = 0
    if path.is_dir():
        for f in list_frame_files(path):
            try:
                with Image.open(f) as im:
                    width, height = im.size
                    frames.append(_to_model_frame(im, image_size))
            except Exception as exc:
                raise VideoReadError(f"cannot read frame {f.name}: {exc}") from exc
            if max_frames is not None and len(frames) >= max_frames:
                break
    else:
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoReadError(f"{path.name} has no video stream")
                stream = container.streams.video[0]
                fps = float(stream.average_rate) if stream.average_rate else None
                for frame in container.decode(stream):
                    img = frame.to_image()
                    width, height = img.size
                    frames.append(_to_model_frame(img, image_size))
                    if max_frames is not None and len(frames) >= max_frames:
                        break
        except VideoReadError:
            raise
        except Exception as exc:
            raise VideoReadError(f"cannot decode video {path.name}: {exc}") from exc
    if not frames:
        raise VideoReadError(f"no frames could be read from {path}")
    return VideoFrames(_normalise_fp16(torch.stack(frames), mean, std), height, width, fps)
