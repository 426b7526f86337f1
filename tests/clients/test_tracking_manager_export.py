"""``TrackingManager.save_results``: masks/<frame>_<obj>.png and manifest.json from real frame results."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from milimo_clients import FrameResult, TrackingManager


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


def test_save_results_writes_masks_and_manifest(tmp_path):
    a = np.zeros((8, 10), bool)
    a[2:5, 3:7] = True
    frames = [
        FrameResult(
            frame_idx=0,
            object_ids=[1, 2],
            scores=[0.9, 0.4],
            masks=[_png(a), _png(~a)],
            boxes=[[3, 2, 7, 5], [0, 0, 10, 8]],
        ),
        # The wire form (base64 strings) is accepted as well.
        {
            "frame_idx": 3,
            "object_ids": [1],
            "scores": [0.8],
            "masks": [base64.b64encode(_png(a)).decode()],
            "boxes": [[3, 2, 7, 5]],
        },
        {"frame_idx": 4, "object_ids": [], "scores": [], "masks": [], "boxes": []},
    ]
    manifest_path = TrackingManager.save_results("s1", frames, tmp_path / "export")
    manifest = json.load(open(manifest_path))
    assert manifest["session_id"] == "s1" and manifest["num_frames"] == 3
    assert [f["frame_idx"] for f in manifest["frames"]] == [0, 3, 4]
    first = manifest["frames"][0]["objects"]
    assert [o["obj_id"] for o in first] == [1, 2] and first[0]["mask"] == "masks/0_1.png"
    saved = np.asarray(Image.open(tmp_path / "export" / "masks" / "0_1.png")) > 0
    np.testing.assert_array_equal(saved, a)
    assert (tmp_path / "export" / "masks" / "3_1.png").exists()
    assert manifest["frames"][2]["objects"] == []
