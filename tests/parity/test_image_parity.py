"""Whole-model image parity against the official ``sam3==0.1.4`` (see ``tests/parity/harness.py``).

Tiny preset (quick suite): the official model is built at the tiny sizes with random weights in an oracle
subprocess, saved as a ``sam3.pt``, and run on a real photo with text, text + box, box-only, long (truncated)
text, positive + negative boxes, and eight click cases; our model loads that ``sam3.pt`` and must match every
intermediate and every processor output. The full-size (1008 px) version is marked ``full`` (``.ci/run``).
"""

from __future__ import annotations

import pytest
import torch

from tests.parity import harness
from tests.parity.plan import default_plan
from tests.parity.processor_rows import compare_processor


@pytest.fixture(scope="module")
def tiny_run(oracle, photo_small, tmp_path_factory):
    """Official results and the random sam3.pt at the tiny preset, plus our model loaded from it."""
    plan = default_plan(photo_small.path, (photo_small.size[1], photo_small.size[0]))
    official, ckpt = harness.run_official("tiny", tmp_path_factory.mktemp("parity_tiny"), plan)
    return official, ckpt, harness.load_ours(ckpt, "tiny")


@pytest.fixture(scope="module")
def tiny_components(tiny_run):
    official, _, model = tiny_run
    return harness.compare_components(model, official)


def _check(rows, what: str, photo=None):
    assert rows, f"no {what} rows were produced"
    failed = [r for r in rows if not r.passed]
    header = f"{what}: {len(rows) - len(failed)}/{len(rows)} comparisons pass" + (
        f" (photo: {photo.source})" if photo else ""
    )
    print("\n" + header + "\n" + harness.table(rows))
    assert not failed, header + "\n" + harness.table(failed)


def test_backbone_matches_official(tiny_components, photo_small):
    """ViT trunk, both FPN necks and their sine encodings, conv_s0 / conv_s1."""
    _check([r for r in tiny_components if r.name.startswith("backbone/")], "backbone", photo_small)


def test_grounding_matches_official(tiny_components, tiny_run):
    """Tokens, text features, geometry tokens, prompt, encoder memory, every decoder layer, heads, masks."""
    cases = list(tiny_run[0]["grounding"])
    assert {"text", "text_box", "visual", "text_long", "text_pos_neg"} <= set(cases)
    _check([r for r in tiny_components if r.name.split("/")[0] in cases], "grounding")


def test_interactive_matches_official(tiny_components):
    """Prompt encoder, mask decoder and predict_inst results for points, boxes, mask input, multimask."""
    _check([r for r in tiny_components if r.name.startswith("inst/")], "interactive")


def test_processor_matches_official(tiny_run, photo_small):
    """Our Sam3Processor end to end: identical kept sets, boxes / scores / masks as the issue defines."""
    official, _, model = tiny_run
    rows = compare_processor(model, official)
    kept = [r for r in rows if r.name.endswith("/kept_set")]
    assert kept and all(r.ref > 0 for r in kept), "the threshold policy must keep some queries in every case"
    _check(rows, "processor", photo_small)


def test_official_run_was_clean(tiny_run):
    """The oracle mirrored every config field and its click post-processing (hole filling) really ran."""
    official = tiny_run[0]
    assert official["meta"]["unmapped_config_fields"] == [], "extend tests/parity/oracle/build_official.py"
    assert not [w for w in official["meta"]["warnings"] if "post-processing" in w], official["meta"]["warnings"]


@torch.inference_mode()
def test_harness_detects_a_wrong_weight(tiny_run):
    """Negative control: one perturbed bias in our model must fail the rows downstream of it, only those."""
    official, _, model = tiny_run
    bias = model.detector.transformer.decoder.bbox_embed.layers[-1].bias
    saved = bias.clone()
    bias.add_(1e-2)
    try:
        rows = {r.name: r for r in harness.compare_components(model, official)}
    finally:
        bias.copy_(saved)
    assert not rows["text/pred_boxes"].passed and not rows["text/decoder1.ref_boxes"].passed
    assert rows["text/encoder_memory"].passed and rows["backbone/fpn2"].passed


@pytest.mark.full
def test_image_parity_full_size(oracle, photo_full, tmp_path_factory):
    """The released sizes (sam3 preset, 1008 px, 860M random parameters): all rows, one photo, fewer cases."""
    report = harness.run_parity(
        "sam3", tmp_path_factory.mktemp("parity_full"), photo_full.path, threads=2, full_plan=True
    )
    _check(report.rows, "full-size parity", photo_full)
