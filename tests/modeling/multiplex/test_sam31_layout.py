"""SAM 3.1's strict-load layout without the oracle: our model's state dict against the upstream builder's key
names, shapes and dtypes (``tests/data/keys_sam31.tsv.gz``, made by ``tests/parity/oracle/build_upstream31.py``),
and a strict round trip of a checkpoint in that layout at the tiny preset."""

from __future__ import annotations

import pytest
import torch

from sam3.build_multiplex import build_multiplex_model, compose_multiplex_model
from sam3.checkpoint_errors import CheckpointError
from sam3.config_multiplex import get_multiplex_config
from tests.conftest import KEYS_SAM31, read_keys_video


def _layout(model) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]


def test_released_layout_matches_the_upstream_builder():
    with torch.device("meta"):
        model = compose_multiplex_model(get_multiplex_config("sam3"))
    ours = {name: (shape, dtype) for name, shape, dtype in _layout(model)}
    upstream = {name: (shape, dtype) for name, shape, dtype in read_keys_video(KEYS_SAM31)}
    assert len(upstream) == 1623
    assert sorted(set(upstream) - set(ours)) == [], "missing in ours"
    assert sorted(set(ours) - set(upstream)) == [], "not in sam3.1_multiplex.pt"
    assert {k: v for k, v in ours.items() if upstream[k] != v} == {}
    params = sum(v.numel() for v in model.parameters())
    print(f"\nSAM 3.1 at the released sizes: {len(ours)} tensors, {params:,} parameters")


def test_tiny_checkpoint_round_trip_is_strict(tmp_path):
    torch.manual_seed(0)
    model = build_multiplex_model(preset="tiny", random_weights=True, device="cpu")
    path = tmp_path / "sam3.1_multiplex.pt"
    torch.save({"model": model.state_dict()}, path)
    loaded = build_multiplex_model(checkpoint_path=path, preset="tiny", device="cpu")
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # one tensor missing, one unexpected: both named
    state = model.state_dict()
    state.pop("tracker.model.output_valid_embed")
    state["tracker.model.extra"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"tracker\.model\.output_valid_embed[\s\S]*tracker\.model\.extra"):
        build_multiplex_model(checkpoint_path=path, preset="tiny", device="cpu")


def test_sam3_checkpoint_is_refused_by_the_sam31_model(tmp_path):
    """A SAM 3 checkpoint (1465 tensors) does not load into SAM 3.1: the error names the difference."""
    from sam3.build import build_image_model

    path = tmp_path / "sam3.pt"
    torch.save(build_image_model(preset="tiny", random_weights=True, device="cpu").state_dict(), path)
    with pytest.raises(CheckpointError, match="does not match the model"):
        build_multiplex_model(checkpoint_path=path, preset="tiny", device="cpu")
