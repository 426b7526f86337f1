"""Our detector heads against the official ``Sam3Image.forward_grounding`` (``sam3==0.1.4`` in ``.oracle``).

The official geometry encoder, fusion encoder, decoder, segmentation head and dot-product scorer are built at
the tiny preset's sizes with random weights in an oracle subprocess and run on fixed backbone features and
text features (no backbone: its own parity lives elsewhere). Our ``Sam3Detector`` loads the same state dict
strictly and must agree to fp32 round-off on: the prompt tokens (text + geometry), the encoder memory,
the last-layer queries, class logits (plain and the video detector's joint form), presence logit, boxes
and mask logits. Cases: text only, one box, and a batch of two with padded boxes, padded points and
different caption lengths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sam3.config import get_config
from sam3.modeling.detector.decoder import DetrDecoder
from sam3.modeling.detector.detector import DetectorTransformer, Sam3Detector
from sam3.modeling.detector.fusion_encoder import FusionEncoder
from sam3.modeling.detector.geometry_encoder import GeometryEncoder
from sam3.modeling.detector.scoring import DotProductScoring
from sam3.modeling.detector.segmentation_head import SegmentationHead
from sam3.modeling.outputs import BackboneFeatures, GeometricPrompt, TextFeatures

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / ".oracle"
SHIMS = ROOT / "tests" / "parity" / "oracle"

_ORACLE_SCRIPT = r"""
import json, sys, types
sys.path.insert(0, sys.argv[3])
import shims
shims.install()
import torch, torch.nn as nn
from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
from sam3.model.encoder import TransformerEncoderLayer, TransformerEncoderFusion
from sam3.model.geometry_encoders import SequenceGeometryEncoder, Prompt
from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
from sam3.model.model_misc import DotProductScoring, MLP, MultiheadAttentionWrapper as MHA, TransformerWrapper
from sam3.model.position_encoding import PositionEmbeddingSine
from sam3.model.sam3_image import Sam3Image

cfg = json.load(open(sys.argv[1]))
D, geo_c, enc_c, dec_c, sc_c = cfg["d_model"], cfg["geometry"], cfg["encoder"], cfg["decoder"], cfg["scoring"]
V = cfg["vision"]
G = V["image_size"] // V["patch_size"]
torch.manual_seed(0)

def enc_layer(c, pos_attn, keys, bf):
    mha = lambda: MHA(num_heads=c["num_heads"], dropout=0.1, embed_dim=D, batch_first=bf)
    return TransformerEncoderLayer(activation="relu", d_model=D, dim_feedforward=c["dim_feedforward"], dropout=0.1,
        pos_enc_at_attn=pos_attn, pos_enc_at_cross_attn_keys=keys, pos_enc_at_cross_attn_queries=False,
        pre_norm=True, self_attention=mha(), cross_attention=mha())

geo = SequenceGeometryEncoder(pos_enc=PositionEmbeddingSine(D), encode_boxes_as_points=False,
    points_direct_project=True, points_pool=True, points_pos_enc=True, boxes_direct_project=True,
    boxes_pool=True, boxes_pos_enc=True, d_model=D, num_layers=geo_c["num_layers"],
    layer=enc_layer(geo_c, False, True, False), use_act_ckpt=True, add_cls=True, add_post_encode_proj=True,
    roi_size=geo_c["roi_size"], mask_encoder=None, add_mask_label=False)
encoder = TransformerEncoderFusion(layer=enc_layer(enc_c, True, False, True), num_layers=enc_c["num_layers"],
    d_model=D, num_feature_levels=1, frozen=False, use_act_checkpoint=True, add_pooled_text_to_img_feat=False,
    pool_text_with_mask=True)
dec_layer = TransformerDecoderLayer(activation="relu", d_model=D, dim_feedforward=dec_c["dim_feedforward"],
    dropout=0.1, cross_attention=MHA(num_heads=dec_c["num_heads"], dropout=0.1, embed_dim=D),
    n_heads=dec_c["num_heads"], use_text_cross_attention=True)
decoder = TransformerDecoder(layer=dec_layer, num_layers=dec_c["num_layers"], num_queries=dec_c["num_queries"],
    return_intermediate=True, box_refine=True, num_o2m_queries=0, dac=True, boxRPB="log", d_model=D,
    frozen=False, interaction_layer=None, dac_use_selfatt_ln=True, resolution=V["image_size"],
    stride=V["patch_size"], use_act_checkpoint=True, presence_token=True)
seg = UniversalSegmentationHead(hidden_dim=D, upsampling_stages=sc_c["pixel_decoder_stages"], aux_masks=False,
    presence_head=False, dot_product_scorer=None, act_ckpt=True,
    cross_attend_prompt=MHA(num_heads=8, dropout=0, embed_dim=D),
    pixel_decoder=PixelDecoder(num_upsampling_stages=sc_c["pixel_decoder_stages"], interpolation_mode="nearest",
                               hidden_dim=D))
scoring = DotProductScoring(d_model=D, d_proj=D, prompt_mlp=MLP(D, sc_c["prompt_mlp_hidden"], D, 2, dropout=0.1,
    residual=True, out_norm=nn.LayerNorm(D)), clamp_max_val=sc_c["clamp_max"])
common = dict(backbone=nn.Module(), transformer=TransformerWrapper(encoder=encoder, decoder=decoder, d_model=D),
    input_geometry_encoder=geo, segmentation_head=seg, num_feature_levels=1, o2m_mask_predict=True,
    dot_prod_scoring=scoring, use_instance_query=False, multimask_output=True, inst_interactive_predictor=None,
    matcher=None)
model = Sam3Image(**common).eval()
model_joint = Sam3Image(**common, supervise_joint_box_scores=True).eval()
with torch.no_grad():  # no parameter trivially zero or one: a dropped bias or norm must show up
    for n, p in model.named_parameters():
        if "norm" in n:
            p.add_(torch.randn_like(p) * 0.2)
        elif n.endswith("bias"):
            p.normal_(0, 0.05)
    decoder.bbox_embed.layers[-1].weight.normal_(0, 0.05)

pe = PositionEmbeddingSine(D)
res = {"sd": model.state_dict(), "cases": {}}
T = cfg["text"]["context_length"]

def run(name, B, txt_len, boxes, labels, box_mask, points=None, point_labels=None, point_mask=None):
    fpn = [torch.randn(B, D, 4 * G, 4 * G), torch.randn(B, D, 2 * G, 2 * G), torch.randn(B, D, G, G)]
    pos = [pe(x) for x in fpn]
    txt = torch.randn(T, B, D)
    tmask = torch.arange(T)[None, :] >= torch.tensor(txt_len)[:, None]
    bo = {"backbone_fpn": fpn, "vision_pos_enc": pos, "language_features": txt, "language_mask": tmask}
    fi = types.SimpleNamespace(img_ids=torch.arange(B), text_ids=torch.arange(B))
    def prompt():
        c = lambda t: None if t is None else t.clone()
        return Prompt(box_embeddings=c(boxes), box_mask=c(box_mask), box_labels=c(labels),
                      point_embeddings=c(points), point_mask=c(point_mask), point_labels=c(point_labels))
    p0 = prompt()
    rec = dict(fpn=fpn, pos=pos, txt=txt, tmask=tmask, boxes=p0.box_embeddings, box_labels=p0.box_labels,
               box_mask=p0.box_mask, points=p0.point_embeddings, point_labels=p0.point_labels,
               point_mask=p0.point_mask)
    with torch.inference_mode():
        out = model.forward_grounding(backbone_out=dict(bo), find_input=fi, find_target=None, geometric_prompt=prompt())
        outj = model_joint.forward_grounding(backbone_out=dict(bo), find_input=fi, find_target=None,
                                             geometric_prompt=prompt())
    for k in ("pred_logits", "pred_boxes", "pred_masks", "presence_logit_dec", "queries", "encoder_hidden_states"):
        rec[k] = out[k].clone()
    enc_out = out["prev_encoder_out"]["encoder_out"]
    rec["prompt"], rec["prompt_mask"] = enc_out["prompt_before_enc"].clone(), enc_out["prompt_mask"].clone()
    rec["joint_pred_logits"] = outj["pred_logits"].clone()
    res["cases"][name] = rec

run("text_only", 1, [5], torch.zeros(0, 1, 4), None, torch.zeros(1, 0, dtype=torch.bool))
run("one_box", 1, [4], torch.tensor([[[0.4, 0.55, 0.3, 0.5]]]), torch.tensor([[1]]), None)
bx = torch.tensor([[[0.4, 0.55, 0.3, 0.5], [0.3, 0.3, 0.5, 0.4]], [[0.7, 0.2, 0.2, 0.25], [0.5, 0.5, 0.1, 0.1]]])
pts = torch.tensor([[[0.2, 0.8], [0.5, 0.1]], [[0.9, 0.4], [0.33, 0.66]]])
run("padded_b2", 2, [3, 7], bx, torch.tensor([[1, 0], [0, 1]]), torch.tensor([[False, False], [False, True]]),
    pts, torch.tensor([[1, 1], [0, 1]]), torch.tensor([[False, True], [False, False]]))
torch.save(res, sys.argv[2])
"""


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    if not ORACLE.is_dir():
        pytest.skip(f"{ORACLE} (the official sam3 package, the oracle) is not installed")
    tmp = tmp_path_factory.mktemp("detector_heads")
    cfg_path, out_path = tmp / "cfg.json", tmp / "official.pt"
    cfg_path.write_text(json.dumps(get_config("tiny").to_dict()))
    env = dict(os.environ, PYTHONPATH=str(ORACLE))
    proc = subprocess.run(
        [sys.executable, "-P", "-c", _ORACLE_SCRIPT, str(cfg_path), str(out_path), str(SHIMS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out_path, weights_only=False)


def _ours(state_dict) -> Sam3Detector:
    cfg = get_config("tiny")
    c = cfg.d_model
    det = Sam3Detector(
        nn.Module(),
        GeometryEncoder(cfg.geometry, c),
        DetectorTransformer(FusionEncoder(cfg.encoder, c), DetrDecoder(cfg.decoder, c)),
        SegmentationHead(cfg.scoring, c),
        DotProductScoring(cfg.scoring, c),
    ).eval()
    det.load_state_dict(state_dict, strict=True)
    return det


def _batch_first(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).contiguous()


@pytest.mark.parametrize("case", ["text_only", "one_box", "padded_b2"])
def test_forward_grounding_matches_official(official, case):
    det = _ours(official["sd"])
    c = official["cases"][case]
    bsz = c["tmask"].shape[0]
    prompt = GeometricPrompt(
        boxes=_batch_first(c["boxes"]),
        box_labels=_batch_first(c["box_labels"]),
        box_mask=c["box_mask"],
        points=_batch_first(c["points"]),
        point_labels=_batch_first(c["point_labels"]),
        point_mask=c["point_mask"],
    )
    feats = BackboneFeatures(fpn=c["fpn"], pos=c["pos"])
    text = TextFeatures(_batch_first(c["txt"]), c["tmask"])
    with torch.inference_mode():
        out = det.forward_grounding(feats, text, prompt)
        joint = det.forward_grounding(feats, text, prompt, joint_scores=True)

    assert torch.equal(out.prompt_mask, c["prompt_mask"])
    valid = ~out.prompt_mask  # padded prompt slots hold don't-care values on both sides
    pairs = {
        "prompt": (out.prompt[valid], _batch_first(c["prompt"])[valid]),
        "memory": (out.memory, _batch_first(c["encoder_hidden_states"])),
        "queries": (out.decoder.hs[-1], c["queries"]),
        "pred_logits": (out.pred_logits, c["pred_logits"].squeeze(-1)),
        "joint_pred_logits": (joint.pred_logits, c["joint_pred_logits"].squeeze(-1)),
        "presence_logit": (out.presence_logit, c["presence_logit_dec"]),
        "pred_boxes": (out.pred_boxes, c["pred_boxes"]),
        "pred_masks": (out.pred_masks, c["pred_masks"]),
    }
    assert out.pred_masks.shape[0] == bsz
    for name, (ours, ref) in pairs.items():
        assert ours.shape == ref.shape, name
        tol = 1e-4 * max(1.0, ref.abs().max().item())
        err = (ours - ref).abs().max().item()
        assert err <= tol, f"{case}/{name}: max|diff| {err:.3g} > {tol:.3g}"
