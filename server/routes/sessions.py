"""The open tracking sessions, for the page: ``GET /track/sessions`` lists them (its own and others', with their
age) and ``POST /track/heartbeat`` keeps a page's session alive.

A session that has received a heartbeat is closed by the idle sweep once none arrives for
``SAM_SESSION_HEARTBEAT_S`` (a tab closed without a clean unload); one that never did keeps the idle TTL
(``SAM_SESSION_TTL_S``), so scripted clients that never heard of heartbeats behave as before.
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, Field

from server.dependencies import SettingsDep, TrackingDep

router = APIRouter(prefix="/track", tags=["track"])


class SessionInfo(BaseModel):
    session_id: str
    video_path: str
    num_frames: int
    width: int  # extension: what a page needs to adopt the session
    height: int
    fps: float | None
    created: float = Field(description="Unix time the session was opened")
    last_used: float = Field(description="Unix time of the end of its last request")
    busy: bool = Field(description="a request (e.g. a propagation) is working on it now")
    frames_computed: int = Field(description="frames with stored results")
    # extensions: ages measured by the service's clock, so that a page with a skewed clock shows them right
    age_s: float = Field(description="seconds since it was opened")
    idle_s: float = Field(description="seconds since its last request ended (0 while busy)")
    expires_in: float = Field(description="seconds until the idle sweep closes it, if nothing uses it")
    heartbeat: bool = Field(description="a page keeps it alive with /track/heartbeat")


class SessionList(BaseModel):
    sessions: list[SessionInfo]
    max_sessions: int = Field(description="SAM_MAX_SESSIONS (extension)")


class HeartbeatRequest(BaseModel):
    session_id: str = Field(min_length=1, max_length=128)


class HeartbeatResponse(BaseModel):
    session_id: str
    expires_in: float = Field(description="seconds until the session is closed unless another heartbeat comes")


@router.get("/sessions", response_model=SessionList)
async def sessions(settings: SettingsDep, tracking: TrackingDep) -> SessionList:
    """Every open session (any client's), oldest first."""
    wall, now = time.time(), time.monotonic()
    items = []
    for s in sorted(tracking.sessions.values(), key=lambda s: s.created):
        if not s.ready:
            continue
        busy = bool(s.users) or s.propagation is not None
        items.append(
            SessionInfo(
                session_id=s.session_id,
                video_path=s.video.resource_path,
                num_frames=s.video.num_frames,
                width=s.video.width,
                height=s.video.height,
                fps=s.video.fps,
                created=s.created,
                last_used=wall - (now - s.last_used),
                busy=busy,
                frames_computed=s.video.frames_computed,
                age_s=wall - s.created,
                idle_s=0.0 if busy else now - s.last_used,
                expires_in=max(0.0, s.expires_in(settings.session_ttl_s, settings.session_heartbeat_s, now)),
                heartbeat=s.heartbeat_at is not None,
            )
        )
    return SessionList(sessions=items, max_sessions=settings.max_sessions)


@router.post("/heartbeat", response_model=HeartbeatResponse)
async def heartbeat(body: HeartbeatRequest, settings: SettingsDep, tracking: TrackingDep) -> HeartbeatResponse:
    """Keep a session alive: from now on it is closed when no heartbeat arrives for ``SAM_SESSION_HEARTBEAT_S``."""
    session = tracking.get(body.session_id)  # 404 for an unknown or expired session
    now = time.monotonic()
    session.heartbeat_at = now
    session.touch()
    expires = session.expires_in(settings.session_ttl_s, settings.session_heartbeat_s, now)
    return HeartbeatResponse(session_id=body.session_id, expires_in=expires)
