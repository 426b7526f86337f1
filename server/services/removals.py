"""The ``removed_objects`` of a propagation's answer: objects a detect-then-track rule removed during it, and
why (``sam3.inference.removal_reasons``). An extension of the contract's propagate answer and its stream's
``end`` event; the page shows the ``detail``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sam3.inference.video_predictor import VideoPredictor
    from server.services.video_sessions import Session


def removed_ids(session: Session) -> set[int]:
    """Ids removed so far in the session (a new concept starts the set over)."""
    video = session.video
    return set(video.objects.hotstart.removed) if video is not None else set()


def removals_since(session: Session, before: set[int], predictor: VideoPredictor | None) -> list[dict]:
    """``[{"obj_id", "rule", "frame_idx", "frames", "duplicate_of", "detail"}]`` for the ids removed since ``before``."""
    from sam3.inference.removal_reasons import explain_removals

    if session.video is None or predictor is None:
        return []
    new = removed_ids(session) - before
    return [
        {
            "obj_id": r.obj_id,
            "rule": r.rule,
            "frame_idx": r.frame_idx,
            "frames": list(r.frames),
            "duplicate_of": r.duplicate_of,
            "detail": r.detail,
        }
        for r in explain_removals(session.video.objects.hotstart, new, predictor.cfg)
    ]
