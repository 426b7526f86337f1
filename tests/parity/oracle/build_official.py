"""Build the OFFICIAL ``Sam3Image`` (with instance interactivity, hence the tracker) at the sizes of one of
OUR config presets, give it deterministic random weights and save them as a ``sam3.pt``.

Runs ONLY inside the oracle subprocess, from the repository root::

    PYTHONPATH=.oracle .venv/bin/python -P tests/parity/oracle/build_official.py \
        --config cfg.json --out sam3.pt [--seed 0] [--keys ../shared/reference/keys_video.tsv]
    ... build_official.py --config cfg.json --describe layout.json   # meta-device build: key/shape list

``cfg.json`` is ``sam3.config.get_config(preset).to_dict()`` written by OUR process (this process cannot import
our package: ``sam3`` here is the official one).

The builder mirrors ``sam3.model_builder.build_sam3_image_model(enable_inst_interactivity=True)`` call for
call, with every size read from the config; at the ``sam3`` preset it constructs exactly what the official
builder constructs (``--check-official`` compares module structure and hyper-parameters on the meta device).

Random weights: the official initialisers (they run in the constructors), then the fixes of spec section 7.21
(the text encoder's ``positional_embedding`` / ``text_projection`` are ``torch.empty``), then a perturbation of
every constant tensor (zero biases, unit norms, the zero-initialised last box layer, LayerScale gammas) so that
no parameter is trivially zero or identical across channels: a bug that drops a bias must show up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shims  # noqa: E402  (hides the GPU before torch loads)

import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BPE = REPO / "sam3" / "assets" / "bpe_simple_vocab_16e6.txt.gz"

DETECTOR_PREFIX = "detector."
TRACKER_PREFIX = "tracker."
INST_PREFIX = "inst_interactive_predictor.model."

# Config fields this builder maps onto official constructor arguments, per section. A field outside these
# sets is reported (the parity comparison would then be checking a size the oracle ignores).
_MAPPED = {
    "": {"name", "d_model", "image_mean", "image_std", "vision", "text", "geometry", "encoder", "decoder",
         "scoring", "tracker"},
    "vision": {"image_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "window_size",
               "global_blocks", "pretrain_image_size", "rope_theta", "layer_norm_eps", "scale_factors", "scalp"},
    "text": {"width", "heads", "layers", "context_length", "vocab_size", "mlp_ratio", "output_dim"},
    "geometry": {"num_layers", "num_heads", "dim_feedforward", "roi_size"},
    "encoder": {"num_layers", "num_heads", "dim_feedforward"},
    "decoder": {"num_layers", "num_queries", "num_heads", "dim_feedforward"},
    "scoring": {"prompt_mlp_hidden", "clamp_max", "pixel_decoder_stages"},
    "tracker": {"mem_dim", "num_maskmem", "memory_attention_layers", "memory_attention_ffn",
                "mask_decoder_mlp_dim", "mask_decoder_depth", "mask_decoder_heads", "num_multimask_outputs",
                "mask_in_chans", "max_obj_ptrs_in_encoder", "max_cond_frames_in_attn", "rope_theta",
                "sigmoid_scale_for_mem_enc", "sigmoid_bias_for_mem_enc", "dynamic_multimask_stability_delta",
                "dynamic_multimask_stability_thresh", "multimask_max_points", "memory_selection_threshold",
                # the image model's tracker is always built without memory selection (no temporal
                # disambiguation); this video-time switch has no image-model counterpart
                "use_memory_selection"},
}


def unmapped_fields(cfg: dict) -> list[str]:
    """Config fields the oracle does not know how to mirror (new fields added after this file was written)."""
    out = [k for k in cfg if k not in _MAPPED[""]]
    for section, known in _MAPPED.items():
        if section:
            out += [f"{section}.{k}" for k in cfg.get(section, {}) if k not in known]
    return out


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise NotImplementedError(f"the official classes hard-code {what}; this config cannot be mirrored")


def build_official_image_model(cfg: dict, bpe_path: str | Path = DEFAULT_BPE, inst: bool = True) -> nn.Module:
    """The official ``Sam3Image`` (eval mode, CPU) with the sizes of ``cfg`` (our config as a dict)."""
    shims.install()
    from sam3.model.decoder import (
        TransformerDecoder,
        TransformerDecoderLayer,
        TransformerDecoderLayerv2,
        TransformerEncoderCrossAttention,
    )
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.model_misc import MLP, DotProductScoring, TransformerWrapper
    from sam3.model.model_misc import MultiheadAttentionWrapper as MHA
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT
    from sam3.model.vl_combiner import SAM3VLBackbone

    d = cfg["d_model"]
    v, t, geo, enc, dec, sc, tr = (cfg[k] for k in ("vision", "text", "geometry", "encoder", "decoder",
                                                    "scoring", "tracker"))
    size, patch = v["image_size"], v["patch_size"]
    grid = size // patch
    _require(v["rope_theta"] == 10000.0, "the ViT RoPE theta (10000)")
    _require(t["mlp_ratio"] == 4.0, "the text MLP ratio (4)")
    _require(tuple(cfg["image_mean"]) == (0.5,) * 3 and tuple(cfg["image_std"]) == (0.5,) * 3,
             "the image normalisation (0.5, 0.5)")

    def sine(num_pos_feats, precompute=None):
        return PositionEmbeddingSine(num_pos_feats=num_pos_feats, normalize=True, scale=None, temperature=10000,
                                     precompute_resolution=precompute)

    # --- vision: _create_vision_backbone ------------------------------------------------------------------
    position_encoding = sine(d, precompute=size)
    eps = v["layer_norm_eps"]
    vit = ViT(
        img_size=size, pretrain_img_size=v["pretrain_image_size"], patch_size=patch, embed_dim=v["embed_dim"],
        depth=v["depth"], num_heads=v["num_heads"], mlp_ratio=v["mlp_ratio"],
        norm_layer="LayerNorm" if eps == 1e-5 else partial(nn.LayerNorm, eps=eps),
        drop_path_rate=0.1, qkv_bias=True, use_abs_pos=True, tile_abs_pos=True,
        global_att_blocks=tuple(v["global_blocks"]), rel_pos_blocks=(), use_rope=True, use_interp_rope=True,
        window_size=v["window_size"], pretrain_use_cls_token=True, retain_cls_token=False, ln_pre=True,
        ln_post=False, return_interm_layers=False, bias_patch_embed=False, compile_mode=None,
    )
    neck = Sam3DualViTDetNeck(position_encoding=position_encoding, d_model=d,
                              scale_factors=list(v["scale_factors"]), trunk=vit, add_sam2_neck=inst)

    # --- text: _create_text_encoder -------------------------------------------------------------------------
    text_encoder = VETextEncoder(
        tokenizer=SimpleTokenizer(bpe_path=str(bpe_path)), d_model=d, width=t["width"], heads=t["heads"],
        layers=t["layers"], context_length=t["context_length"], vocab_size=t["vocab_size"],
    )
    if t["output_dim"] != text_encoder.encoder.text_projection.shape[1]:
        # VETextEncoder never passes output_dim (the projection is unused); resize it to the config's.
        text_encoder.encoder.output_dim = t["output_dim"]
        text_encoder.encoder.text_projection = nn.Parameter(torch.empty(t["width"], t["output_dim"]))
    backbone = SAM3VLBackbone(visual=neck, text=text_encoder, scalp=v["scalp"])

    # --- transformer: _create_transformer_encoder / _create_transformer_decoder ----------------------------
    encoder_layer = TransformerEncoderLayer(
        activation="relu", d_model=d, dim_feedforward=enc["dim_feedforward"], dropout=0.1, pos_enc_at_attn=True,
        pos_enc_at_cross_attn_keys=False, pos_enc_at_cross_attn_queries=False, pre_norm=True,
        self_attention=MHA(num_heads=enc["num_heads"], dropout=0.1, embed_dim=d, batch_first=True),
        cross_attention=MHA(num_heads=enc["num_heads"], dropout=0.1, embed_dim=d, batch_first=True),
    )
    encoder = TransformerEncoderFusion(
        layer=encoder_layer, num_layers=enc["num_layers"], d_model=d, num_feature_levels=1, frozen=False,
        use_act_checkpoint=True, add_pooled_text_to_img_feat=False, pool_text_with_mask=True,
    )
    decoder_layer = TransformerDecoderLayer(
        activation="relu", d_model=d, dim_feedforward=dec["dim_feedforward"], dropout=0.1,
        cross_attention=MHA(num_heads=dec["num_heads"], dropout=0.1, embed_dim=d),
        n_heads=dec["num_heads"], use_text_cross_attention=True,
    )
    decoder = TransformerDecoder(
        layer=decoder_layer, num_layers=dec["num_layers"], num_queries=dec["num_queries"],
        return_intermediate=True, box_refine=True, num_o2m_queries=0, dac=True, boxRPB="log", d_model=d,
        frozen=False, interaction_layer=None, dac_use_selfatt_ln=True, resolution=size, stride=patch,
        use_act_checkpoint=True, presence_token=True,
    )
    transformer = TransformerWrapper(encoder=encoder, decoder=decoder, d_model=d)

    # --- heads: _create_dot_product_scoring / _create_segmentation_head / _create_geometry_encoder ----------
    prompt_mlp = MLP(input_dim=d, hidden_dim=sc["prompt_mlp_hidden"], output_dim=d, num_layers=2, dropout=0.1,
                     residual=True, out_norm=nn.LayerNorm(d))
    dot_prod_scoring = DotProductScoring(d_model=d, d_proj=d, prompt_mlp=prompt_mlp,
                                         clamp_max_val=sc["clamp_max"])
    pixel_decoder = PixelDecoder(num_upsampling_stages=sc["pixel_decoder_stages"], interpolation_mode="nearest",
                                 hidden_dim=d, compile_mode=None)
    segmentation_head = UniversalSegmentationHead(
        hidden_dim=d, upsampling_stages=sc["pixel_decoder_stages"], aux_masks=False, presence_head=False,
        dot_product_scorer=None, act_ckpt=True, cross_attend_prompt=MHA(num_heads=8, dropout=0, embed_dim=d),
        pixel_decoder=pixel_decoder,
    )
    geo_pos_enc = sine(d)
    CXBlock(dim=d, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06, use_dwconv=True)  # built, unused
    geo_layer = TransformerEncoderLayer(
        activation="relu", d_model=d, dim_feedforward=geo["dim_feedforward"], dropout=0.1, pos_enc_at_attn=False,
        pre_norm=True, pos_enc_at_cross_attn_queries=False, pos_enc_at_cross_attn_keys=True,
        self_attention=MHA(num_heads=geo["num_heads"], dropout=0.1, embed_dim=d, batch_first=False),
        cross_attention=MHA(num_heads=geo["num_heads"], dropout=0.1, embed_dim=d, batch_first=False),
    )
    geometry_encoder = SequenceGeometryEncoder(
        pos_enc=geo_pos_enc, encode_boxes_as_points=False, points_direct_project=True, points_pool=True,
        points_pos_enc=True, boxes_direct_project=True, boxes_pool=True, boxes_pos_enc=True, d_model=d,
        num_layers=geo["num_layers"], layer=geo_layer, use_act_ckpt=True, add_cls=True,
        add_post_encode_proj=True, roi_size=geo["roi_size"],
    )

    # --- tracker: build_tracker(apply_temporal_disambiguation=False) ---------------------------------------
    inst_predictor = None
    if inst:
        tracker = _build_tracker(cfg, CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder, sine,
                                 TransformerDecoderLayerv2, TransformerEncoderCrossAttention, TransformerWrapper)
        inst_predictor = SAM3InteractiveImagePredictor(tracker)
        # hard-coded (288,288),(144,144),(72,72) in the official class: the sizes of the three FPN levels
        inst_predictor._bb_feat_sizes = [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)]

    model = Sam3Image(
        backbone=backbone, transformer=transformer, input_geometry_encoder=geometry_encoder,
        segmentation_head=segmentation_head, num_feature_levels=1, o2m_mask_predict=True,
        dot_prod_scoring=dot_prod_scoring, use_instance_query=False, multimask_output=True,
        inst_interactive_predictor=inst_predictor, matcher=None,
    )
    return model.eval()


def _build_tracker(cfg, CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder, sine,
                   TransformerDecoderLayerv2, TransformerEncoderCrossAttention, TransformerWrapper):
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
    from sam3.sam.mask_decoder import MaskDecoder
    from sam3.sam.prompt_encoder import PromptEncoder
    from sam3.sam.transformer import RoPEAttention, TwoWayTransformer

    d, tr, v = cfg["d_model"], cfg["tracker"], cfg["vision"]
    size, patch = v["image_size"], v["patch_size"]
    grid = size // patch
    mem = tr["mem_dim"]
    _require(d == 256, "the tracker's IoU-head width (256)")

    # _create_tracker_maskmem_backbone: the mask is resized to 4 x the low-res mask size (1152 = 4 * 288)
    maskmem_backbone = SimpleMaskEncoder(
        out_dim=mem, in_dim=d, position_encoding=sine(mem, precompute=size),
        mask_downsampler=SimpleMaskDownSampler(embed_dim=d, kernel_size=3, stride=2, padding=1,
                                               interpol_size=[16 * grid, 16 * grid]),
        fuser=SimpleFuser(layer=CXBlock(dim=d, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06,
                                        use_dwconv=True), num_layers=2),
    )
    # _create_tracker_transformer
    self_attention = RoPEAttention(embedding_dim=d, num_heads=1, downsample_rate=1, dropout=0.1,
                                   rope_theta=tr["rope_theta"], feat_sizes=[grid, grid], use_fa3=False,
                                   use_rope_real=False)
    cross_attention = RoPEAttention(embedding_dim=d, num_heads=1, downsample_rate=1, dropout=0.1, kv_in_dim=mem,
                                    rope_theta=tr["rope_theta"], feat_sizes=[grid, grid], rope_k_repeat=True,
                                    use_fa3=False, use_rope_real=False)
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False, activation="relu", dim_feedforward=tr["memory_attention_ffn"], dropout=0.1,
        pos_enc_at_attn=False, pre_norm=True, self_attention=self_attention, d_model=d,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False, cross_attention=cross_attention,
    )
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[], batch_first=True, d_model=d, frozen=False, pos_enc_at_input=True,
        layer=layer, num_layers=tr["memory_attention_layers"], use_act_checkpoint=False,
    )
    transformer = TransformerWrapper(encoder=encoder, decoder=None, d_model=d)
    extra = {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": tr["dynamic_multimask_stability_delta"],
        "dynamic_multimask_stability_thresh": tr["dynamic_multimask_stability_thresh"],
    }
    model = Sam3TrackerPredictor(
        image_size=size, num_maskmem=tr["num_maskmem"], backbone=None, backbone_stride=patch,
        transformer=transformer, maskmem_backbone=maskmem_backbone, multimask_output_in_sam=True,
        forward_backbone_per_frame_for_eval=True, trim_past_non_cond_mem_for_eval=False,
        multimask_output_for_tracking=True, multimask_min_pt_num=0, multimask_max_pt_num=tr["multimask_max_points"],
        always_start_from_first_ann_frame=False, non_overlap_masks_for_mem_enc=False,
        non_overlap_masks_for_output=False, max_cond_frames_in_attn=tr["max_cond_frames_in_attn"],
        offload_output_to_cpu_for_eval=False, sam_mask_decoder_extra_args=extra,
        clear_non_cond_mem_around_input=True, fill_hole_area=0, use_memory_selection=False,
        max_obj_ptrs_in_encoder=tr["max_obj_ptrs_in_encoder"], mf_threshold=tr["memory_selection_threshold"],
    )
    model.sigmoid_scale_for_mem_enc = tr["sigmoid_scale_for_mem_enc"]
    model.sigmoid_bias_for_mem_enc = tr["sigmoid_bias_for_mem_enc"]
    # _build_sam_heads hard-codes these SAM sizes; rebuild the two heads only when the config differs.
    hard = {"mask_decoder_mlp_dim": 2048, "mask_decoder_depth": 2, "mask_decoder_heads": 8,
            "num_multimask_outputs": 3, "mask_in_chans": 16}
    if any(tr[k] != val for k, val in hard.items()):
        model.sam_prompt_encoder = PromptEncoder(embed_dim=d, image_embedding_size=(grid, grid),
                                                 input_image_size=(size, size), mask_in_chans=tr["mask_in_chans"])
        model.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=tr["num_multimask_outputs"],
            transformer=TwoWayTransformer(depth=tr["mask_decoder_depth"], embedding_dim=d,
                                          mlp_dim=tr["mask_decoder_mlp_dim"], num_heads=tr["mask_decoder_heads"]),
            transformer_dim=d, iou_head_depth=3, iou_head_hidden_dim=256, use_high_res_features=True,
            iou_prediction_use_sigmoid=True, pred_obj_scores=True, pred_obj_scores_mlp=True,
            use_multimask_token_for_obj_ptr=True, **extra,
        )
    return model


# --- random weights ---------------------------------------------------------------------------------------
@torch.no_grad()
def randomize(model: nn.Module, seed: int) -> None:
    """Spec 7.21 fixes + a deterministic perturbation of every constant tensor (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed + 1)
    text = model.backbone.language_backbone.encoder
    text.positional_embedding.normal_(0.0, 0.01, generator=gen)
    text.text_projection.normal_(0.0, text.width ** -0.5, generator=gen)
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if not p.is_floating_point() or p.numel() < 2 or name.endswith("freqs_cis"):
            continue
        flat = p.flatten()
        if torch.all(flat == flat[0]):
            c = float(flat[0])
            # unit norms / gammas get +-10% of their value; zeros (biases, the last box layer) a small spread
            scale = 0.1 * abs(c) if c != 0 else 0.02
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise RuntimeError(f"non-finite random weight {name}")


def build_random(cfg: dict, seed: int = 0, bpe_path: str | Path = DEFAULT_BPE) -> nn.Module:
    """Deterministic random official model: same seed, same weights."""
    torch.manual_seed(seed)
    model = build_official_image_model(cfg, bpe_path)
    randomize(model, seed)
    return model


# --- checkpoint layout --------------------------------------------------------------------------------------
def to_checkpoint_names(state: dict) -> dict:
    """Image-model names -> ``sam3.pt`` names (inverse of the official ``_load_checkpoint`` renaming)."""
    out = {}
    for k, val in state.items():
        out[TRACKER_PREFIX + k[len(INST_PREFIX):] if k.startswith(INST_PREFIX) else DETECTOR_PREFIX + k] = val
    return out


def from_checkpoint_names(state: dict) -> dict:
    """``sam3.pt`` names -> image-model names, exactly as the official image loader renames them."""
    out = {}
    for k, val in state.items():
        if k.startswith(DETECTOR_PREFIX):
            out[k[len(DETECTOR_PREFIX):]] = val
        elif k.startswith(TRACKER_PREFIX):
            out[INST_PREFIX + k[len(TRACKER_PREFIX):]] = val
        else:
            raise KeyError(f"unexpected checkpoint key {k}")
    return out


def layout(state: dict) -> list[tuple[str, list[int], str]]:
    return [(k, list(val.shape), str(val.dtype).replace("torch.", "")) for k, val in state.items()]


def read_keys_tsv(path: str | Path) -> list[tuple[str, list[int], str]]:
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype = line.split("\t")[:3]
        if name == "name":  # header
            continue
        dims = [int(x) for x in shape.strip("()[] ").replace("x", ",").split(",") if x.strip()]
        rows.append((name, dims, dtype.replace("torch.", "")))
    return rows


def compare_layouts(ours: list, ref: list) -> list[str]:
    """Human-readable differences between two (name, shape, dtype) lists; empty when identical as sets."""
    a = {n: (s, dt) for n, s, dt in ours}
    b = {n: (s, dt) for n, s, dt in ref}
    errs = [f"missing {n}" for n in b if n not in a] + [f"unexpected {n}" for n in a if n not in b]
    errs += [f"{n}: {a[n]} vs {b[n]}" for n in a if n in b and a[n] != b[n]]
    return errs


@contextlib.contextmanager
def meta_device():
    """Construct on the meta device. The ViT reads its drop-path schedule with ``.item()``, which meta tensors
    cannot do, so ``torch.linspace`` stays on the CPU inside this context."""
    linspace = torch.linspace

    def linspace_cpu(*args, **kwargs):
        kwargs.setdefault("device", "cpu")
        return linspace(*args, **kwargs)

    torch.linspace = linspace_cpu
    try:
        with torch.device("meta"):
            yield
    finally:
        torch.linspace = linspace


def build_meta(cfg: dict, bpe_path: str | Path = DEFAULT_BPE) -> nn.Module:
    """Structure-only build (no memory, no init cost)."""
    with meta_device():
        return build_official_image_model(cfg, bpe_path)


def describe(model: nn.Module) -> dict:
    """Module classes and plain hyper-parameter attributes, to compare two builds structurally."""
    simple = (int, float, bool, str, type(None))
    out = {}
    for name, m in model.named_modules():
        attrs = {}
        for k, val in vars(m).items():
            if k.startswith("_") or k == "training":
                continue
            if isinstance(val, simple) or (isinstance(val, (list, tuple)) and all(isinstance(x, simple) for x in val)):
                attrs[k] = list(val) if isinstance(val, tuple) else val
        out[name] = {"class": type(m).__name__, "attrs": attrs,
                     "params": {k: list(p.shape) for k, p in m.named_parameters(recurse=False)}}
    return out


def check_against_official_builder(cfg: dict, bpe_path: str | Path = DEFAULT_BPE) -> list[str]:
    """At the sam3 preset: our mirror vs ``build_sam3_image_model(enable_inst_interactivity=True)`` (meta)."""
    shims.install()
    from sam3.model_builder import build_sam3_image_model

    with meta_device():
        official = build_sam3_image_model(bpe_path=str(bpe_path), device="cpu", checkpoint_path=None,
                                          load_from_HF=False, enable_inst_interactivity=True)
    mirror = build_meta(cfg, bpe_path)
    a, b = describe(mirror), describe(official)
    errs = [f"module only in mirror: {n}" for n in a if n not in b]
    errs += [f"module only in official: {n}" for n in b if n not in a]
    errs += [f"{n}: {a[n]} != {b[n]}" for n in a if n in b and a[n] != b[n]]
    return errs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="JSON dump of our Sam3Config")
    ap.add_argument("--out", help="where to write the random sam3.pt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bpe", default=str(DEFAULT_BPE))
    ap.add_argument("--keys", help="keys_video.tsv to check the saved layout against")
    ap.add_argument("--describe", help="write the meta-device layout [(name, shape, dtype)] as JSON here")
    ap.add_argument("--check-official", action="store_true",
                    help="compare this mirror with the official builder (meaningful at the sam3 preset)")
    args = ap.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    extra = unmapped_fields(cfg)
    if extra:
        print(f"WARNING: config fields the oracle does not mirror: {extra}", file=sys.stderr)
    status = 0
    if args.describe:
        state = to_checkpoint_names(build_meta(cfg, args.bpe).state_dict())
        Path(args.describe).write_text(json.dumps({"layout": layout(state), "unmapped": extra}))
        print(f"layout: {len(state)} tensors -> {args.describe}")
    if args.check_official:
        errs = check_against_official_builder(cfg, args.bpe)
        print("mirror == official builder" if not errs else "MISMATCH with the official builder:\n  " +
              "\n  ".join(errs[:50]))
        status |= bool(errs)
    if args.out:
        state = to_checkpoint_names(build_random(cfg, args.seed, args.bpe).state_dict())
        torch.save(state, args.out)
        n_params = sum(val.numel() for k, val in state.items() if not k.endswith(("freqs_cis", "gaussian_matrix")))
        print(f"saved {len(state)} tensors ({n_params:,} parameters) -> {args.out}")
        if args.keys:
            errs = compare_layouts(layout(state), read_keys_tsv(args.keys))
            print("layout == " + args.keys if not errs else "LAYOUT MISMATCH:\n  " + "\n  ".join(errs[:50]))
            status |= bool(errs)
    sys.exit(status)


if __name__ == "__main__":
    main()
