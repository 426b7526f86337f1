"""The renaming table between our checkpoint names and the transformers layout of SAM 3 (``model.safetensors``).

Data only: every rule pairs a template of our name with the HF name(s) and the tensor operation it needs.
:mod:`sam3.hf_layout` applies the table in either direction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# A rule pairs a template of our name with a template of the HF name. Placeholders: {i} {j} a layer
# index, {p} "weight" or "bias", {qkv} one of q/k/v (the fused tensor is split in that order).
# ``op`` says which tensor operation the rule needs; rules are tried in order, first match wins.

SPLIT_QKV = "split_qkv"  # ours (3C, ...) fused  <->  HF q_proj / k_proj / v_proj (C, ...)
DROP_CLS = "drop_cls"  # ours (1, 1+n, C) with a cls slot  <->  HF (1, n, C)
TRANSPOSE = "transpose"  # ours (in, out)  <->  HF (out, in)
STACK = "stack"  # ours k separate (1, C) tables {j}  <->  HF one (k, C) table
DUPLICATE = "duplicate"  # ours one tensor  <->  HF the same tensor under two names
RECOMPUTED = "recomputed"  # ours only: a table HF recomputes (ViT RoPE); rebuilt on HF -> ours
HF_ABSENT = "hf_absent"  # ours only: weights the HF layout does not carry; zero-filled on HF -> ours


@dataclass(frozen=True)
class Rule:
    ours: str
    hf: tuple[str, ...]  # empty for RECOMPUTED / HF_ABSENT; two names for DUPLICATE
    op: str | None = None


def _r(ours: str, hf: str | tuple[str, ...] | None, op: str | None = None) -> Rule:
    hf_t = () if hf is None else ((hf,) if isinstance(hf, str) else tuple(hf))
    return Rule(ours, hf_t, op)


def _mha(ours: str, hf: str, out: str = "o_proj") -> list[Rule]:
    """A packed nn.MultiheadAttention (in_proj_weight/bias, out_proj) <-> separate q/k/v projections."""
    return [
        _r(f"{ours}.in_proj_{{p}}", f"{hf}.{{qkv}}_proj.{{p}}", SPLIT_QKV),
        _r(f"{ours}.out_proj.{{p}}", f"{hf}.{out}.{{p}}"),
    ]


def _qkv_attn(ours: str, hf: str) -> list[Rule]:
    """An attention with separate q/k/v projections already; only out_proj is renamed."""
    return [
        _r(f"{ours}.{{qkv}}_proj.{{p}}", f"{hf}.{{qkv}}_proj.{{p}}"),
        _r(f"{ours}.out_proj.{{p}}", f"{hf}.o_proj.{{p}}"),
    ]


def _mlp(ours: str, hf: str, names: Iterable[str]) -> list[Rule]:
    """An MLP ``ours.layers.k`` <-> ``hf.<names[k]>``."""
    return [_r(f"{ours}.layers.{k}.{{p}}", f"{hf}.{name}.{{p}}") for k, name in enumerate(names)]


def _same(ours: str, hf: str, names: Iterable[str]) -> list[Rule]:
    """Sub-modules (trailing dot) or tensors whose names below the prefix are unchanged."""
    return _renamed(ours, hf, [(n, n) for n in names])


def _renamed(ours: str, hf: str, pairs: Iterable[tuple[str, str]]) -> list[Rule]:
    """Modules renamed one to one: ``ours.a.{p}`` <-> ``hf.b.{p}`` (bare tensors when no trailing dot)."""
    rules = []
    for a, b in pairs:
        if a.endswith("."):
            rules.append(_r(f"{ours}.{a}{{p}}", f"{hf}.{b}{{p}}"))
        else:
            rules.append(_r(f"{ours}.{a}", f"{hf}.{b}"))
    return rules


def _neck(ours: str, hf: str) -> list[Rule]:
    # Levels 0..3 are the scale factors 4, 2, 1, 0.5 (both presets). HF numbers the layers of a level's
    # upsampling Sequential, counting the GELU between the two transposed convs of the 4x level.
    return _renamed(
        ours,
        hf,
        [
            ("0.dconv_2x2_0.", "0.scale_layers.0."),
            ("0.dconv_2x2_1.", "0.scale_layers.2."),
            ("1.dconv_2x2.", "1.scale_layers.0."),
            ("{i}.conv_1x1.", "{i}.proj1."),
            ("{i}.conv_3x3.", "{i}.proj2."),
        ],
    )


def _build_hf_rules() -> tuple[Rule, ...]:
    D, H = "detector", "detector_model"
    vb = f"{D}.backbone.vision_backbone"
    trunk, hf_trunk = f"{vb}.trunk", f"{H}.vision_encoder.backbone"
    text, hf_text = f"{D}.backbone.language_backbone.encoder", f"{H}.text_encoder.text_model"
    geo, hf_geo = f"{D}.geometry_encoder", f"{H}.geometry_encoder"
    enc, hf_enc = f"{D}.transformer.encoder.layers.{{i}}", f"{H}.detr_encoder.layers.{{i}}"
    dec, hf_dec = f"{D}.transformer.decoder", f"{H}.detr_decoder"
    seg, hf_seg = f"{D}.segmentation_head", f"{H}.mask_decoder"
    dot, hf_dot = f"{D}.dot_prod_scoring", f"{H}.dot_product_scoring"
    T, TH = "tracker", "tracker_model"
    mem, hf_mem = f"{T}.transformer.encoder", f"{TH}.memory_attention"
    menc, hf_menc = f"{T}.maskmem_backbone", f"{TH}.memory_encoder"
    pe, hf_pe = f"{T}.sam_prompt_encoder", f"{TH}.prompt_encoder"
    md, hf_md = f"{T}.sam_mask_decoder", f"{TH}.mask_decoder"
    mlp3_tracker = ("proj_in", "layers.0", "proj_out")  # HF's SAM-2 style 3-layer MLP naming
    blk, hf_blk = f"{trunk}.blocks.{{i}}", f"{hf_trunk}.layers.{{i}}"
    rb, hf_rb = f"{text}.transformer.resblocks.{{i}}", f"{hf_text}.encoder.layers.{{i}}"
    tw, hf_tw = f"{md}.transformer", f"{hf_md}.transformer"

    rules: list[Rule] = [
        # ViT trunk
        _r(f"{trunk}.pos_embed", f"{hf_trunk}.embeddings.position_embeddings", DROP_CLS),
        _r(f"{trunk}.patch_embed.proj.{{p}}", f"{hf_trunk}.embeddings.patch_embeddings.projection.{{p}}"),
        _r(f"{trunk}.ln_pre.{{p}}", f"{hf_trunk}.layer_norm.{{p}}"),
        _r(f"{blk}.attn.qkv.{{p}}", f"{hf_blk}.attention.{{qkv}}_proj.{{p}}", SPLIT_QKV),
        _r(f"{blk}.attn.freqs_cis", None, RECOMPUTED),
        *_renamed(
            blk,
            hf_blk,
            [
                ("norm1.", "layer_norm1."),
                ("norm2.", "layer_norm2."),
                ("attn.proj.", "attention.o_proj."),
                ("mlp.fc1.", "mlp.fc1."),
                ("mlp.fc2.", "mlp.fc2."),
            ],
        ),
        # FPN necks: the detector's and the tracker's copy (top-level ``tracker_neck`` in HF)
        *_neck(f"{vb}.convs", f"{H}.vision_encoder.neck.fpn_layers"),
        *_neck(f"{vb}.sam2_convs", "tracker_neck.fpn_layers"),
        # Text encoder
        _r(f"{text}.positional_embedding", f"{hf_text}.embeddings.position_embedding.weight"),
        _r(f"{text}.text_projection", f"{H}.text_encoder.text_projection.weight", TRANSPOSE),
        *_renamed(
            text, hf_text, [("token_embedding.", "embeddings.token_embedding."), ("ln_final.", "final_layer_norm.")]
        ),
        *_mha(f"{rb}.attn", f"{hf_rb}.self_attn", out="out_proj"),
        *_renamed(
            rb,
            hf_rb,
            [
                ("ln_1.", "layer_norm1."),
                ("ln_2.", "layer_norm2."),
                ("mlp.c_fc.", "mlp.fc1."),
                ("mlp.c_proj.", "mlp.fc2."),
            ],
        ),
        _r(f"{D}.backbone.language_backbone.resizer.{{p}}", f"{H}.text_projection.{{p}}"),
        # Geometry encoder (HF has no point-prompt projections)
        *_mha(f"{geo}.encode.{{i}}.self_attn", f"{hf_geo}.layers.{{i}}.self_attn"),
        *_mha(f"{geo}.encode.{{i}}.cross_attn_image", f"{hf_geo}.layers.{{i}}.cross_attn"),
        *_renamed(
            f"{geo}.encode.{{i}}",
            f"{hf_geo}.layers.{{i}}",
            [
                ("linear1.", "mlp.fc1."),
                ("linear2.", "mlp.fc2."),
                ("norm1.", "layer_norm1."),
                ("norm2.", "layer_norm2."),
                ("norm3.", "layer_norm3."),
            ],
        ),
        *_renamed(
            geo,
            hf_geo,
            [
                ("img_pre_norm.", "vision_layer_norm."),
                ("norm.", "prompt_layer_norm."),
                ("encode_norm.", "output_layer_norm."),
            ],
        ),
        *_same(
            geo,
            hf_geo,
            [
                "label_embed.",
                "cls_embed.",
                "boxes_direct_project.",
                "boxes_pool_project.",
                "boxes_pos_enc_project.",
                "final_proj.",
            ],
        ),
        _r(f"{geo}.points_direct_project.{{p}}", None, HF_ABSENT),
        _r(f"{geo}.points_pool_project.{{p}}", None, HF_ABSENT),
        _r(f"{geo}.points_pos_enc_project.{{p}}", None, HF_ABSENT),
        # Fusion encoder
        *_mha(f"{enc}.self_attn", f"{hf_enc}.self_attn"),
        *_mha(f"{enc}.cross_attn_image", f"{hf_enc}.cross_attn"),
        *_renamed(
            enc,
            hf_enc,
            [
                ("linear1.", "mlp.fc1."),
                ("linear2.", "mlp.fc2."),
                ("norm1.", "layer_norm1."),
                ("norm2.", "layer_norm2."),
                ("norm3.", "layer_norm3."),
            ],
        ),
        # Decoder (post-norm: norm1 follows the image cross-attention, norm2 the self-attention)
        *_same(dec, hf_dec, ["query_embed.", "reference_points.", "presence_token."]),
        *_mlp(f"{dec}.presence_token_head", f"{hf_dec}.presence_head", ["layer1", "layer2", "layer3"]),
        *_mlp(f"{dec}.bbox_embed", f"{hf_dec}.box_head", ["layer1", "layer2", "layer3"]),
        *_mlp(f"{dec}.ref_point_head", f"{hf_dec}.ref_point_head", ["layer1", "layer2"]),
        *_mlp(f"{dec}.boxRPB_embed_x", f"{hf_dec}.box_rpb_embed_x", ["layer1", "layer2"]),
        *_mlp(f"{dec}.boxRPB_embed_y", f"{hf_dec}.box_rpb_embed_y", ["layer1", "layer2"]),
        *_renamed(dec, hf_dec, [("presence_token_out_norm.", "presence_layer_norm."), ("norm.", "output_layer_norm.")]),
        *_mha(f"{dec}.layers.{{i}}.self_attn", f"{hf_dec}.layers.{{i}}.self_attn"),
        *_mha(f"{dec}.layers.{{i}}.ca_text", f"{hf_dec}.layers.{{i}}.text_cross_attn"),
        *_mha(f"{dec}.layers.{{i}}.cross_attn", f"{hf_dec}.layers.{{i}}.vision_cross_attn"),
        *_renamed(
            f"{dec}.layers.{{i}}",
            f"{hf_dec}.layers.{{i}}",
            [
                ("linear1.", "mlp.fc1."),
                ("linear2.", "mlp.fc2."),
                ("norm1.", "vision_cross_attn_layer_norm."),
                ("catext_norm.", "text_cross_attn_layer_norm."),
                ("norm2.", "self_attn_layer_norm."),
                ("norm3.", "mlp_layer_norm."),
            ],
        ),
        # Segmentation head
        *_same(seg, hf_seg, ["pixel_decoder.conv_layers.{i}.", "pixel_decoder.norms.{i}."]),
        *_renamed(
            seg,
            hf_seg,
            [
                ("mask_predictor.mask_embed.layers.{i}.", "mask_embedder.layers.{i}."),
                ("instance_seg_head.", "instance_projection."),
                ("semantic_seg_head.", "semantic_projection."),
                ("cross_attn_norm.", "prompt_cross_attn_norm."),
            ],
        ),
        *_mha(f"{seg}.cross_attend_prompt", f"{hf_seg}.prompt_cross_attn"),
        # Dot-product scoring
        *_mlp(f"{dot}.prompt_mlp", f"{hf_dot}.text_mlp", ["layer1", "layer2"]),
        *_renamed(
            dot,
            hf_dot,
            [
                ("prompt_mlp.out_norm.", "text_mlp_out_norm."),
                ("prompt_proj.", "text_proj."),
                ("hs_proj.", "query_proj."),
            ],
        ),
        # Tracker: parameters at the top
        *_renamed(
            T,
            TH,
            [
                ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
                ("no_mem_embed", "no_memory_embedding"),
                ("no_mem_pos_enc", "no_memory_positional_encoding"),
                ("no_obj_ptr", "no_object_pointer"),
                ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
                ("mask_downsample.", "mask_downsample."),
                ("obj_ptr_tpos_proj.", "temporal_positional_encoding_projection_layer."),
            ],
        ),
        *_mlp(f"{T}.obj_ptr_proj", f"{TH}.object_pointer_proj", mlp3_tracker),
        # Tracker memory attention
        *_qkv_attn(f"{mem}.layers.{{i}}.self_attn", f"{hf_mem}.layers.{{i}}.self_attn"),
        *_qkv_attn(f"{mem}.layers.{{i}}.cross_attn_image", f"{hf_mem}.layers.{{i}}.cross_attn_image"),
        *_renamed(
            f"{mem}.layers.{{i}}",
            f"{hf_mem}.layers.{{i}}",
            [
                ("linear1.", "linear1."),
                ("linear2.", "linear2."),
                ("norm1.", "layer_norm1."),
                ("norm2.", "layer_norm2."),
                ("norm3.", "layer_norm3."),
            ],
        ),
        _r(f"{mem}.norm.{{p}}", f"{hf_mem}.layer_norm.{{p}}"),
        # Tracker memory encoder (mask downsampler Sequential: conv, LN, GELU per stage, then a 1x1 conv)
        *_renamed(
            f"{menc}.mask_downsampler",
            f"{hf_menc}.mask_downsampler",
            [
                *((f"encoder.{3 * s}.", f"layers.{s}.conv.") for s in range(4)),
                *((f"encoder.{3 * s + 1}.", f"layers.{s}.layer_norm.") for s in range(4)),
                ("encoder.12.", "final_conv."),
            ],
        ),
        *_renamed(menc, hf_menc, [("pix_feat_proj.", "feature_projection."), ("out_proj.", "projection.")]),
        *_renamed(
            f"{menc}.fuser.layers.{{i}}",
            f"{hf_menc}.memory_fuser.layers.{{i}}",
            [
                ("dwconv.", "depthwise_conv."),
                ("norm.", "layer_norm."),
                ("pwconv1.", "pointwise_conv1."),
                ("pwconv2.", "pointwise_conv2."),
                ("gamma", "scale"),
            ],
        ),
        # SAM prompt encoder
        _r(
            f"{pe}.pe_layer.positional_encoding_gaussian_matrix",
            (f"{hf_pe}.shared_embedding.positional_embedding", f"{TH}.shared_image_embedding.positional_embedding"),
            DUPLICATE,
        ),
        _r(f"{pe}.point_embeddings.{{j}}.weight", f"{hf_pe}.point_embed.weight", STACK),
        *_same(pe, hf_pe, ["not_a_point_embed.", "no_mask_embed."]),
        *_renamed(
            pe,
            hf_pe,
            [
                ("mask_downscaling.0.", "mask_embed.conv1."),
                ("mask_downscaling.1.", "mask_embed.layer_norm1."),
                ("mask_downscaling.3.", "mask_embed.conv2."),
                ("mask_downscaling.4.", "mask_embed.layer_norm2."),
                ("mask_downscaling.6.", "mask_embed.conv3."),
            ],
        ),
        # SAM mask decoder
        *_same(md, hf_md, ["iou_token.", "mask_tokens.", "obj_score_token.", "conv_s0.", "conv_s1."]),
        *_renamed(
            md,
            hf_md,
            [
                ("output_upscaling.0.", "upscale_conv1."),
                ("output_upscaling.1.", "upscale_layer_norm."),
                ("output_upscaling.3.", "upscale_conv2."),
            ],
        ),
        *_mlp(f"{md}.output_hypernetworks_mlps.{{i}}", f"{hf_md}.output_hypernetworks_mlps.{{i}}", mlp3_tracker),
        *_mlp(f"{md}.iou_prediction_head", f"{hf_md}.iou_prediction_head", mlp3_tracker),
        *_mlp(f"{md}.pred_obj_score_head", f"{hf_md}.pred_obj_score_head", mlp3_tracker),
        *(
            rule
            for name in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")
            for rule in _qkv_attn(f"{tw}.layers.{{i}}.{name}", f"{hf_tw}.layers.{{i}}.{name}")
        ),
        *_renamed(
            f"{tw}.layers.{{i}}",
            f"{hf_tw}.layers.{{i}}",
            [
                ("mlp.lin1.", "mlp.proj_in."),
                ("mlp.lin2.", "mlp.proj_out."),
                *((f"norm{n}.", f"layer_norm{n}.") for n in range(1, 5)),
            ],
        ),
        *_qkv_attn(f"{tw}.final_attn_token_to_image", f"{hf_tw}.final_attn_token_to_image"),
        _r(f"{tw}.norm_final_attn.{{p}}", f"{hf_tw}.layer_norm_final_attn.{{p}}"),
    ]
    return tuple(rules)


HF_RULES = _build_hf_rules()
