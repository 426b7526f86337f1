"""Reduced precision is no worse than the official release's own: ours in bf16 / int8 against ours in
fp32, compared with the official model under bf16 autocast against the official model in fp32 (the
yardstick), on identical random weights and a real photo, at the tiny preset (see precision_quality.py).

bf16 is emulated on CPUs without native bf16 (correct, only slow), which is why this runs at tiny size.
"""

from __future__ import annotations

import pytest

from tests.parity.precision_quality import measure


@pytest.fixture(scope="module")
def deviations(oracle, photo_small, tmp_path_factory):
    result = measure("tiny", tmp_path_factory.mktemp("precision_quality"), photo_small.path)
    print(f"\nphoto: {photo_small.source}")
    for name, dev in result.items():
        print(f"  {name:28s} {dev.line()}")
    return result


def test_our_fp32_is_the_official_fp32(deviations):
    d = deviations["ours fp32 vs official fp32"]
    assert d.kept_agreement == 1.0 and d.max_score_diff < 1e-4
    assert d.kept_mask_iou > 0.999 and d.click_mask_iou > 0.999


def test_the_yardstick_measures_something(deviations):
    """bf16 autocast does move the official model (else the comparison below would be vacuous)."""
    assert deviations["official bf16"].max_score_diff > 1e-4


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_reduced_precision_is_no_worse_than_the_official(deviations, mode):
    worse = deviations[f"ours {mode}"].no_worse_than(deviations["official bf16"])
    assert not worse, f"ours {mode} vs fp32 is further than official bf16 vs fp32: {worse}"
