"""The clients' numpy RLE decoder against pycocotools (the codec the service encodes with), and
``save_results`` from RLE and PNG frames giving the same files."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco

from milimo_clients import FrameResult, TrackingManager, decode_rle
from milimo_clients.masks import mask_png, rle_counts


def encode(mask: np.ndarray) -> dict:
    rle = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("utf-8")}


def masks():
    rng = np.random.default_rng(0)
    yield np.zeros((7, 5), bool)
    yield np.ones((5, 7), bool)
    yield rng.random((1, 1)) > 0.5
    yield rng.random((37, 53)) > 0.5  # many short runs
    yield rng.random((120, 90)) > 0.97  # long runs: multi-character counts, negative deltas
    big = np.zeros((480, 640), bool)
    big[100:300, 50:600] = True
    big[0, :] = True
    yield big


@pytest.mark.parametrize("k", range(6))
def test_decoder_equals_pycocotools(k):
    mask = list(masks())[k]
    rle = encode(mask)
    ours = decode_rle(rle)
    theirs = coco.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
    assert ours.shape == mask.shape and ours.dtype == bool
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, mask)
    # The run lengths are those of the column-major pixels, starting with zeros.
    flat = np.concatenate([[False], mask.T.ravel()])
    changes = np.flatnonzero(flat[1:] != flat[:-1])
    expected = np.diff(np.concatenate([[0], changes, [mask.size]])).tolist()
    assert rle_counts(rle["counts"]) == expected
    assert sum(rle_counts(rle["counts"])) == mask.size == int(np.prod(rle["size"]))
    assert int(coco.area({"size": rle["size"], "counts": rle["counts"].encode()})) == int(mask.sum())


def test_uncompressed_counts_and_bad_input():
    np.testing.assert_array_equal(
        decode_rle({"size": [2, 2], "counts": [1, 2, 1]}), np.array([[False, True], [True, False]])
    )
    with pytest.raises(ValueError, match="sum to"):
        decode_rle({"size": [4, 4], "counts": [3]})
    with pytest.raises(ValueError, match="rle:"):
        decode_rle({"counts": "abc"})
    with pytest.raises(ValueError, match="counts"):
        decode_rle({"size": [4, 4], "counts": "\x01"})


def test_save_results_from_rle_and_png_frames_write_the_same_masks(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.random((24, 32)) > 0.6, rng.random((24, 32)) > 0.3
    png = [mask_png(encode(m)) for m in (a, b)]
    rle_frames = [
        {
            "frame_idx": 0,
            "object_ids": [1, 7],
            "scores": [0.9, 0.2],
            "masks": [encode(a), encode(b)],
            "boxes": [[0, 0, 1, 1]] * 2,
        }
    ]
    png_frames = [FrameResult(0, [1, 7], [0.9, 0.2], png, [[0, 0, 1, 1]] * 2)]
    TrackingManager.save_results("s", rle_frames, tmp_path / "rle")
    TrackingManager.save_results("s", png_frames, tmp_path / "png")
    for name, expected in (("0_1.png", a), ("0_7.png", b)):
        from_rle = np.asarray(Image.open(tmp_path / "rle" / "masks" / name))
        from_png = np.asarray(Image.open(tmp_path / "png" / "masks" / name))
        np.testing.assert_array_equal(from_rle, from_png)
        np.testing.assert_array_equal(from_rle > 0, expected)
        assert set(np.unique(from_rle)) <= {0, 255}
    assert json.loads((tmp_path / "rle" / "manifest.json").read_text()) == json.loads(
        (tmp_path / "png" / "manifest.json").read_text()
    )
    frame = FrameResult.from_json(rle_frames[0])
    np.testing.assert_array_equal(frame.mask_array(1), b)
    assert Image.open(io.BytesIO(png[0])).mode == "L"
