"""Build the UPSTREAM SAM 3.1 model (multiplex detector + tracker) at the sizes of one of OUR presets.

Runs ONLY inside the 3.1 oracle subprocess (``PYTHONPATH=.oracle31:.oracle``). The detector parts are wired as
``tests/parity/oracle/build_official.py`` wires SAM 3's (the same classes, from the 3.1 tree), on the three-head
neck (``Sam3TriViTDetNeck``) and ``SAM3VLBackboneTri`` as ``build_sam3_multiplex_video_predictor`` does; the tracker
is ``build_sam3_multiplex_video_model``'s ``Sam3VideoTrackingMultiplexDemo`` call for call, with every size read
from the config (``sam3.config_multiplex.get_multiplex_config(preset).to_dict()``). At the ``sam3`` preset the
layout equals ``tests/data/keys_sam31.tsv.gz`` (checked by ``--check-layout``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shims31  # noqa: E402  (hides the GPU before torch loads)

shims31.install()

import build_official  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

DEFAULT_BPE = build_official.DEFAULT_BPE


def _sam3_cfg(cfg: dict) -> dict:
    """The detector sections in the SAM 3 config shape build_official expects (tracker: SAM 3 defaults)."""
    from copy import deepcopy

    out = deepcopy(cfg)
    out["vision"] = {**cfg["vision"], "scale_factors": [4.0, 2.0, 1.0, 0.5], "scalp": 1}
    out["tracker"] = {"mem_dim": 64, "num_maskmem": 7, "memory_attention_layers": 1, "memory_attention_ffn": 256,
                      "mask_decoder_mlp_dim": 2048, "mask_decoder_depth": 2, "mask_decoder_heads": 8,
                      "num_multimask_outputs": 3, "mask_in_chans": 16, "max_obj_ptrs_in_encoder": 16,
                      "max_cond_frames_in_attn": 4, "rope_theta": 10000.0, "sigmoid_scale_for_mem_enc": 20.0,
                      "sigmoid_bias_for_mem_enc": -10.0, "dynamic_multimask_stability_delta": 0.05,
                      "dynamic_multimask_stability_thresh": 0.98, "multimask_max_points": 1,
                      "memory_selection_threshold": 0.01, "use_memory_selection": False}
    out.pop("version", None)
    return out


def build_tracker(cfg: dict):
    """``build_sam3_multiplex_video_model`` (without backbone, as the predictor builder deletes it)."""
    from sam3.model.decoder import (
        DecoupledTransformerDecoderLayerv2,
        SimpleRoPEAttention,
        TransformerEncoderDecoupledCrossAttention,
    )
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.model_misc import TransformerWrapper
    from sam3.model.multiplex_utils import MultiplexController
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.video_tracking_multiplex_demo import Sam3VideoTrackingMultiplexDemo

    d, v, t = cfg["d_model"], cfg["vision"], cfg["tracker"]
    size, patch = v["image_size"], v["patch_size"]
    grid = size // patch
    m = t["multiplex_count"]
    input_mask = 16 * grid
    mask_downsampler = SimpleMaskDownSampler(
        kernel_size=3, stride=2, padding=1, interpol_size=[input_mask, input_mask], multiplex_count=m,
        starting_out_chan=t["mask_downsampler_start_chans"], input_channel_multiplier=t["mask_channels_per_object"],
    )
    fuser = SimpleFuser(layer=CXBlock(dim=d, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06,
                                      use_dwconv=True), num_layers=2)
    maskmem_backbone = SimpleMaskEncoder(
        out_dim=t["mem_dim"],
        position_encoding=PositionEmbeddingSine(num_pos_feats=d, normalize=True, scale=None, temperature=10000),
        mask_downsampler=mask_downsampler, fuser=fuser,
    )
    heads = t["memory_attention_heads"]
    rope = dict(d_model=d, num_heads=heads, dropout_p=0.1, rope_theta=t["rope_theta"], feat_sizes=[grid, grid])
    layer = DecoupledTransformerDecoderLayerv2(
        activation="gelu", d_model=d, num_heads=heads, dropout=0.1, dim_feedforward=t["memory_attention_ffn"],
        pos_enc_at_attn=False, pre_norm=True, pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        self_attention_rope=SimpleRoPEAttention(**rope),
        cross_attention_rope=SimpleRoPEAttention(**rope, rope_k_repeat=True),
    )
    encoder = TransformerEncoderDecoupledCrossAttention(
        d_model=d, frozen=False, pos_enc_at_input=True, use_image_in_output=False, layer=layer,
        num_layers=t["memory_attention_layers"], use_act_checkpoint=False, batch_first=True,
    )
    transformer = TransformerWrapper(encoder=encoder, decoder=None, d_model=d)
    model = Sam3VideoTrackingMultiplexDemo(
        backbone=None, transformer=transformer, maskmem_backbone=maskmem_backbone,
        multiplex_controller=MultiplexController(multiplex_count=m, eval_multiplex_count=m),
        image_size=size, backbone_stride=patch, num_maskmem=t["num_maskmem"],
        use_high_res_features_in_sam=True, use_obj_ptrs_in_encoder=True,
        max_obj_ptrs_in_encoder=t["max_obj_ptrs_in_encoder"], add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=True, use_mlp_for_obj_ptr_proj=True, pred_obj_scores=True,
        pred_obj_scores_mlp=True, fixed_no_obj_ptr=True, use_no_obj_ptr=True, use_linear_no_obj_ptr=True,
        no_obj_embed_spatial=True, sincos_tpos_enc=True, multimask_output_in_sam=True,
        multimask_output_for_tracking=True, multimask_min_pt_num=0, multimask_max_pt_num=t["multimask_max_points"],
        use_multimask_token_for_obj_ptr=True, num_multimask_outputs=t["num_multimask_outputs"],
        apply_sigmoid_to_mask_logits_for_mem_enc=True, sigmoid_scale_for_mem_enc=t["sigmoid_scale_for_mem_enc"],
        sigmoid_bias_for_mem_enc=t["sigmoid_bias_for_mem_enc"], non_overlap_masks_for_mem_enc=False,
        add_output_suppression_embeddings=True, add_object_conditional_embeddings=False,
        condition_as_mask_input=True, condition_as_mask_input_fg=1.0, condition_as_mask_input_bg=0.0,
        use_maskmem_tpos_v2=True, save_image_features=True, randomness_fix=True,
        use_mask_input_as_output_without_sam=True, directly_add_no_mem_embed=True, iou_prediction_use_sigmoid=False,
        forward_backbone_per_frame_for_eval=True, offload_output_to_cpu_for_eval=False,
        trim_past_non_cond_mem_for_eval=False, max_cond_frames_in_attn=t["max_cond_frames_in_attn"],
        is_dynamic_model=True,
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": t["dynamic_multimask_stability_delta"],
            "dynamic_multimask_stability_thresh": t["dynamic_multimask_stability_thresh"],
        },
        compile_all_components=False, use_memory_selection=False,
    )
    return model


def build_detector(cfg: dict, bpe_path=DEFAULT_BPE):
    """``Sam3MultiplexDetector`` on ``SAM3VLBackboneTri``, the parts wired as build_official wires SAM 3's."""
    from sam3.model.necks import Sam3TriViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_multiplex_detector import Sam3MultiplexDetector
    from sam3.model.vl_combiner import SAM3VLBackboneTri

    image = build_official.build_official_image_model(_sam3_cfg(cfg), bpe_path, inst=False)
    d = cfg["d_model"]
    tri_neck = Sam3TriViTDetNeck(
        trunk=image.backbone.vision_backbone.trunk,
        position_encoding=PositionEmbeddingSine(num_pos_feats=d, normalize=True, scale=None, temperature=10000),
        d_model=d, scale_factors=list(cfg["vision"]["scale_factors"]),
    )
    backbone = SAM3VLBackboneTri(scalp=0, visual=tri_neck, text=image.backbone.language_backbone)
    return Sam3MultiplexDetector(
        num_feature_levels=1, backbone=backbone, transformer=image.transformer,
        segmentation_head=image.segmentation_head, semantic_segmentation_head=None,
        input_geometry_encoder=image.geometry_encoder, use_early_fusion=True, use_dot_prod_scoring=True,
        dot_prod_scoring=image.dot_prod_scoring, supervise_joint_box_scores=True, is_multiplex=True,
    )


class Upstream31(nn.Module):
    """``detector`` + ``tracker.model``: the checkpoint layout of ``sam3.1_multiplex.pt``."""

    def __init__(self, cfg: dict, bpe_path=DEFAULT_BPE):
        super().__init__()
        self.detector = build_detector(cfg, bpe_path)
        self.tracker = nn.Module()
        self.tracker.model = build_tracker(cfg)

    @property
    def backbone(self):  # what build_official.randomize reads
        return self.detector.backbone


def build_random(cfg: dict, seed: int = 0, bpe_path=DEFAULT_BPE) -> Upstream31:
    """Deterministic random weights (build_official's initialisation fixes and perturbation)."""
    torch.manual_seed(seed)
    model = Upstream31(cfg, bpe_path)
    build_official.randomize(model, seed)
    return model.eval()


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--check-layout", help="keys TSV(.gz) to compare the meta-device layout with")
    args = ap.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    with build_official.meta_device():
        model = Upstream31(cfg)
    state = model.state_dict()
    print(f"{len(state)} tensors")
    if args.check_layout:
        import gzip

        raw = Path(args.check_layout).read_bytes()
        text = (gzip.decompress(raw) if args.check_layout.endswith(".gz") else raw).decode()
        ref = {line.split("\t")[0]: line.split("\t")[1] for line in text.splitlines() if line}
        ours = {k: str(tuple(v.shape)) for k, v in state.items()}
        print("missing", sorted(set(ref) - set(ours))[:10], "unexpected", sorted(set(ours) - set(ref))[:10])
        print("wrong", [(k, ours[k], ref[k]) for k in ours if k in ref and ours[k] != ref[k]][:10])
