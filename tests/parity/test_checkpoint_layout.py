"""Our state dict IS the layout of Meta's ``sam3.pt``: same 1465 names, shapes and dtypes, so loading is
an identity mapping.

Checked two ways: against ``tests/data/keys_video.tsv.gz`` (the key list of the released file) and against the official model's own state dict, built on the meta device in an oracle subprocess
(so the check does not need ``../shared``). The oracle's builder mirror is itself checked against the
official ``build_sam3_image_model`` (module classes, hyper-parameters and parameter shapes).
"""

from __future__ import annotations

import json

import pytest
import torch

from sam3.config import get_config
from sam3.build import compose_sam3_model
from tests.conftest import read_keys_video
from tests.parity import harness


def _our_layout(preset: str) -> list[tuple[str, list[int], str]]:
    with torch.device("meta"):
        model = compose_sam3_model(get_config(preset), enable_inst_interactivity=True)
    return [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]


def _official_layout(preset: str, tmp_path) -> list[tuple[str, list[int], str]]:
    cfg, out = tmp_path / f"{preset}.json", tmp_path / f"layout_{preset}.json"
    harness.write_config(preset, cfg)
    harness.run_oracle("build_official.py", "--config", str(cfg), "--describe", str(out), timeout=600)
    return [tuple(row) for row in json.loads(out.read_text())["layout"]]


def _differences(ours: list, ref: list) -> list[str]:
    a = {n: (tuple(s), dt) for n, s, dt in ours}
    b = {n: (tuple(s), dt) for n, s, dt in ref}
    errs = [f"missing {n} {b[n]}" for n in b if n not in a] + [f"unexpected {n} {a[n]}" for n in a if n not in b]
    return errs + [f"{n}: ours {a[n]}, reference {b[n]}" for n in a if n in b and a[n] != b[n]]


def test_layout_matches_keys_video_tsv(keys_tsv):
    ref = [(name, list(shape), dtype) for name, shape, dtype in read_keys_video()]
    ours = _our_layout("sam3")
    assert len(ref) == 1465
    errs = _differences(ours, ref)
    assert not errs, f"{len(errs)} differences from {keys_tsv}:\n" + "\n".join(errs[:40])


@pytest.mark.parametrize("preset", ["sam3", "tiny"])
def test_layout_matches_official_state_dict(oracle, preset, tmp_path):
    ref = _official_layout(preset, tmp_path)
    ours = _our_layout(preset)
    if preset == "sam3":
        assert len(ref) == 1465
    errs = _differences(ours, ref)
    assert not errs, f"{len(errs)} differences from the official {preset} state dict:\n" + "\n".join(errs[:40])


def test_oracle_mirror_equals_official_builder(oracle, tmp_path):
    """The parity oracle builds what the official builder builds, at the released sizes."""
    cfg = tmp_path / "sam3.json"
    harness.write_config("sam3", cfg)
    out = harness.run_oracle("build_official.py", "--config", str(cfg), "--check-official", timeout=600)
    assert "mirror == official builder" in out, out
