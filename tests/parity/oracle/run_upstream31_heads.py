"""Run the UPSTREAM SAM 3.1 propagation heads on deterministic random inputs (module-level parity).

Runs ONLY inside the 3.1 oracle subprocess::

    PYTHONPATH=.oracle31:.oracle .venv/bin/python -P tests/parity/oracle/run_upstream31_heads.py \
        --config cfg.json --checkpoint sam3.1.pt --out heads.pt [--buckets 2]

Builds the upstream tracker at the config's sizes with the random weights of ``build_upstream31_tiny.build_random``
(saved as ``--checkpoint``), draws the inputs with a fixed seed and saves inputs and outputs of:
the multiplex mask decoder (``get_propagation_dense_pe`` + ``sam_mask_decoder`` with the valid / invalid slot
embeddings, as ``_forward_sam_heads`` calls it), the multiplex memory encoder (``maskmem_backbone`` on the
bucket's 2M mask channels, sigmoid skipped), the decoupled memory attention (``transformer.encoder`` with two
memory frames and object-pointer tokens) and ``MultiplexState`` mux / demux with a removal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_upstream31_tiny as b31  # noqa: E402  (installs the CPU shims)

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--buckets", type=int, default=2)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    cfg = json.loads(Path(args.config).read_text())
    model = b31.build_random(cfg, 0)
    torch.save(model.state_dict(), args.checkpoint)
    t = model.tracker.model
    from sam3.model.multiplex_utils import MultiplexState

    d, m, b = cfg["d_model"], cfg["tracker"]["multiplex_count"], args.buckets
    g = cfg["vision"]["image_size"] // cfg["vision"]["patch_size"]
    gen = torch.Generator().manual_seed(1)
    rnd = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    out: dict = {}

    # objects: 2 buckets, the second one partly empty; then one object removed
    n = m + max(1, m // 2)
    state = MultiplexState([list(range(m)), list(range(m, n)) + [-1] * (2 * m - n)], torch.device("cpu"),
                           torch.float32, allowed_bucket_capacity=m)
    x = rnd(n, 3)
    out["mux_in"], out["mux"] = x, state.mux(x)
    out["demux"] = state.demux(out["mux"] + 1.0)
    out["valid"] = state.get_valid_object_mask()
    state.remove_objects([1])
    out["after_remove_assignments"] = torch.tensor(state.assignments)

    # mask decoder
    image, s0, s1 = rnd(b, d, g, g), rnd(b, d, 4 * g, 4 * g), rnd(b, d, 2 * g, 2 * g)
    valid = torch.zeros(b, m, dtype=torch.bool)
    valid[0] = True
    valid[1, : m // 2] = True
    merged = valid.unsqueeze(-1).float() * t.output_valid_embed.unsqueeze(0) + (
        1 - valid.unsqueeze(-1).float()) * t.output_invalid_embed.unsqueeze(0)
    dec = t.sam_mask_decoder
    r = dec(image_embeddings=image, image_pe=t.get_propagation_dense_pe(), multimask_output=True,
            high_res_features=[dec.conv_s0(s0), dec.conv_s1(s1)], extra_per_object_embeddings=merged)
    out["dec_in"] = {"image": image, "s0": s0, "s1": s1, "valid": valid}
    out["dec"] = {"pe": t.get_propagation_dense_pe(), "masks": r["masks"], "iou": r["iou_pred"],
                  "tokens": r["sam_tokens_out"], "obj": r["object_score_logits"]}

    # memory encoder
    size = 16 * g
    pix, masks = rnd(b, d, g, g), torch.rand(b, 2 * m, size, size, generator=gen) * 2 - 1
    enc = t.maskmem_backbone(pix, masks, skip_mask_sigmoid=True)
    out["mem_in"] = {"pix": pix, "masks": masks}
    out["mem"] = {"features": enc["vision_features"], "pos": enc["vision_pos_enc"][0]}

    # memory attention: 2 memory frames + 4 pointer tokens, seq-first as the tracker passes them
    hw, ptr = g * g, 4
    ins = {"image": rnd(hw, 1, d), "src": rnd(hw, b, d), "memory_image": rnd(2 * hw, 1, d),
           "memory": rnd(2 * hw + ptr, b, d), "image_pos": rnd(hw, 1, d), "src_pos": rnd(hw, b, d),
           "memory_image_pos": rnd(2 * hw, 1, d), "memory_pos": rnd(2 * hw + ptr, b, d)}
    res = t.transformer.encoder(**{k: v.clone() for k, v in ins.items()}, num_obj_ptr_tokens=ptr)
    out["attn_in"] = {**ins, "num_obj_ptr_tokens": ptr}
    out["attn"] = res["memory"]
    torch.save(out, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
