"""Oracle side of the tracker parity test: run the official tracker step on random features and save everything.

Usage (oracle environment):
``python -P tracker_official.py OUT.pt IMAGE_SIZE PATCH MEM_ATTN_LAYERS MEM_ATTN_FFN [SCENARIO,SCENARIO...]``.
Builds the official memory attention, memory encoder and ``Sam3TrackerPredictor`` (no backbone) at the given
sizes with seeded random weights (norms, layer scales and pointer projections perturbed so every path carries
signal), then saves the state dict, the inputs and the outputs of:
* the memory attention with 1-3 memory frames and 0-5 object pointers,
* the memory encoder with masks at the image size and at the input-mask size,
* ``track_step`` sequences (clicks, masks, corrections, reverse tracking, more conditioning frames than the
  attention takes, with and without memory selection), with the bookkeeping a predictor does in between.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shims  # noqa: E402  (hides the GPU; must precede torch / sam3)
import torch  # noqa: E402

shims.install()
shims.install_cuda_identity()

from sam3.model.decoder import TransformerDecoderLayerv2, TransformerEncoderCrossAttention  # noqa: E402
from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder  # noqa: E402
from sam3.model.model_misc import TransformerWrapper  # noqa: E402
from sam3.model.position_encoding import PositionEmbeddingSine  # noqa: E402
from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor  # noqa: E402
from sam3.sam.transformer import RoPEAttention  # noqa: E402


def scenarios() -> dict:
    """Step lists: kind 'points' | 'mask' | 'track' | 'correct' (clicks + the previous logits on that frame)."""
    s = {}
    steps = [dict(frame=0, kind="points", init=True, cond=True, npts=1)]
    steps += [dict(frame=t, kind="track", init=False, cond=False) for t in range(1, 6)]
    steps += [dict(frame=3, kind="correct", init=False, cond=True, npts=2)]
    steps += [dict(frame=t, kind="track", init=False, cond=False) for t in range(4, 7)]
    s["points_memsel"] = dict(num_frames=8, memsel=True, steps=steps)
    steps = [dict(frame=0, kind="mask", init=True, cond=True)]
    steps += [dict(frame=t, kind="track", init=False, cond=False) for t in range(1, 6)]
    s["mask_nosel"] = dict(num_frames=6, memsel=False, steps=steps)
    steps = [dict(frame=6, kind="mask", init=True, cond=True)]
    steps += [dict(frame=t, kind="track", init=False, cond=False, reverse=True) for t in range(5, -1, -1)]
    s["mask_reverse_memsel"] = dict(num_frames=7, memsel=True, steps=steps)
    steps = [dict(frame=t, kind="mask", init=True, cond=True) for t in (0, 2, 4, 6, 8)]
    steps += [dict(frame=t, kind="track", init=False, cond=False) for t in (5, 9, 10, 11)]
    s["many_cond"] = dict(num_frames=20, memsel=False, steps=steps)
    s["many_cond_memsel"] = dict(num_frames=20, memsel=True, steps=[dict(x) for x in steps])
    # Short ones for a full-size check (pass their names as the optional last argument).
    steps = [dict(frame=0, kind="mask", init=True, cond=True), dict(frame=1, kind="track", init=False, cond=False),
             dict(frame=2, kind="track", init=False, cond=False)]
    s["short_mask"] = dict(num_frames=3, memsel=True, steps=steps)
    steps = [dict(frame=0, kind="points", init=True, cond=True, npts=1), dict(frame=1, kind="track", init=False, cond=False)]
    s["short_points"] = dict(num_frames=2, memsel=True, steps=steps)
    return s


DEFAULT_SCENARIOS = ("points_memsel", "mask_nosel", "mask_reverse_memsel", "many_cond", "many_cond_memsel")


def build(img: int, patch: int, layers: int, ffn: int) -> Sam3TrackerPredictor:
    g = img // patch
    mask_size = 16 * g
    torch.manual_seed(0)
    pe = PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000)
    mds = SimpleMaskDownSampler(kernel_size=3, stride=2, padding=1, interpol_size=[mask_size, mask_size])
    cx = CXBlock(dim=256, kernel_size=7, padding=3, layer_scale_init_value=1e-6, use_dwconv=True)
    mem_enc = SimpleMaskEncoder(out_dim=64, position_encoding=pe, mask_downsampler=mds, fuser=SimpleFuser(layer=cx, num_layers=2))
    sa = RoPEAttention(embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1, rope_theta=1e4, feat_sizes=[g, g])
    ca = RoPEAttention(embedding_dim=256, num_heads=1, downsample_rate=1, dropout=0.1, kv_in_dim=64, rope_theta=1e4,
                       feat_sizes=[g, g], rope_k_repeat=True)
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False, activation="relu", dim_feedforward=ffn, dropout=0.1, pos_enc_at_attn=False,
        pre_norm=True, self_attention=sa, d_model=256, pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False, cross_attention=ca)
    enc = TransformerEncoderCrossAttention(remove_cross_attention_layers=[], batch_first=True, d_model=256, frozen=False,
                                           pos_enc_at_input=True, layer=layer, num_layers=layers, use_act_checkpoint=False)
    m = Sam3TrackerPredictor(
        image_size=img, num_maskmem=7, backbone=None, backbone_stride=patch,
        transformer=TransformerWrapper(encoder=enc, decoder=None, d_model=256), maskmem_backbone=mem_enc,
        multimask_output_in_sam=True, forward_backbone_per_frame_for_eval=True, trim_past_non_cond_mem_for_eval=False,
        multimask_output_for_tracking=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        always_start_from_first_ann_frame=False, non_overlap_masks_for_mem_enc=False, non_overlap_masks_for_output=False,
        max_cond_frames_in_attn=4, offload_output_to_cpu_for_eval=False,
        sam_mask_decoder_extra_args={"dynamic_multimask_via_stability": True, "dynamic_multimask_stability_delta": 0.05,
                                     "dynamic_multimask_stability_thresh": 0.98},
        clear_non_cond_mem_around_input=True, fill_hole_area=0, use_memory_selection=True)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name or "gamma" in name or name.endswith((".1.weight", ".1.bias")):
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
        # Object scores just above 0: objects appear, and eff_iou_score straddles the selection threshold.
        m.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(0.75)
        # Loud pointers, so pointer order / distance errors show up clearly.
        m.obj_ptr_proj.layers[-1].weight.mul_(30)
        m.obj_ptr_tpos_proj.weight.mul_(30)
        m.no_obj_ptr.mul_(30)
    return m.eval()


def main() -> None:
    out_path, img, patch, layers, ffn = sys.argv[1], *map(int, sys.argv[2:6])
    g = img // patch
    mask_size = 16 * g
    m = build(img, patch, layers, ffn)
    gen = torch.Generator().manual_seed(123)
    b = 2
    names = sys.argv[6].split(",") if len(sys.argv) > 6 else DEFAULT_SCENARIOS
    out = {"state_dict": {k: v.clone() for k, v in m.state_dict().items()},
           "scenarios": {k: v for k, v in scenarios().items() if k in names}}
    with torch.inference_mode():
        cases = []
        for nf, nptr in [(1, 0), (1, 2), (2, 3), (3, 5)]:
            n = nf * g * g + 4 * nptr
            src, src_pos = torch.randn(g * g, b, 256, generator=gen), torch.randn(g * g, b, 256, generator=gen)
            mem, mem_pos = torch.randn(n, b, 64, generator=gen), torch.randn(n, b, 64, generator=gen)
            r = m.transformer.encoder(src=[src], src_key_padding_mask=[None], src_pos=[src_pos], prompt=mem,
                                      prompt_pos=mem_pos, feat_sizes=[(g, g)], num_obj_ptr_tokens=4 * nptr)["memory"]
            cases.append(dict(src=src, src_pos=src_pos, mem=mem, mem_pos=mem_pos, nptr=4 * nptr, out=r))
        out["memory_attention"] = cases
        cases = []
        for size in (img, mask_size):
            pix, mask = torch.randn(b, 256, g, g, generator=gen), 5 * torch.randn(b, 1, size, size, generator=gen)
            r = m.maskmem_backbone(pix, mask, skip_mask_sigmoid=True)
            cases.append(dict(pix=pix, mask=mask, feat=r["vision_features"], pos=r["vision_pos_enc"][0]))
        out["memory_encoder"] = cases

        results = {}
        for name, sc in out["scenarios"].items():
            m.use_memory_selection = sc["memsel"]
            frames = {}
            for t in range(sc["num_frames"]):
                fpn = [torch.randn(1, 256, s, s, generator=gen) for s in (4 * g, 2 * g, g)]
                frames[t] = (fpn, 0.5 * torch.randn(1, 256, g, g, generator=gen))
            od = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
            records, last_low = [], {}
            for st in sc["steps"]:
                t = st["frame"]
                fpn, pos = frames[t]
                fpn = [x.expand(b, -1, -1, -1) for x in fpn]
                levels = [m.sam_mask_decoder.conv_s0(fpn[0]), m.sam_mask_decoder.conv_s1(fpn[1]), fpn[2]]
                vf = [x.flatten(2).permute(2, 0, 1) for x in levels]
                vp = [torch.zeros_like(vf[0]), torch.zeros_like(vf[1]), pos.expand(b, -1, -1, -1).flatten(2).permute(2, 0, 1)]
                sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]
                pts = mask_in = prev = None
                rec = {}
                if st["kind"] in ("points", "correct"):
                    coords = torch.rand(b, st["npts"], 2, generator=gen) * img
                    labels = torch.ones(b, st["npts"], dtype=torch.int32)
                    labels[:, 1:] = 0
                    pts = {"point_coords": coords, "point_labels": labels}
                    rec.update(coords=coords, labels=labels)
                    if st["kind"] == "correct":
                        prev = torch.clamp(last_low[t], -32, 32)
                elif st["kind"] == "mask":
                    mask_in = torch.zeros(b, 1, mask_size, mask_size)
                    y0, x0 = (int(v) for v in torch.randint(0, mask_size // 2, (2,), generator=gen))
                    mask_in[0, :, y0:y0 + mask_size // 4, x0:x0 + mask_size // 3] = 1
                    if t % 4 != 2:  # on some frames the second object is absent
                        mask_in[1, :, mask_size // 10:mask_size // 2, mask_size // 8:mask_size // 3] = 1
                    rec["mask"] = mask_in
                o = m.track_step(frame_idx=t, is_init_cond_frame=st["init"], current_vision_feats=vf,
                                 current_vision_pos_embeds=vp, feat_sizes=sizes, image=None, point_inputs=pts,
                                 mask_inputs=mask_in, output_dict=od, num_frames=sc["num_frames"],
                                 track_in_reverse=st.get("reverse", False), run_mem_encoder=True, prev_sam_mask_logits=prev)
                last_low[t] = o["pred_masks"]
                if st["cond"]:
                    od["non_cond_frame_outputs"].pop(t, None)
                    od["cond_frame_outputs"][t] = o
                else:
                    od["non_cond_frame_outputs"][t] = o
                keep = ("pred_masks", "pred_masks_high_res", "obj_ptr", "object_score_logits", "maskmem_features",
                        "maskmem_pos_enc", "iou_score", "eff_iou_score")
                rec["out"] = {k: (v[0] if isinstance(v, list) else v) for k, v in o.items() if k in keep}
                records.append(rec)
            results[name] = dict(frames=frames, steps=records)
        out["track"] = results
    torch.save(out, out_path)
    print("ok", len(out["state_dict"]))


if __name__ == "__main__":
    main()
