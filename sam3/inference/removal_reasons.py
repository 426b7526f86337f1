"""Why an object vanished: the detect-then-track rule that removed it, read from the session's bookkeeping.

SAM 3's video predictor (as released) removes a young track, one first seen within ``hotstart_delay`` frames,
when no detection matched it on ``hotstart_unmatch_thresh`` frames, or when it shared a detection with an
older track on ``hotstart_dup_thresh`` frames. A removed object is hidden on every frame held back by the
hot-start delay, the frame it was prompted on included, so a text prompt can show object 0 on frame 0 and a
propagation return that frame empty (the official release does the same on the same weights; see
``tests/parity/test_removal_parity.py``). Nothing here changes the algorithm: it only explains its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from sam3.inference.association import HotstartState, TrackingHeuristics

HOTSTART_UNMATCHED = "hotstart_unmatched"
HOTSTART_DUPLICATE = "hotstart_duplicate"


@dataclass(frozen=True)
class Removal:
    """One object removed by a hot-start rule.

    rule:      HOTSTART_UNMATCHED or HOTSTART_DUPLICATE
    frame_idx: the frame on which the rule's count was reached
    frames:    the frames counted (unmatched frames, or frames shared with ``duplicate_of``)
    """

    obj_id: int
    rule: str
    frame_idx: int
    frames: tuple[int, ...]
    first_frame: int | None
    duplicate_of: int | None
    detail: str


def explain_removals(state: HotstartState, obj_ids: set[int], cfg: TrackingHeuristics) -> list[Removal]:
    """The rule behind each removed object in ``obj_ids`` (ids not in ``state.removed`` are skipped), by id."""
    out = []
    for obj_id in sorted(i for i in obj_ids if i in state.removed):
        first = state.first_frame.get(obj_id)
        since = f"first seen on frame {first}" if first is not None else "added by a click"
        unmatched = state.unmatched_frames.get(obj_id, [])
        if len(unmatched) >= cfg.hotstart_unmatch_thresh:  # checked first, as process_hotstart does
            frames = tuple(unmatched)
            detail = (
                f"object {obj_id} removed by the hot-start rule: no detection matched it on "
                f"{cfg.hotstart_unmatch_thresh} frames ({_frames(frames)}) within {cfg.hotstart_delay} frames of "
                f"its start ({since}); a removed object is hidden on every frame, as in the official release"
            )
            out.append(
                Removal(
                    obj_id, HOTSTART_UNMATCHED, frames[cfg.hotstart_unmatch_thresh - 1], frames, first, None, detail
                )
            )
            continue
        pairs = [
            (orig, f)
            for (orig, dup), f in state.overlap_frames.items()
            if dup == obj_id and len(f) >= cfg.hotstart_dup_thresh
        ]
        if pairs:
            orig, shared = pairs[0]
            frames = tuple(shared)
            detail = (
                f"object {obj_id} removed by the hot-start rule: it shared a detection with the older object {orig} "
                f"on {cfg.hotstart_dup_thresh} frames ({_frames(frames)}) within {cfg.hotstart_delay} frames of its "
                f"start ({since}); a removed object is hidden on every frame, as in the official release"
            )
            out.append(
                Removal(obj_id, HOTSTART_DUPLICATE, frames[cfg.hotstart_dup_thresh - 1], frames, first, orig, detail)
            )
    return out


def _frames(frames: tuple[int, ...]) -> str:
    shown = ", ".join(str(f) for f in frames[:10])
    return f"frames {shown}{', ...' if len(frames) > 10 else ''}"
