"""Parity of the SAM prompt encoder, mask decoder, click predictor and hole filling with the official
package (tiny sizes, random weights). Drop-in candidate for tests/parity/ (needs .oracle)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sam3.config import get_config
from sam3.inference.interactive import InteractivePredictor
from sam3.modeling.interactive.mask_decoder import MaskDecoder
from sam3.modeling.interactive.prompt_encoder import PromptEncoder
from sam3.modeling.outputs import BackboneFeatures
from sam3.ops.masks import fill_holes_in_mask_scores

REPO = Path(__file__).resolve().parents[2]
CFG = get_config("tiny")

ORACLE_SCRIPT = r"""
import sys, types, numpy as np, torch, torch.nn.functional as F
from torch import nn
from sam3.sam.prompt_encoder import PromptEncoder
from sam3.sam.mask_decoder import MaskDecoder
from sam3.sam.transformer import TwoWayTransformer
from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor
from sam3.model.sam3_tracker_base import Sam3TrackerBase
from sam3.model.sam3_image import Sam3Image
from sam3.model.sam3_tracker_utils import fill_holes_in_mask_scores
IMG, G, C = int(sys.argv[2]), int(sys.argv[3]), 256
torch.manual_seed(0)
class Heads(nn.Module):
    _prepare_backbone_features = Sam3TrackerBase._prepare_backbone_features
    def __init__(self):
        super().__init__()
        self.sam_prompt_encoder = PromptEncoder(embed_dim=C, image_embedding_size=(G, G), input_image_size=(IMG, IMG), mask_in_chans=16)
        self.sam_mask_decoder = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=C, mlp_dim=2048, num_heads=8),
            transformer_dim=C, iou_head_depth=3, iou_head_hidden_dim=256, use_high_res_features=True, iou_prediction_use_sigmoid=True,
            pred_obj_scores=True, pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True, dynamic_multimask_via_stability=True,
            dynamic_multimask_stability_delta=0.05, dynamic_multimask_stability_thresh=0.98)
        self.no_mem_embed = nn.Parameter(torch.randn(1, 1, C) * 0.1)
        self.image_size, self.num_feature_levels, self.device = IMG, 3, torch.device("cpu")
heads = Heads().eval()
with torch.no_grad():
    for p in heads.parameters():
        p.add_(torch.randn_like(p) * (0.05 if p.dim() > 1 else 0.2))
md = heads.sam_mask_decoder
g = torch.Generator().manual_seed(1)
fpn = [torch.randn(1, C, s, s, generator=g) for s in (4 * G, 2 * G, G)]
H, W = 150, 200
pred = SAM3InteractiveImagePredictor(heads)
pred._bb_feat_sizes = [(4 * G, 4 * G), (2 * G, 2 * G), (G, G)]
img_model = types.SimpleNamespace(inst_interactive_predictor=pred)
def official(**kw):
    with torch.no_grad():
        sam2 = {"backbone_fpn": [md.conv_s0(fpn[0]), md.conv_s1(fpn[1]), fpn[2]], "vision_pos_enc": [torch.zeros_like(f) for f in fpn]}
        return Sam3Image.predict_inst(img_model, {"original_height": H, "original_width": W, "backbone_out": {"sam2_backbone_out": sam2}}, **kw)
rng = np.random.default_rng(3)
specs = {
    "one_point_mm": dict(point_coords=np.array([[120.0, 60.0]]), point_labels=np.array([1])),
    "one_point_single": dict(point_coords=np.array([[120.0, 60.0]]), point_labels=np.array([1]), multimask_output=False),
    "pos_neg": dict(point_coords=np.array([[30.0, 40.0], [150.5, 99.2], [10, 140]]), point_labels=np.array([1, 0, 1]), multimask_output=False),
    "box": dict(box=np.array([20.0, 30.0, 160.0, 120.0]), multimask_output=False),
    "box_points": dict(box=np.array([20.0, 30.0, 160.0, 120.0]), point_coords=np.array([[50.0, 60.0], [100, 100]]), point_labels=np.array([1, 0])),
    "logits": dict(point_coords=np.array([[77.0, 33.0]]), point_labels=np.array([1]), return_logits=True),
    "normalized": dict(point_coords=np.array([[0.3, 0.7]]), point_labels=np.array([1]), normalize_coords=False),
    "batched": dict(point_coords=rng.uniform(0, 150, (3, 2, 2)), point_labels=np.array([[1, 0], [1, 1], [0, 1]]), box=rng.uniform(0, 150, (3, 4)), multimask_output=False),
}
cases = {k: dict(kw=kw, out=official(**kw)) for k, kw in specs.items()}
kw = dict(point_coords=np.array([[120.0, 60.0], [40, 40]]), point_labels=np.array([1, 0]), mask_input=cases["one_point_mm"]["out"][2][:1], multimask_output=False)
cases["mask_input"] = dict(kw=kw, out=official(**kw))
fills = []
for n, h, w, blur in [(4, 64, 64, 3), (3, 63, 65, 2), (3, 50, 33, 0)]:
    x = torch.randn(n, 1, h, w, generator=g)
    if blur:
        x = F.avg_pool2d(F.pad(x, (blur,) * 4, mode="replicate"), 2 * blur + 1, stride=1)
    x = x * 5 + torch.randn(n, 1, 1, 1, generator=g)
    for max_area in (4, 16, 64):
        fills.append(dict(x=x, max_area=max_area, out=fill_holes_in_mask_scores(x.clone(), max_area)))
torch.save(dict(state_dict=heads.state_dict(), fpn=fpn, hw=(H, W), cases=cases, fills=fills), sys.argv[1])
"""


@pytest.fixture(scope="module")
def official(oracle, tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle") / "interactive.pt"
    script = out.with_suffix(".py")
    script.write_text(ORACLE_SCRIPT)
    env = {"PYTHONPATH": str(oracle), "PATH": "/usr/bin:/bin"}
    args = [sys.executable, "-P", str(script), str(out), str(CFG.image_size), str(CFG.feature_size)]
    subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
    return torch.load(out, weights_only=False)


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.sam_prompt_encoder = PromptEncoder.from_config(CFG)
        self.sam_mask_decoder = MaskDecoder.from_config(CFG)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, CFG.d_model))


def _close(ours, ref):
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert float(np.abs(ours - ref).max()) <= tol


def test_click_predictor_matches_official(official):
    heads = Heads().eval()
    heads.load_state_dict(official["state_dict"], strict=True)
    fpn = official["fpn"]
    feats = BackboneFeatures(fpn=fpn, pos=fpn, sam2_fpn=fpn, sam2_pos=fpn)
    predictor = InteractivePredictor(heads)
    for name, case in official["cases"].items():
        masks, iou, low = predictor.predict_inst(feats, official["hw"], **case["kw"])
        ref_masks, ref_iou, ref_low = case["out"]
        _close(iou, ref_iou)
        _close(low, ref_low)
        if case["kw"].get("return_logits"):
            _close(masks, ref_masks)
        else:  # binary: allow a handful of pixels on the 0 boundary
            assert masks.shape == ref_masks.shape
            assert (masks != ref_masks).mean() < 1e-4, name


def test_fill_holes_in_mask_scores_matches_official(official):
    for case in official["fills"]:
        torch.testing.assert_close(
            fill_holes_in_mask_scores(case["x"].clone(), case["max_area"]), case["out"], rtol=0, atol=0
        )
