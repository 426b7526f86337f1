"""Single decoded frames for ``GET /media/frame`` (the page's scrubbing), read as tracking sessions read them.

A frame is read through the tracker's own video source (``sam3.inference.video_io.open_video``): the same
root checks, regular-file checks and frame limits as ``/track/start`` (``SAM_MAX_VIDEO_FRAMES``, frame size),
and the same seeking reader, so frame 2,000 is decoded from the keyframe before it, not from the first frame.
The last few opened sources are kept (:data:`MAX_SOURCES`), so scrubbing through one video continues its
decoder instead of reopening the file. Each request is one unit of work in the model service's queue
(``SAM_MAX_QUEUE``, 429 when full): decoding never runs beside the model in unbounded worker threads.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

from server.errors import BadValue
from server.services.model_service import ModelService
from server.settings import Settings

if TYPE_CHECKING:
    from sam3.inference.video_io import VideoSource

log = logging.getLogger("sam3.server")

MAX_SOURCES = 4  # opened videos kept (each holds an open file and its decoder)
JPEG_QUALITY = 88


class FramePreviews:
    """Frames of the videos under the media roots as JPEG, through a small cache of opened sources."""

    def __init__(self, settings: Settings, models: ModelService):
        self.settings = settings
        self.models = models
        # (real path, device, inode, size, mtime) -> source; touched only inside the model lock
        self._sources: OrderedDict[tuple, VideoSource] = OrderedDict()

    async def jpeg(self, video_path: str, frame_idx: int) -> bytes:
        """Frame ``frame_idx`` of a video file or frame folder inside the media roots, as JPEG bytes."""
        return await self.models.call(self._jpeg, video_path, frame_idx)

    def _jpeg(self, video_path: str, frame_idx: int) -> bytes:
        from sam3.inference.media_paths import VideoReadError

        from server.services.video_sessions import video_error

        try:
            source = self._source(video_path)
            if frame_idx >= source.num_frames:
                raise BadValue(f"frame_idx: {frame_idx} is past the last frame ({source.num_frames - 1})")
            image = source.image(frame_idx)
        except VideoReadError as exc:
            raise video_error(exc) from None
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()

    def _source(self, video_path: str) -> VideoSource:
        from sam3.inference.media_paths import resolve_media_path, stat_path
        from sam3.inference.video_io import open_video

        from server.services.video_sessions import video_limits

        roots = self.settings.media_root_paths
        real = resolve_media_path(video_path, roots)  # the roots first: nothing said about other paths
        st = stat_path(real, video_path[:300])
        key = (str(real), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        source = self._sources.get(key)
        if source is not None:
            self._sources.move_to_end(key)
            return source
        # A preview keeps no model-sized frames (image_size 16, the smallest cache): it reads frames at their
        # own size, and the small cache also makes a jump of more than a few frames seek instead of decoding.
        source = open_video(
            real, image_size=16, limits=dataclasses.replace(video_limits(self.settings), cache_mb=0), roots=roots
        )
        self._sources[key] = source
        while len(self._sources) > MAX_SOURCES:
            _, old = self._sources.popitem(last=False)
            old.close()
        return source

    def close(self) -> None:
        for source in self._sources.values():
            source.close()
        self._sources.clear()
