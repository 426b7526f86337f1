"""bench/video_overhead.py: its counter counts what it claims, and a seconds-long smoke run at the tiny preset
(2 objects clicked on a real clip, 2 propagated frames) gives a row per object count. Figures are printed by
the bench itself, not asserted here (speed is the bench's business)."""

from __future__ import annotations

import pytest
import torch

from tests.bench.loader import load_bench


@pytest.fixture(scope="module")
def overhead():
    return load_bench("video_overhead")


def test_counter_counts_operators_and_host_reads(overhead):
    x = torch.arange(6.0)
    with overhead.OverheadCounter() as counter:
        y = (x * 2 + 1).sum()  # 3 operators, no read
        ops_before, reads_before, _ = counter.snapshot()
        assert reads_before == 0 and ops_before == 3
        float(y)  # one read (float -> item counts once)
        y.item()
        x.tolist()
        (x > 2).nonzero()  # a data-dependent shape
        x[x > 2]  # boolean-mask indexing
        x.cpu().numpy()  # one transfer: the numpy view of the copy is free
        bool(y > 0)
    assert counter.reads == 7, counter.read_kinds
    assert counter.read_kinds["__float__"] == 1 and counter.read_kinds["aten.nonzero.default"] == 1
    # casts of the parameters it was given are weight casts; other casts are not
    weight = torch.nn.Parameter(torch.ones(3))
    with overhead.OverheadCounter((weight,)) as counter:
        weight.to(torch.bfloat16)
        x.to(torch.bfloat16)
    assert counter.weight_casts == 1
    # outside the mode nothing is patched any more
    assert torch.Tensor.item.__name__ != "wrapped"


def test_smoke_run_tiny(overhead, capsys):
    rows = overhead.main(["--objects", "1,2", "--frames", "2", "--warmup", "0"])
    assert [r["objects"] for r in rows] == [1, 2]
    for r in rows:
        assert r["frames"] == 2
        assert r["ops_per_frame"] > 100  # the tracker ran (hundreds of operators per frame)
        assert r["host_reads_per_frame"] >= 0 and r["ms_per_frame"] > 0
    assert "ops/frame" in capsys.readouterr().out


def test_held_weights_leave_no_weight_cast_per_frame(overhead, capsys):
    """bf16 autocast on any CPU (emulated where bf16 is not native: slower, the same counts)."""
    plain = overhead.main(["--objects", "1", "--frames", "2", "--warmup", "0", "--precision", "bf16", "--no-hold"])
    held = overhead.main(["--objects", "1", "--frames", "2", "--warmup", "0", "--precision", "bf16"])
    assert plain[0]["weight_casts_per_frame"] > 100 and held[0]["weight_casts_per_frame"] == 0
    assert held[0]["ops_per_frame"] < plain[0]["ops_per_frame"]
    assert "weight casts/frame" in capsys.readouterr().out


def test_smoke_run_tiny_sam31(overhead, capsys):
    """SAM 3.1 at the tiny preset (buckets of 4): five clicked objects span two tracker states, all tracked."""
    rows = overhead.main(["--model-version", "sam3.1", "--objects", "1,5", "--frames", "2", "--warmup", "0"])
    assert [r["objects"] for r in rows] == [1, 5]
    assert rows[1]["objects_tracked_min"] == 5 and rows[1]["ops_per_frame"] > rows[0]["ops_per_frame"]
    assert "video overhead: sam3.1" in capsys.readouterr().out


def test_accelerator_paths_leave_the_clean_up_on_the_device(overhead, capsys, monkeypatch):
    """--accelerator-paths: the video clean-up is decided with tensor ops (a CUDA device's path), one host read
    a frame fewer than the CPU's labelling on the host."""
    import sam3.ops.masks

    monkeypatch.setattr(sam3.ops.masks, "HOST_LABELLED", sam3.ops.masks.HOST_LABELLED)  # restored afterwards
    args = ["--objects", "2", "--frames", "2", "--warmup", "0", "--where"]
    host = overhead.main(args)[0]
    device = overhead.main([*args, "--accelerator-paths"])[0]
    assert sam3.ops.masks.HOST_LABELLED == frozenset()
    assert device["host_reads_per_frame"] == host["host_reads_per_frame"] - 1
    assert not any("ops/masks.py" in site for site in device["read_sites"])
    assert "accelerator paths" in capsys.readouterr().out
