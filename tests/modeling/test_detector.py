"""Sam3Detector at the tiny preset: forward_grounding shapes, prompt layout, batching with padding,
the video detector's joint score, a real photo end to end, and checkpoint names at the sam3 preset."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam3.config import Sam3Config, get_config
from sam3.modeling.detector.decoder import DetrDecoder
from sam3.modeling.detector.detector import DetectorTransformer, Sam3Detector
from sam3.modeling.detector.fusion_encoder import FusionEncoder
from sam3.modeling.detector.geometry_encoder import GeometryEncoder
from sam3.modeling.detector.scoring import DotProductScoring
from sam3.modeling.detector.segmentation_head import SegmentationHead
from sam3.modeling.layers.position_encoding import PositionEmbeddingSine
from sam3.modeling.outputs import (
    BackboneFeatures,
    GeometricPrompt,
    GroundingOutput,
    TextFeatures,
)
from sam3.ops.boxes import inverse_sigmoid
from tests.conftest import checkpoint_shapes


def _heads(cfg: Sam3Config, backbone: nn.Module | None = None) -> Sam3Detector:
    c = cfg.d_model
    return Sam3Detector(
        backbone=backbone if backbone is not None else nn.Module(),
        geometry_encoder=GeometryEncoder(cfg.geometry, c),
        transformer=DetectorTransformer(FusionEncoder(cfg.encoder, c), DetrDecoder(cfg.decoder, c)),
        segmentation_head=SegmentationHead(cfg.scoring, c),
        dot_prod_scoring=DotProductScoring(cfg.scoring, c),
    )


@pytest.fixture(scope="module")
def detector(tiny):
    torch.manual_seed(0)
    det = _heads(tiny).eval()
    with torch.no_grad():  # let the box head move boxes away from their references
        det.transformer.decoder.bbox_embed.layers[-1].weight.normal_(0, 0.02)
    return det


def _features(cfg, batch: int, seed: int = 0) -> BackboneFeatures:
    g, c = cfg.feature_size, cfg.d_model
    gen = torch.Generator().manual_seed(seed)
    fpn = [torch.randn(batch, c, s, s, generator=gen) for s in (4 * g, 2 * g, g)]
    pe = PositionEmbeddingSine(c)
    return BackboneFeatures(fpn=fpn, pos=[pe(x) for x in fpn])


def _text(cfg, lengths: list[int], seed: int = 1) -> TextFeatures:
    n = cfg.text.context_length
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(lengths), n, cfg.d_model, generator=gen)
    mask = torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]
    return TextFeatures(feats, mask)


BOXES = torch.tensor([[[0.4, 0.55, 0.3, 0.5], [0.3, 0.3, 0.5, 0.4]], [[0.7, 0.2, 0.2, 0.25], [0.5, 0.5, 0.1, 0.1]]])


def test_text_only_shapes(tiny, detector):
    with torch.no_grad():
        out = detector.forward_grounding(_features(tiny, 1), _text(tiny, [5]), GeometricPrompt.empty(1))
    g, q, c, d = tiny.feature_size, tiny.decoder.num_queries, tiny.d_model, tiny.decoder.num_layers
    n = tiny.text.context_length
    assert isinstance(out, GroundingOutput)
    assert out.pred_logits.shape == (1, q)
    assert out.presence_logit.shape == (1, 1)
    assert out.pred_boxes.shape == (1, q, 4)
    assert out.pred_masks.shape == (1, q, 4 * g, 4 * g)
    assert out.prompt.shape == (1, n + 1, c)  # text + the geometry CLS token
    assert out.prompt_mask.tolist() == [[False] * 5 + [True] * (n - 5) + [False]]
    assert out.memory.shape == (1, g * g, c)
    assert out.all_pred_logits.shape == (d, 1, q) and out.all_pred_boxes.shape == (d, 1, q, 4)
    assert torch.equal(out.all_pred_boxes[-1], out.pred_boxes)
    assert ((out.pred_boxes >= 0) & (out.pred_boxes <= 1)).all()
    assert out.pred_logits.abs().max() <= tiny.scoring.clamp_max
    assert out.scores.shape == (1, q)


def test_boxes_extend_the_prompt(tiny, detector):
    prompt = GeometricPrompt.from_boxes(BOXES[:1], torch.tensor([[1, 0]]))
    with torch.no_grad():
        out = detector.forward_grounding(_features(tiny, 1), _text(tiny, [3]), prompt)
    assert out.prompt.shape[1] == tiny.text.context_length + 3
    assert not out.prompt_mask[0, -3:].any()


def test_padded_batch_matches_single_images(tiny, detector):
    """Image 1 has one real box and one padded slot, and a longer caption: batching must not change its result."""
    feats, text = _features(tiny, 2), _text(tiny, [3, 7])
    prompt = GeometricPrompt.from_boxes(BOXES, torch.tensor([[1, 0], [0, 1]]))
    prompt.box_mask = torch.tensor([[False, False], [False, True]])
    with torch.no_grad():
        both = detector.forward_grounding(feats, text, prompt)
        one = detector.forward_grounding(
            feats.select(1),
            TextFeatures(text.features[1:], text.mask[1:]),
            GeometricPrompt.from_boxes(BOXES[1:, :1], torch.tensor([[0]])),
        )
    kw = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both.pred_logits[1], one.pred_logits[0], **kw)
    torch.testing.assert_close(both.presence_logit[1], one.presence_logit[0], **kw)
    torch.testing.assert_close(both.pred_boxes[1], one.pred_boxes[0], **kw)
    torch.testing.assert_close(both.pred_masks[1], one.pred_masks[0], **kw)


def test_joint_scores_fold_presence_into_the_logits(tiny, detector):
    feats, text = _features(tiny, 1), _text(tiny, [4])
    with torch.no_grad():
        plain = detector.forward_grounding(feats, text, GeometricPrompt.empty(1))
        joint = detector.forward_grounding(feats, text, GeometricPrompt.empty(1), joint_scores=True)
    want = inverse_sigmoid(plain.all_pred_logits.sigmoid() * plain.decoder.presence_logits.sigmoid()).clamp(-10, 10)
    torch.testing.assert_close(joint.all_pred_logits, want)
    torch.testing.assert_close(joint.pred_boxes, plain.pred_boxes)


def test_real_photo_end_to_end(tiny, astronaut):
    """The tiny detector with its real backbone on a real photo and a tokenised caption."""
    from sam3.modeling.text.text_encoder import TextEncoder
    from sam3.modeling.text.tokenizer import Tokenizer
    from sam3.modeling.vision.neck import DualFpnNeck
    from sam3.modeling.vision.vit import ViT
    from sam3.modeling.vl_backbone import VisionLanguageBackbone

    torch.manual_seed(0)
    backbone = VisionLanguageBackbone(
        DualFpnNeck(ViT(tiny.vision), tiny.vision, tiny.d_model), TextEncoder(tiny.text, tiny.d_model)
    )
    det = _heads(tiny, backbone).eval()
    s = tiny.image_size
    img = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float() / 255.0
    img = torch.nn.functional.interpolate(img, size=(s, s), mode="bilinear", antialias=True)
    img = (img - 0.5) / 0.5
    with torch.no_grad():
        feats = det.backbone.forward_image(img)
        text = det.backbone.forward_text(Tokenizer()(["an astronaut"]))
        out = det.forward_grounding(
            feats,
            text,
            GeometricPrompt.from_boxes(torch.tensor([[[0.5, 0.4, 0.4, 0.5]]]), torch.ones(1, 1, dtype=torch.long)),
        )
    q = tiny.decoder.num_queries
    assert out.pred_masks.shape == (1, q, 4 * tiny.feature_size, 4 * tiny.feature_size)
    assert torch.isfinite(out.pred_masks).all() and torch.isfinite(out.scores).all()


def _checkpoint_layout() -> dict[str, tuple[int, ...]]:
    return checkpoint_shapes()


def test_head_names_and_shapes_match_the_checkpoint():
    """Everything below ``detector.`` except the backbone (owned elsewhere) matches sam3.pt exactly."""
    layout = _checkpoint_layout()
    want = {
        k[len("detector.") :]: v
        for k, v in layout.items()
        if k.startswith("detector.") and not k.startswith("detector.backbone.")
    }
    with torch.device("meta"):
        det = _heads(get_config("sam3"))
    got = {k: tuple(v.shape) for k, v in det.state_dict().items()}
    assert sorted(set(got) - set(want)) == []
    assert sorted(set(want) - set(got)) == []
    assert got == want
