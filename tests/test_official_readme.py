"""The official README's "Basic Usage" code, as published, runs against our package.

The code below is copied verbatim from https://github.com/facebookresearch/sam3 (README.md, "Basic Usage").
The test fills in its placeholders (an image path, a video path, a text prompt) and gives the two builder
calls a checkpoint path (a random tiny-preset ``sam3.pt``: no real weights can be downloaded here), then
runs it and checks what it produced. Everything else is exactly the published text.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

README_IMAGE = """
import torch
#################################### For Image ####################################
from PIL import Image
from sam3.model_builder import build_sam3_image_model
from sam3.model.sam3_image_processor import Sam3Processor
# Load the model
model = build_sam3_image_model()
processor = Sam3Processor(model)
# Load an image
image = Image.open("<YOUR_IMAGE_PATH.jpg>")
inference_state = processor.set_image(image)
# Prompt the model with text
output = processor.set_text_prompt(state=inference_state, prompt="<YOUR_TEXT_PROMPT>")

# Get the masks, bounding boxes, and scores
masks, boxes, scores = output["masks"], output["boxes"], output["scores"]
"""

README_VIDEO = """
#################################### For Video ####################################

from sam3.model_builder import build_sam3_video_predictor

video_predictor = build_sam3_video_predictor()
video_path = "<YOUR_VIDEO_PATH>" # a JPEG folder or an MP4 video file
# Start a session
response = video_predictor.handle_request(
    request=dict(
        type="start_session",
        resource_path=video_path,
    )
)
response = video_predictor.handle_request(
    request=dict(
        type="add_prompt",
        session_id=response["session_id"],
        frame_index=0, # Arbitrary frame index
        text="<YOUR_TEXT_PROMPT>",
    )
)
output = response["outputs"]
"""


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random tiny-preset model saved in the sam3.pt layout (``{"model": state_dict}``), its scores spread
    as in development mode so that the README's default threshold keeps some objects."""
    from sam3.build import build_image_model
    from sam3.dev_weights import make_visible

    torch.manual_seed(0)
    model = make_visible(build_image_model(preset="tiny", random_weights=True, device="cpu"))
    path = tmp_path_factory.mktemp("readme") / "sam3.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def fill(code: str, **values: str) -> str:
    for placeholder, value in values.items():
        assert placeholder in code, placeholder
        code = code.replace(placeholder, value)
    return code


def test_import_sam3_stays_light():
    """``import sam3`` loads neither torch nor model code; the official top-level name resolves on use."""
    probe = textwrap.dedent("""
        import sys, sam3
        assert "torch" not in sys.modules, "import sam3 imported torch"
        assert callable(sam3.build_sam3_image_model)
        from sam3 import build_sam3_image_model
        print(build_sam3_image_model.__module__)
    """)
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "sam3.model_builder"


def test_readme_image_example(tiny_checkpoint, coffee, tmp_path):
    from PIL import Image

    image_path = tmp_path / "photo.jpg"
    Image.fromarray(coffee).save(image_path, quality=95)
    code = fill(
        README_IMAGE,
        **{
            "<YOUR_IMAGE_PATH.jpg>": str(image_path),
            "<YOUR_TEXT_PROMPT>": "a cup",
            "build_sam3_image_model()": f"build_sam3_image_model(checkpoint_path={str(tiny_checkpoint)!r}, "
            "preset='tiny')",
        },
    )
    scope: dict = {}
    exec(compile(code, "README.md (image)", "exec"), scope)
    masks, boxes, scores = scope["masks"], scope["boxes"], scope["scores"]
    n = scores.shape[0]
    assert masks.shape == (n, 1, 400, 600) and masks.dtype == torch.bool
    assert n > 0 and boxes.shape == (n, 4) and bool((scores > 0.5).all())
    # at threshold 0 every query is kept
    output = scope["processor"].set_confidence_threshold(0.0, scope["output"])
    assert output["masks"].shape == (scope["model"].config.decoder.num_queries, 1, 400, 600)
    assert output["boxes"].shape[0] == output["scores"].shape[0] == output["masks"].shape[0]
    # the same model and state also answer the official model-level click call of the notebooks
    model = scope["model"]
    assert model.tracker is None  # enable_inst_interactivity defaults to False, as in the official builder
    with pytest.raises(RuntimeError, match="enable_inst_interactivity"):
        model.predict_inst(scope["inference_state"], point_coords=np.array([[300, 200]]), point_labels=np.array([1]))


def test_notebook_click_call_on_the_model(tiny_checkpoint, coffee):
    """``model.predict_inst(state, ...)`` (the official interactive notebook) equals the processor's call."""
    from sam3.model.sam3_image_processor import Sam3Processor
    from sam3.model_builder import build_sam3_image_model

    model = build_sam3_image_model(checkpoint_path=tiny_checkpoint, preset="tiny", enable_inst_interactivity=True)
    processor = Sam3Processor(model)
    state = processor.set_image(coffee)
    kwargs = dict(point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1]), multimask_output=True)
    masks, scores, logits = model.predict_inst(state, **kwargs)
    assert masks.shape == (3, 400, 600) and scores.shape == (3,) and logits.shape[0] == 3
    best = logits[np.argmax(scores)]
    again = model.predict_inst(state, **{**kwargs, "multimask_output": False}, mask_input=best[None])
    ref = processor.predict_inst(state, **{**kwargs, "multimask_output": False}, mask_input=best[None])
    for ours, theirs in zip(again, ref):
        np.testing.assert_array_equal(ours, theirs)
    batch = processor.set_image_batch([coffee, coffee[::-1].copy()])
    m, s, lo = model.predict_inst_batch(batch, [kwargs["point_coords"]] * 2, [kwargs["point_labels"]] * 2)
    assert len(m) == 2 and m[0].shape == (3, 400, 600)
    np.testing.assert_array_equal(m[0], masks)


def test_readme_video_example(tiny_checkpoint, astronaut, tmp_path):
    from tests.server.media import moving_crops, write_video

    video = write_video(tmp_path / "clip.mp4", moving_crops(astronaut, 6, size=96))
    code = fill(
        README_VIDEO,
        **{
            "<YOUR_VIDEO_PATH>": str(video),
            "<YOUR_TEXT_PROMPT>": "a person",
            "build_sam3_video_predictor()": f"build_sam3_video_predictor(checkpoint_path={str(tiny_checkpoint)!r}, "
            "preset='tiny')",
        },
    )
    scope: dict = {}
    exec(compile(code, "README.md (video)", "exec"), scope)
    output, predictor = scope["output"], scope["video_predictor"]
    n = len(output["out_obj_ids"])
    assert output["out_binary_masks"].shape == (n, 96, 96) and output["out_binary_masks"].dtype == bool
    assert output["out_boxes_xywh"].shape == (n, 4) and output["out_probs"].shape == (n,)
    assert scope["response"]["frame_index"] == 0

    # the rest of the official request vocabulary (the video notebook), on a second session
    session_id = predictor.handle_request(dict(type="start_session", resource_path=str(video)))["session_id"]
    click = predictor.handle_request(
        dict(type="add_prompt", session_id=session_id, frame_index=2, points=[[0.5, 0.5]], point_labels=[1], obj_id=7)
    )
    assert click["frame_index"] == 2 and set(click["outputs"]) == set(output)
    assert click["outputs"]["out_binary_masks"].shape[1:] == (96, 96)
    frames = list(
        predictor.handle_stream_request(
            dict(type="propagate_in_video", session_id=session_id, propagation_direction="both", start_frame_index=2)
        )
    )
    assert sorted(f["frame_index"] for f in frames) == list(range(6))
    assert all(f["outputs"]["out_binary_masks"].shape[0] == len(f["outputs"]["out_obj_ids"]) for f in frames)
    assert predictor.handle_request(dict(type="remove_object", session_id=session_id, obj_id=7)) == {"is_success": True}
    assert predictor.handle_request(dict(type="reset_session", session_id=session_id)) == {"is_success": True}
    assert predictor.handle_request(dict(type="close_session", session_id=session_id)) == {"is_success": True}
    assert predictor.handle_request(dict(type="close_session", session_id=session_id)) == {"is_success": True}
    with pytest.raises(RuntimeError, match="Cannot find session"):
        predictor.handle_request(dict(type="reset_session", session_id=session_id))
    with pytest.raises(RuntimeError, match="invalid request type"):
        predictor.handle_request(dict(type="explode"))

    # the translation: official fractions / [x, y, w, h] give what our predictor gives for pixels / [cx, cy, w, h]
    ours = predictor.predictor
    for official, native in [
        (dict(points=[[0.25, 0.5]], point_labels=[1], obj_id=3), dict(points=[[24.0, 48.0]], labels=[1], obj_id=3)),
        (dict(bounding_boxes=[[0.2, 0.3, 0.5, 0.4]], bounding_box_labels=[1]), dict(boxes=[[0.45, 0.5, 0.5, 0.4]])),
        (
            dict(text="a face", bounding_boxes=[[0.2, 0.3, 0.5, 0.4]], bounding_box_labels=[0]),
            dict(text="a face", boxes=[[0.45, 0.5, 0.5, 0.4]], box_labels=[0]),
        ),
    ]:
        sid = predictor.handle_request(dict(type="start_session", resource_path=str(video)))["session_id"]
        got = predictor.handle_request(dict(type="add_prompt", session_id=sid, frame_index=1, **official))["outputs"]
        session = ours.start_session(str(video))
        want = ours.add_prompt(session, 1, **native)
        np.testing.assert_array_equal(got["out_obj_ids"], want.obj_ids)
        np.testing.assert_array_equal(got["out_binary_masks"], want.masks)
        predictor.handle_request(dict(type="close_session", session_id=sid))
        ours.close_session(session)
