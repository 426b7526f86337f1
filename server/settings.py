"""Service settings, read from the environment (and an optional ``.env`` file).

The variable names are part of the wire contract (``service-contract.md``); every one is documented in
``.env.example``. Settings are a frozen value object: ``create_app(settings)`` takes one, and tests build
their own instead of patching the environment.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_checkpoint(data: dict) -> str:
    """``models/<version>/<released file>`` for the already validated ``model_version`` (sam3 if it was invalid)."""
    from sam3.registry import DEFAULT_VERSION, get_version

    return str(get_version(data.get("model_version", DEFAULT_VERSION)).default_local_path)


class Settings(BaseSettings):
    """Every knob of the service. Field ``x`` is read from the environment variable named in its alias."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True, populate_by_name=True
    )

    # --- binding (used by run_sam.sh / uvicorn, reported for completeness)
    host: str = Field("127.0.0.1", validation_alias="SAM_SERVICE_HOST")
    port: int = Field(8001, ge=1, le=65535, validation_alias="SAM_SERVICE_PORT")

    # --- model
    # sam3 | sam3.1 (sam3.registry): which released model the service builds and which checkpoint it looks for.
    model_version: str = Field("sam3", validation_alias="SAM3_MODEL_VERSION")
    # Default: the version's file under models/<version>/ (models/sam3/sam3.pt, models/sam3.1/sam3.1_multiplex.pt).
    checkpoint: str = Field(default_factory=lambda data: _default_checkpoint(data), validation_alias="SAM3_CHECKPOINT")
    auto_download: bool = Field(True, validation_alias="SAM3_AUTO_DOWNLOAD")
    device: str | None = Field(None, validation_alias="SAM3_DEVICE")
    preset: str = Field("sam3", validation_alias="SAM3_PRESET")
    random_weights: bool = Field(False, validation_alias="SAM3_RANDOM_WEIGHTS")
    confidence: float = Field(0.5, ge=0.0, le=1.0, validation_alias="SAM3_CONFIDENCE")
    image_cache_mb: int = Field(1024, ge=0, validation_alias="SAM3_IMAGE_CACHE_MB")
    # Each neck (detector's, tracker's) runs on an image's first request that needs it, not at encode time.
    lazy_necks: bool = Field(True, validation_alias="SAM3_LAZY_NECKS")
    # Speed and precision (README "Speed and precision"; the policy is sam3.device.resolve_precision).
    precision: str = Field("auto", validation_alias="SAM3_PRECISION")
    # What "auto" may assume of the CPU: probe it (auto), or state that bf16 is native / emulated there.
    cpu_bf16: str = Field("auto", validation_alias="SAM3_CPU_BF16")
    compile: bool = Field(False, validation_alias="SAM3_COMPILE")
    warmup: bool = Field(True, validation_alias="SAM3_WARMUP")
    # with SAM3_COMPILE: the video warm-up covers the object buckets up to this many tracked objects (0: none)
    warmup_objects: int = Field(16, ge=0, le=256, validation_alias="SAM3_WARMUP_OBJECTS")
    num_threads: int | None = Field(None, ge=1, validation_alias="SAM3_NUM_THREADS")
    # Load the model in a background thread so that /health answers while a 3.4 GB download runs.
    load_in_background: bool = Field(True, validation_alias="SAM3_LOAD_IN_BACKGROUND")

    # --- request limits
    max_upload_mb: float = Field(25.0, gt=0, validation_alias="SAM_MAX_UPLOAD_MB")
    # JSON bodies (/track/*) are small; their own limit keeps a huge body from being buffered and parsed.
    max_json_kb: int = Field(1024, ge=1, validation_alias="SAM_MAX_JSON_KB")
    max_image_pixels: int = Field(40_000_000, gt=0, validation_alias="SAM_MAX_IMAGE_PIXELS")
    # Beside the pixel limit: a very thin image (1 x 40M) passes it and explodes in pre-processing.
    max_image_side: int = Field(16384, gt=0, validation_alias="SAM_MAX_IMAGE_SIDE")
    max_image_aspect: float = Field(20.0, ge=1.0, validation_alias="SAM_MAX_IMAGE_ASPECT")
    max_text_length: int = Field(500, ge=1, validation_alias="SAM_MAX_TEXT_LENGTH")
    max_points: int = Field(64, ge=1, validation_alias="SAM_MAX_POINTS")
    # Requests allowed to wait for the model at once; more get 429 (queue full).
    max_queue: int = Field(64, ge=1, validation_alias="SAM_MAX_QUEUE")

    # --- video tracking
    media_roots: str = Field("", validation_alias="SAM_MEDIA_ROOTS")
    max_sessions: int = Field(4, ge=1, validation_alias="SAM_MAX_SESSIONS")
    session_ttl_s: float = Field(1800.0, gt=0, validation_alias="SAM_SESSION_TTL_S")
    max_video_frames: int = Field(3000, ge=1, validation_alias="SAM_MAX_VIDEO_FRAMES")
    # Per session: MB of resized uint8 frames kept decoded (decoded on demand, never all at once; 3 MB a frame
    # at 1008 px). A larger cache makes backward propagation and revisits decode less.
    video_cache_mb: float = Field(64.0, gt=0, validation_alias="SAM_VIDEO_CACHE_MB")
    # Per session: non-conditioning tracker memories kept around the current, prompted and start frames
    # (0 keeps every frame, as released; see sam3.modeling.tracker.state.MemoryBank.prune).
    video_memory_frames: int = Field(64, ge=0, validation_alias="SAM_VIDEO_MEMORY_FRAMES")
    max_video_side: int = Field(8192, ge=16, validation_alias="SAM_MAX_VIDEO_SIDE")
    max_video_pixels: int = Field(16_777_216, ge=256, validation_alias="SAM_MAX_VIDEO_PIXELS")
    # A session whose page sent a heartbeat is closed once none arrives for this long (a closed tab).
    session_heartbeat_s: float = Field(120.0, gt=0, validation_alias="SAM_SESSION_HEARTBEAT_S")
    # POST /media/upload: a video or a zip of frames, stored under <first media root>/<SAM_UPLOAD_DIR>.
    max_upload_video_mb: float = Field(500.0, gt=0, validation_alias="SAM_MAX_UPLOAD_VIDEO_MB")
    upload_dir: str = Field("sam_uploads", min_length=1, validation_alias="SAM_UPLOAD_DIR")
    # An upload is deleted this long after its last session closed (or after it was uploaded, if never opened).
    upload_retention_s: float = Field(600.0, ge=0, validation_alias="SAM_UPLOAD_RETENTION_S")
    # --- hostile clients (README "Hostile clients")
    # A streamed propagation ends when its reader has not taken a frame for this long.
    stream_send_timeout_s: float = Field(30.0, gt=0, validation_alias="SAM_STREAM_SEND_TIMEOUT_S")
    # Refuse media files with more than one name (a hard link may be the other name of a file outside the roots).
    media_refuse_hardlinks: bool = Field(False, validation_alias="SAM_MEDIA_REFUSE_HARDLINKS")
    # Request line plus headers, in KB (server.http_edge answers 431 JSON above it).
    max_header_kb: int = Field(64, ge=1, validation_alias="SAM_MAX_HEADER_KB")

    # --- HTTP
    cors_origins: str = Field("*", validation_alias=AliasChoices("SAM_CORS_ORIGINS"))
    # GET /metrics in the Prometheus text format (404 when off).
    metrics: bool = Field(True, validation_alias="SAM_METRICS")

    @field_validator("device", mode="before")
    @classmethod
    def _auto_means_none(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "auto"):
            return None
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _known_precision(cls, value: object) -> object:
        from sam3.device import PRECISION_MODES

        return _one_of(value, PRECISION_MODES, "SAM3_PRECISION")

    @field_validator("cpu_bf16", mode="before")
    @classmethod
    def _known_cpu_bf16(cls, value: object) -> object:
        from sam3.device import CPU_BF16_MODES

        return _one_of(value, CPU_BF16_MODES, "SAM3_CPU_BF16")

    @field_validator("num_threads", mode="before")
    @classmethod
    def _empty_threads_means_default(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() in ("", "auto", "0"):
            return None
        return value

    @field_validator("model_version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        from sam3.registry import MODEL_VERSIONS

        if value not in MODEL_VERSIONS:
            raise ValueError(f"SAM3_MODEL_VERSION must be one of {', '.join(MODEL_VERSIONS)}, got {value!r}")
        return value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in ("sam3", "tiny"):
            raise ValueError(f"SAM3_PRESET must be 'sam3' or 'tiny', got {value!r}")
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_upload_video_bytes(self) -> int:
        return int(self.max_upload_video_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return self.max_json_kb * 1024

    @cached_property
    def media_root_paths(self) -> tuple[Path, ...]:
        """Resolved allowed media folders; an empty setting means the working directory."""
        parts = [p for p in self.media_roots.split(os.pathsep) if p.strip()] or [os.getcwd()]
        return tuple(Path(p).expanduser().resolve() for p in parts)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def _one_of(value: object, modes: tuple[str, ...], name: str) -> str:
    """A mode setting, case-insensitive; empty means "auto"."""
    text = "auto" if value is None else str(value).strip().lower() or "auto"
    if text not in modes:
        raise ValueError(f"{name} must be one of {', '.join(modes)}, got {value!r}")
    return text
