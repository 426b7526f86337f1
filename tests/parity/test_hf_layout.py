"""The transformers layout (``model.safetensors`` of facebook/sam3) against the real transformers model.

Our sam3.pt-layout state dict, renamed by ``sam3.checkpoint.ours_to_hf``, must give exactly the names and
shapes of transformers' ``Sam3VideoModel`` (built on the meta device with its default config, which is
the released model's), and ``hf_to_ours`` must invert it. transformers is a test-only dependency.
"""

from __future__ import annotations

import pytest
import torch

from sam3 import checkpoint as ck
from sam3 import hf_layout as hl
from sam3.build import build_image_model
from sam3.config import get_config
from sam3.build import compose_sam3_model

# Ours only: recomputed RoPE tables and the detector's point-prompt projections (no HF counterpart).
ABSENT_FROM_HF = (".attn.freqs_cis", "detector.geometry_encoder.points_")


def _ours_on_meta(preset: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return compose_sam3_model(get_config(preset), tokenizer=object()).state_dict()


@pytest.fixture(scope="module")
def hf_state() -> dict[str, torch.Tensor]:
    transformers = pytest.importorskip("transformers", reason="transformers (test-only dependency) not installed")
    if not hasattr(transformers, "Sam3VideoModel"):
        pytest.skip(f"transformers {transformers.__version__} has no Sam3VideoModel")
    with torch.device("meta"):
        model = transformers.Sam3VideoModel(transformers.Sam3VideoConfig())
    return model.state_dict()


def _shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def test_ours_to_hf_matches_transformers(hf_state):
    ours = _ours_on_meta("sam3")
    converted = hl.ours_to_hf(ours)
    assert sorted(set(hf_state) - set(converted)) == []
    assert sorted(set(converted) - set(hf_state)) == []
    assert _shapes(converted) == _shapes(hf_state)


def test_hf_to_ours_inverts_the_names(hf_state):
    ours = _ours_on_meta("sam3")
    back = hl.hf_to_ours(hf_state)
    assert set(back) <= set(ours)
    assert all(k.endswith(ABSENT_FROM_HF[0]) or k.startswith(ABSENT_FROM_HF[1]) for k in set(ours) - set(back))
    assert _shapes(back) == {k: s for k, s in _shapes(ours).items() if k in back}


def test_roundtrip_through_safetensors(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_image_model(preset="tiny", random_weights=True, device="cpu")
    ours = {k: v.clone() for k, v in model.state_dict().items()}
    hf = hl.ours_to_hf(ours)
    assert not any(k.endswith("freqs_cis") for k in hf)
    path = tmp_path / "model.safetensors"
    save_file(hf, str(path))

    loaded = build_image_model(checkpoint_path=path, preset="tiny", device="cpu").state_dict()
    assert set(loaded) == set(ours)
    pos = "detector.backbone.vision_backbone.trunk.pos_embed"
    for k, v in ours.items():
        if k == pos:  # HF keeps no cls slot; it is unused by the model and comes back as zeros
            assert torch.equal(loaded[k][:, 1:], v[:, 1:]) and not loaded[k][:, :1].any()
        elif k.startswith(ABSENT_FROM_HF[1]):
            assert not loaded[k].any(), k
        else:  # includes the RoPE tables, recomputed bit for bit
            assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k


def test_unknown_hf_tensor_is_named():
    with pytest.raises(ck.CheckpointError, match="detector_model.mystery.weight"):
        hl.hf_to_ours({"detector_model.mystery.weight": torch.zeros(1)})


def test_incomplete_qkv_is_reported():
    q = "detector_model.detr_encoder.layers.0.self_attn.q_proj.weight"
    with pytest.raises(ck.CheckpointError, match=r"lacks the \['k', 'v'\] projection"):
        hl.hf_to_ours({q: torch.zeros(4, 4)})
