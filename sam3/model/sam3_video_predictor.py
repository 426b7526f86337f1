"""The official video predictor's request interface over ours (``handle_request`` / ``handle_stream_request``).

Code written against Meta's release drives video with dictionaries::

    predictor = build_sam3_video_predictor(checkpoint_path=...)
    sid = predictor.handle_request(dict(type="start_session", resource_path="clip.mp4"))["session_id"]
    out = predictor.handle_request(dict(type="add_prompt", session_id=sid, frame_index=0, text="person"))
    for r in predictor.handle_stream_request(dict(type="propagate_in_video", session_id=sid)): ...

This module only translates: the official conventions (points as fractions of the frame, boxes as
normalised ``[x, y, w, h]``, ``frame_index``, ``propagation_direction``, ...) to our predictor's
(:class:`sam3.inference.video_predictor.VideoPredictor`: pixel points, normalised ``[cx, cy, w, h]``
boxes), and our typed :class:`FrameResult` back to the official ``outputs`` dictionary::

    {"out_obj_ids": (N,) int64, "out_probs": (N,) float32, "out_boxes_xywh": (N, 4) float32 normalised,
     "out_binary_masks": (N, H, W) bool, "frame_stats": None}

Our predictor takes typed sessions and keeps no table of them; this adapter keeps the official
``{session_id: session}`` table. Unknown sessions raise ``RuntimeError`` as in the official predictor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from sam3.inference.video_state import FrameResult, VideoSession
    from sam3.modeling.sam3_model import Sam3Model

_DIRECTIONS = ("both", "forward", "backward")


def frame_outputs(result: FrameResult) -> dict[str, Any]:
    """Our per-frame result as the official ``outputs`` dictionary."""
    return {
        "out_obj_ids": np.asarray(result.obj_ids, dtype=np.int64),
        "out_probs": np.asarray(result.scores, dtype=np.float32),
        "out_boxes_xywh": result.boxes_xywh_normalized.astype(np.float32),
        "out_binary_masks": np.asarray(result.masks, dtype=bool),
        "frame_stats": None,
    }


class Sam3VideoPredictor:
    """The official ``Sam3VideoPredictor`` API. Arguments are the official constructor's; a configuration
    this implementation does not have raises ``NotImplementedError`` (see :mod:`sam3.model_builder`).

    ``model`` (ours) reuses an already built model instead of building one; ``preset`` / ``device`` /
    ``load_from_HF`` / ``random_weights`` go to :func:`sam3.build.build_video_model`.
    """

    def __init__(
        self,
        checkpoint_path: str | os.PathLike | None = None,
        bpe_path: str | os.PathLike | None = None,
        has_presence_token: bool = True,
        geo_encoder_use_img_cross_attn: bool = True,
        strict_state_dict_loading: bool = True,
        async_loading_frames: bool = False,
        video_loader_type: str = "cv2",
        apply_temporal_disambiguation: bool = True,
        *,
        preset: str = "sam3",
        device: str | torch.device | None = None,
        load_from_HF: bool = True,
        random_weights: bool = False,
        model: Sam3Model | None = None,
    ):
        from sam3.build import build_video_model
        from sam3.inference.video_predictor import VideoPredictor as Predictor
        from sam3.model.official_args import check_video_model_args

        if async_loading_frames:
            raise NotImplementedError("async_loading_frames=True is not supported (frames are decoded up front)")
        # video_loader_type only picks the official decoder (cv2 / torchcodec); ours reads with PyAV.
        if model is None:
            check_video_model_args(
                has_presence_token,
                geo_encoder_use_img_cross_attn,
                strict_state_dict_loading,
                apply_temporal_disambiguation,
            )
            model = build_video_model(
                checkpoint_path=checkpoint_path,
                load_from_HF=load_from_HF,
                bpe_path=bpe_path,
                device=device,
                preset=preset,
                random_weights=random_weights,
            )
        self.model = model
        self.predictor = Predictor(model)
        self._sessions: dict[str, VideoSession] = {}

    # ---------------------------------------------------------------- the request interface
    def handle_request(self, request: dict) -> dict:
        """Dispatch one request by its ``type`` (everything but ``propagate_in_video``)."""
        kind = request["type"]
        if kind == "start_session":
            return self.start_session(request["resource_path"], request.get("session_id"))
        if kind == "add_prompt":
            return self.add_prompt(
                session_id=request["session_id"],
                frame_idx=request["frame_index"],
                text=request.get("text"),
                points=request.get("points"),
                point_labels=request.get("point_labels"),
                bounding_boxes=request.get("bounding_boxes"),
                bounding_box_labels=request.get("bounding_box_labels"),
                obj_id=request.get("obj_id"),
            )
        if kind == "remove_object":
            return self.remove_object(request["session_id"], request["obj_id"])
        if kind == "reset_session":
            return self.reset_session(request["session_id"])
        if kind == "close_session":
            return self.close_session(request["session_id"])
        raise RuntimeError(f"invalid request type: {kind}")

    def handle_stream_request(self, request: dict) -> Iterator[dict]:
        """``propagate_in_video``: yields ``{"frame_index", "outputs"}`` per frame."""
        kind = request["type"]
        if kind != "propagate_in_video":
            raise RuntimeError(f"invalid request type: {kind}")
        yield from self.propagate_in_video(
            session_id=request["session_id"],
            propagation_direction=request.get("propagation_direction", "both"),
            start_frame_idx=request.get("start_frame_index"),
            max_frame_num_to_track=request.get("max_frame_num_to_track"),
        )

    # ---------------------------------------------------------------- the official methods
    def start_session(self, resource_path: str, session_id: str | None = None) -> dict:
        if session_id and session_id in self._sessions:
            raise RuntimeError(f"session {session_id} already exists")
        session = self.predictor.start_session(str(resource_path), session_id or None)
        self._sessions[session.session_id] = session
        return {"session_id": session.session_id}

    def add_prompt(
        self,
        session_id: str,
        frame_idx: int,
        text: str | None = None,
        points=None,
        point_labels=None,
        bounding_boxes=None,
        bounding_box_labels=None,
        obj_id: int | None = None,
    ) -> dict:
        """Text, box and / or point prompts on one frame. Points are fractions of the frame (x, y) and boxes
        normalised ``[x, y, w, h]``, as in the official predictor."""
        session = self._session(session_id)
        pixel_points = None
        if points is not None and len(points) > 0:
            rel = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            pixel_points = (rel * np.array([session.width, session.height])).tolist()
        labels = None if point_labels is None else [int(v) for v in np.asarray(point_labels).reshape(-1)]
        boxes = box_labels = None
        if bounding_boxes is not None and len(bounding_boxes) > 0:
            xywh = np.asarray(bounding_boxes, dtype=np.float64).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2] + xywh[:, 2:] / 2, xywh[:, 2:]], axis=1).tolist()
            if bounding_box_labels is not None:
                box_labels = [int(v) for v in np.asarray(bounding_box_labels).reshape(-1)]
        result = self.predictor.add_prompt(
            session, frame_idx, text=text, points=pixel_points, labels=labels, boxes=boxes, box_labels=box_labels,
            obj_id=obj_id,
        )  # fmt: skip
        return {"frame_index": result.frame_idx, "outputs": frame_outputs(result)}

    def propagate_in_video(
        self,
        session_id: str,
        propagation_direction: str = "both",
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
    ) -> Iterator[dict]:
        session = self._session(session_id)
        if propagation_direction not in _DIRECTIONS:
            raise ValueError(f"invalid propagation direction: {propagation_direction}")
        for result in self.predictor.propagate(session, propagation_direction, start_frame_idx, max_frame_num_to_track):
            yield {"frame_index": result.frame_idx, "outputs": frame_outputs(result)}

    def remove_object(self, session_id: str, obj_id: int, is_user_action: bool = True) -> dict:
        self.predictor.remove_object(self._session(session_id), int(obj_id))
        return {"is_success": True}

    def reset_session(self, session_id: str) -> dict:
        self.predictor.reset_session(self._session(session_id))
        return {"is_success": True}

    def close_session(self, session_id: str) -> dict:
        """Idempotent, as in the official predictor."""
        session = self._sessions.pop(session_id, None)
        if session is not None:
            self.predictor.close_session(session)
        return {"is_success": True}

    def shutdown(self) -> None:
        for session_id in list(self._sessions):
            self.close_session(session_id)

    def _session(self, session_id: str) -> VideoSession:
        session = self._sessions.get(session_id)
        if session is None:
            raise RuntimeError(f"Cannot find session {session_id}; it might have expired")
        return session
