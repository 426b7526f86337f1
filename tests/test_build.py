"""Builders: the released layout on the meta device, random-weight tiny models, the tokenizer, devices."""

from __future__ import annotations

import pytest
import torch

from sam3.build import build_image_model, build_video_model
from sam3.config import get_config
from sam3.build import compose_sam3_model
from sam3.modeling.sam3_model import Sam3Model
from sam3.modeling.text.tokenizer import Tokenizer

# The layout of Meta's sam3.pt (spec section 0 / 8).
SAM3_TENSORS, SAM3_PARAMS, SAM3_BUFFER_ELEMENTS = 1465, 860_055_224, 1_179_904
SAM3_TENSORS_NO_TRACKER, SAM3_PARAMS_NO_TRACKER = 1134, 840_509_750
SAM3_DETECTOR_TENSORS, SAM3_TRACKER_TENSORS = 1156, 309


def _meta_model(preset: str, tracker: bool) -> Sam3Model:
    with torch.device("meta"):
        return compose_sam3_model(get_config(preset), enable_inst_interactivity=tracker, tokenizer=object())


def test_released_layout_on_meta():
    model = _meta_model("sam3", tracker=True)
    state = model.state_dict()
    assert len(state) == SAM3_TENSORS
    assert sum(k.startswith("detector.") for k in state) == SAM3_DETECTOR_TENSORS
    assert sum(k.startswith("tracker.") for k in state) == SAM3_TRACKER_TENSORS
    assert sum(p.numel() for p in model.parameters()) == SAM3_PARAMS
    assert sum(b.numel() for b in model.buffers()) == SAM3_BUFFER_ELEMENTS
    # Only the ViT RoPE tables are complex; everything else is fp32.
    complex_keys = [k for k, v in state.items() if v.dtype == torch.complex64]
    assert len(complex_keys) == 32 and all(k.endswith(".attn.freqs_cis") for k in complex_keys)
    assert all(v.dtype in (torch.float32, torch.complex64) for v in state.values())
    assert state["detector.backbone.vision_backbone.trunk.pos_embed"].shape == (1, 577, 1024)
    assert state["tracker.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape == (2, 128)


def test_released_layout_without_tracker():
    model = _meta_model("sam3", tracker=False)
    state = model.state_dict()
    assert model.tracker is None
    assert len(state) == SAM3_TENSORS_NO_TRACKER
    assert sum(p.numel() for p in model.parameters()) == SAM3_PARAMS_NO_TRACKER
    assert not any(k.startswith("tracker.") or ".sam2_convs." in k for k in state)


def test_no_non_persistent_buffers():
    model = _meta_model("tiny", tracker=True)
    named = {n for n, _ in model.named_buffers()}
    assert named <= set(model.state_dict()), named - set(model.state_dict())


def test_random_tiny_model_is_sane():
    torch.manual_seed(0)
    model = build_image_model(preset="tiny", random_weights=True, device="cpu")
    assert isinstance(model, Sam3Model) and not model.training
    assert model.device == torch.device("cpu")
    for name, t in model.state_dict().items():
        assert torch.isfinite(torch.view_as_real(t) if t.is_complex() else t).all(), name
    # Weight matrices and embeddings are really initialised, not left at zero -- except the box head's
    # last layer, which starts at zero on purpose (the first boxes are the reference boxes).
    zero_init = {"detector.transformer.decoder.bbox_embed.layers.2.weight"}
    for name, p in model.named_parameters():
        if p.dim() >= 2 and name not in zero_init:
            assert p.abs().sum() > 0, name
    pos = model.detector.backbone.language_backbone.encoder.positional_embedding
    assert 0.0 < pos.std() < 0.1


def test_tokenizer_attached():
    model = build_image_model(preset="tiny", random_weights=True, device="cpu")
    assert isinstance(model.tokenizer, Tokenizer)
    ids = model.tokenizer(["a red cat", "visual"])
    assert ids.shape == (2, 32)
    assert ids[0, :6].tolist() == [49406, 320, 736, 2368, 49407, 0]
    assert ids[1, :4].tolist() == [49406, 7195, 49407, 0]
    text = model.encode_text(["a red cat"])
    assert text.features.shape == (1, 32, 256) and text.mask[0].tolist() == [False] * 5 + [True] * 27


def test_video_model_always_has_tracker():
    model = build_video_model(preset="tiny", random_weights=True, device="cpu")
    assert isinstance(model, Sam3Model) and model.tracker is not None
    assert model.detector.backbone.vision_backbone.sam2_convs is not None


def test_train_mode_flag():
    model = build_image_model(preset="tiny", random_weights=True, device="cpu", eval_mode=False)
    assert model.training


def test_random_weights_and_path_conflict(tmp_path):
    with pytest.raises(ValueError, match="mutually exclusive"):
        build_image_model(checkpoint_path=tmp_path / "x.pt", preset="tiny", random_weights=True)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        build_image_model(preset="huge", random_weights=True)
