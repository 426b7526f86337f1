"""HTTP clients of the SAM 3 service, as the Milimo backend uses them.

They depend on httpx and tenacity only (no torch, no server code), so any process can talk to the service:
``pip install ./clients`` (the ``milimo-clients`` distribution; ``[masks]`` adds numpy and Pillow for mask
arrays and PIL inputs, ``[fastapi]`` the router of ``milimo_clients.fastapi_router``).
The service address comes from ``SAM_SERVICE_URL`` in the process environment (a ``.env`` file is not
read by the clients), default ``http://localhost:8001``.
"""

from milimo_clients.base import DEFAULT_OUTPUT_DIR, DEFAULT_SERVICE_URL, AsyncServiceClient, ServiceClient
from milimo_clients.errors import (
    SamModelNotLoaded,
    SamProtocolError,
    SamServiceBusy,
    SamServiceError,
    SamServiceNotRunning,
    SamServiceTimeout,
    SamServiceUnavailable,
    parse_retry_after,
)
from milimo_clients.everything import EverythingObject, EverythingResult
from milimo_clients.inpainting_manager import (
    AsyncInpaintingManager,
    DetectedObject,
    DetectionResult,
    InpaintingManager,
    MaskResult,
)
from milimo_clients.masks import decode_rle, mask_array
from milimo_clients.retry import NO_RETRY, RetryPolicy
from milimo_clients.tracking_manager import (
    AsyncPropagationStream,
    AsyncTrackingManager,
    FrameResult,
    PropagationResult,
    PropagationStream,
    SessionInfo,
    TrackingManager,
    TrackingSession,
    UploadedMedia,
)

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "DEFAULT_SERVICE_URL",
    "NO_RETRY",
    "AsyncInpaintingManager",
    "AsyncPropagationStream",
    "AsyncServiceClient",
    "AsyncTrackingManager",
    "DetectedObject",
    "DetectionResult",
    "EverythingObject",
    "EverythingResult",
    "FrameResult",
    "InpaintingManager",
    "MaskResult",
    "PropagationResult",
    "PropagationStream",
    "RetryPolicy",
    "SamModelNotLoaded",
    "SamProtocolError",
    "SamServiceBusy",
    "SamServiceError",
    "SamServiceNotRunning",
    "SamServiceTimeout",
    "SamServiceUnavailable",
    "ServiceClient",
    "SessionInfo",
    "TrackingManager",
    "TrackingSession",
    "UploadedMedia",
    "decode_rle",
    "mask_array",
    "parse_retry_after",
]
