"""HTTP clients of the SAM 3 service, as the Milimo backend uses them.

They depend on httpx only (no torch, no server code), so any process can talk to the service.
The service address comes from ``SAM_SERVICE_URL`` (default ``http://localhost:8001``).
"""

from milimo_clients.base import (
    DEFAULT_SERVICE_URL,
    SamModelNotLoaded,
    SamServiceBusy,
    SamServiceError,
    SamServiceNotRunning,
)
from milimo_clients.inpainting_manager import DetectedObject, DetectionResult, InpaintingManager
from milimo_clients.tracking_manager import FrameResult, PropagationResult, TrackingManager, TrackingSession

__all__ = [
    "DEFAULT_SERVICE_URL",
    "DetectedObject",
    "DetectionResult",
    "FrameResult",
    "InpaintingManager",
    "PropagationResult",
    "SamModelNotLoaded",
    "SamServiceBusy",
    "SamServiceError",
    "SamServiceNotRunning",
    "TrackingManager",
    "TrackingSession",
]
