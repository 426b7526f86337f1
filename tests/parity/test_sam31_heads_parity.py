"""SAM 3.1's multiplexed propagation heads against the upstream 3.1 modules on identical random weights and
inputs (tiny preset, CPU fp32): the multiplex mask decoder (with the valid / invalid slot embeddings), the
multiplex memory encoder, the decoupled memory attention (two memory frames + object pointers) and the
bucket bookkeeping (mux, demux, removal). Inputs come from the oracle (``run_upstream31_heads.py``)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.parity.harness31 import ORACLE31_HINT, oracle31_available, run_oracle31
from tests.parity.rows import Row, compare, table

pytestmark = pytest.mark.skipif(not oracle31_available(), reason=ORACLE31_HINT)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    from sam3.config_multiplex import get_multiplex_config

    work = tmp_path_factory.mktemp("sam31_heads")
    cfg = work / "cfg.json"
    cfg.write_text(json.dumps(get_multiplex_config("tiny").to_dict()))
    ckpt, out = work / "sam3.1_multiplex.pt", work / "heads.pt"
    run_oracle31("run_upstream31_heads.py", "--config", str(cfg), "--checkpoint", str(ckpt), "--out", str(out))
    return ckpt, torch.load(out, weights_only=False)


@torch.inference_mode()
def test_propagation_heads_match_upstream(upstream):
    from sam3.build_multiplex import build_multiplex_model
    from sam3.modeling.multiplex.multiplex_state import MultiplexState

    ckpt, up = upstream
    t = build_multiplex_model(checkpoint_path=ckpt, preset="tiny", device="cpu").tracker.model
    m = t.multiplex_count
    rows: list[Row] = []

    n = up["mux_in"].shape[0]
    state = MultiplexState(m)
    state.add_objects(n)
    rows.append(compare("state/mux", state.mux(up["mux_in"]), up["mux"]))
    rows.append(compare("state/demux", state.demux(up["mux"] + 1.0), up["demux"]))
    rows.append(compare("state/valid", state.valid_mask(), up["valid"]))
    state.remove_objects([1])
    rows.append(compare("state/after_remove", torch.tensor(state.buckets), up["after_remove_assignments"]))

    i = up["dec_in"]
    dec = t.sam_mask_decoder
    pe = t.get_dense_pe()
    r = dec(i["image"], pe, [dec.conv_s0(i["s0"]), dec.conv_s1(i["s1"])], t.slot_embeddings(i["valid"]))
    rows.append(compare("decoder/dense_pe", pe, up["dec"]["pe"]))
    rows.append(compare("decoder/masks", r.masks, up["dec"]["masks"]))
    rows.append(compare("decoder/iou", r.iou, up["dec"]["iou"]))
    rows.append(compare("decoder/sam_tokens", r.sam_tokens, up["dec"]["tokens"]))
    rows.append(compare("decoder/object_score_logits", r.object_score_logits, up["dec"]["obj"]))

    features, pos = t.maskmem_backbone(up["mem_in"]["pix"], up["mem_in"]["masks"])
    rows.append(compare("memory_encoder/features", features, up["mem"]["features"]))
    rows.append(compare("memory_encoder/pos", pos, up["mem"]["pos"]))

    a = {k: (v.transpose(0, 1) if torch.is_tensor(v) else v) for k, v in up["attn_in"].items()}  # batch-first
    g = t.grid_size
    out = t.memory_attention(
        a["image"], a["src"], a["src_pos"], a["memory_image"], a["memory_image_pos"], a["memory"], a["memory_pos"],
        (g, g), num_obj_ptr_tokens=a["num_obj_ptr_tokens"],
    )  # fmt: skip
    rows.append(compare("memory_attention/out", out.transpose(0, 1), up["attn"]))
    print("\n" + table(rows))
    failed = [r.name for r in rows if not r.passed]
    assert not failed, f"{len(failed)} of {len(rows)} rows differ: {failed}"
