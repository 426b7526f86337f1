"""Segment everything: every object of an image without a prompt (SAM 2's automatic mask generator).

A grid of single positive clicks covers the image (and, with ``crop_n_layers``, overlapping crops of it); every
click is decoded by the interactive head on the image's cached features, and the masks are filtered, made
unique and returned run-length encoded. The knobs keep the names and defaults of SAM 2's
``SAM2AutomaticMaskGenerator`` and give the same masks (``tests/inference/test_automatic_masks.py`` drives
SAM 2's generator with our predictor and compares). Per crop:

1. the crop is encoded once (``features_of(crop_box)``), however many points it gets;
2. the points go through the prompt encoder and mask decoder ``points_per_batch`` at a time, on the features'
   device (``InteractivePredictor.decode_points``), K = 3 masks per point (1 without ``multimask_output``);
   ``use_m2m`` decodes each mask once more with its own low-res logits as the mask prompt. With the multimask
   output and an IoU threshold (SAM 2's defaults) the decoder's upscaling runs only for the points with a
   candidate above the threshold (``decode_candidates``: the IoU head reads the transformer's tokens alone);
3. masks with a predicted IoU at or under ``pred_iou_thresh`` are dropped while still low-res (SAM 2 resizes
   them all first: same result, less work), then ``min_mask_region_area`` fills small holes and removes small
   specks in the low-res logits of the whole batch at once (SAM 2 does this in its predictor, not with SAM 1's
   per-mask OpenCV pass);
4. the survivors are resized to the crop size in chunks; the stability score (IoU of the masks thresholded at
   ``0 +- stability_score_offset``) filters them, boxes come from the binary masks, and masks whose box
   touches an inner crop edge (within 20 px) are dropped; the rest go to COCO RLE (pycocotools) at once;
5. box NMS (``torchvision.ops.batched_nms``, ``box_nms_thresh``, scored by predicted IoU) within the crop;
   across crops, NMS at ``crop_nms_thresh`` prefers masks from smaller crops.

Results are :class:`AutoMask` records sorted by area, largest first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from itertools import product

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torchvision.ops import batched_nms

from sam3.device import upload
from sam3.inference.interactive import InteractivePredictor, SamImageFeatures
from sam3.ops.boxes import masks_to_boxes
from sam3.ops.masks import fill_small_components

CropBox = tuple[int, int, int, int]  # x0, y0, x1, y1 in original pixels (x1, y1 exclusive)

# Masks resized to full resolution at once (float32 logits): bounds the peak memory at 32 * H * W * 4 bytes.
RESIZE_CHUNK = 32
# A box within this many pixels of an inner crop edge is cut by the crop: the mask is dropped (as SAM 1 / 2).
CROP_EDGE_TOLERANCE = 20.0

# Upper limits of the knobs (the service answers 4xx past them; SAM 2 has none).
MAX_POINTS_PER_SIDE = 128
MAX_POINTS_PER_BATCH = 1024
MAX_CROP_LAYERS = 3


@dataclass(frozen=True)
class EverythingConfig:
    """The knobs of SAM 2's ``SAM2AutomaticMaskGenerator``, with its defaults (``mask_threshold`` is the
    predictor's). ``check()`` raises ``ValueError`` starting with the offending field's name."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    multimask_output: bool = True
    use_m2m: bool = False

    def check(self) -> EverythingConfig:
        for f in fields(self):
            value, kind = getattr(self, f.name), _KINDS[f.name]
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"{f.name}: must be true or false, got {value!r}")
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{f.name}: must be an integer, got {value!r}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{f.name}: must be a number, got {value!r}")
            if kind is float and not math.isfinite(value):
                raise ValueError(f"{f.name}: must be finite, got {value!r}")
        _in_range("points_per_side", self.points_per_side, 1, MAX_POINTS_PER_SIDE)
        _in_range("points_per_batch", self.points_per_batch, 1, MAX_POINTS_PER_BATCH)
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            _in_range(name, getattr(self, name), 0.0, 1.0)
        if not 0.0 < self.stability_score_offset <= 32.0:
            raise ValueError(f"stability_score_offset: must be in (0, 32], got {self.stability_score_offset!r}")
        _in_range("crop_n_layers", self.crop_n_layers, 0, MAX_CROP_LAYERS)
        if not 0.0 <= self.crop_overlap_ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio: must be in [0, 1), got {self.crop_overlap_ratio!r}")
        _in_range("crop_n_points_downscale_factor", self.crop_n_points_downscale_factor, 1, MAX_POINTS_PER_SIDE)
        if self.points_per_side // self.crop_n_points_downscale_factor**self.crop_n_layers < 1:
            raise ValueError(
                f"crop_n_points_downscale_factor: {self.crop_n_points_downscale_factor} leaves no point in crop "
                f"layer {self.crop_n_layers} of a {self.points_per_side}-point side"
            )
        _in_range("min_mask_region_area", self.min_mask_region_area, 0, 2**31 - 1)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


_KINDS = {f.name: {"int": int, "float": float, "bool": bool}[str(f.type)] for f in fields(EverythingConfig)}


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}: must be in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class AutoMask:
    """One mask of :meth:`AutomaticMaskGenerator.generate`.

    rle:             COCO RLE of the (H, W) mask at the image size, ``{"size": [H, W], "counts": str}``
    area:            pixels in the mask
    bbox:            (x0, y0, x1, y1) pixel indices of the mask's first and last column / row (inclusive, the
                     box SAM 2 reports as x0, y0, x1 - x0, y1 - y0)
    predicted_iou:   the decoder's quality estimate
    stability_score: IoU of the mask thresholded at +- ``stability_score_offset``
    point:           (x, y) the click that made it, in image pixels
    crop_box:        (x0, y0, x1, y1) the crop it was found in (x1, y1 exclusive; the whole image for layer 0)
    """

    rle: dict
    area: int
    bbox: tuple[int, int, int, int]
    predicted_iou: float
    stability_score: float
    point: tuple[float, float]
    crop_box: CropBox

    def mask(self) -> np.ndarray:
        """The (H, W) bool mask."""
        return mask_utils.decode({"size": self.rle["size"], "counts": self.rle["counts"].encode()}).astype(bool)


@dataclass
class _Found:
    """The masks kept so far, as parallel arrays (N,) / (N, 4) / (N, 2), and their RLEs."""

    rles: list[dict]
    boxes: torch.Tensor  # (N, 4) float32 xyxy inclusive, image pixels
    iou: torch.Tensor  # (N,)
    stability: torch.Tensor  # (N,)
    points: torch.Tensor  # (N, 2) float32 image pixels
    crop_index: torch.Tensor  # (N,) int64 into the crop list

    @staticmethod
    def cat(parts: list[_Found]) -> _Found:
        if not parts:
            return _Found([], torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), torch.zeros(0, 2), torch.zeros(0))
        return _Found(
            [r for p in parts for r in p.rles],
            *(torch.cat([getattr(p, k) for p in parts]) for k in ("boxes", "iou", "stability", "points", "crop_index")),
        )

    def take(self, keep: torch.Tensor) -> _Found:
        keep = keep.cpu()
        return _Found(
            [self.rles[i] for i in keep.tolist()],
            self.boxes[keep], self.iou[keep], self.stability[keep], self.points[keep], self.crop_index[keep],
        )  # fmt: skip


class AutomaticMaskGenerator:
    """Every object of an image, from a grid of clicks decoded by an :class:`InteractivePredictor`.

    ``features_of(crop_box)`` gives the predictor's features of the image cut to ``crop_box`` (x0, y0, x1, y1):
    the whole image for crop layer 0 (e.g. the processor's cached features), each crop once otherwise.
    """

    def __init__(self, predictor: InteractivePredictor, config: EverythingConfig | None = None):
        self.predictor = predictor
        self.config = (config or EverythingConfig()).check()
        self.threshold = float(predictor.mask_threshold)

    @torch.no_grad()
    def generate(self, hw: tuple[int, int], features_of: Callable[[CropBox], SamImageFeatures]) -> list[AutoMask]:
        """-> the masks of an (H, W) image, largest first."""
        cfg = self.config
        height, width = int(hw[0]), int(hw[1])
        crops, layers = crop_boxes((height, width), cfg.crop_n_layers, cfg.crop_overlap_ratio)
        grids = point_grids(cfg.points_per_side, cfg.crop_n_layers, cfg.crop_n_points_downscale_factor)
        found = []
        for index, (crop, layer) in enumerate(zip(crops, layers)):
            if crop[2] <= crop[0] or crop[3] <= crop[1]:
                continue  # a side of 1 px splits into an empty crop (SAM 2 would fail on it)
            part = self._crop(features_of(crop), crop, grids[layer], (height, width))
            part.crop_index = torch.full((len(part.rles),), index, dtype=torch.int64)
            found.append(part)
        kept = _Found.cat(found)
        if len(crops) > 1 and kept.rles:
            boxes = torch.tensor(crops, dtype=torch.float32)[kept.crop_index]
            smaller_first = 1 / ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
            kept = kept.take(_nms(kept.boxes, smaller_first, cfg.crop_nms_thresh))
        masks = [
            AutoMask(
                rle=rle,
                area=int(mask_utils.area(rle)),
                bbox=tuple(int(v) for v in box),
                predicted_iou=float(iou),
                stability_score=float(stab),
                point=(float(pt[0]), float(pt[1])),
                crop_box=tuple(crops[ci]),
            )
            for rle, box, iou, stab, pt, ci in zip(
                kept.rles, kept.boxes.tolist(), kept.iou.tolist(), kept.stability.tolist(), kept.points.tolist(),
                kept.crop_index.tolist(),
            )
        ]  # fmt: skip
        for m in masks:
            m.rle["counts"] = m.rle["counts"].decode() if isinstance(m.rle["counts"], bytes) else m.rle["counts"]
        return sorted(masks, key=lambda m: -m.area)

    def _crop(self, feats: SamImageFeatures, crop: CropBox, grid: np.ndarray, image_hw: tuple[int, int]) -> _Found:
        """Every point of one crop, in batches; masks kept after the crop's own NMS, in image coordinates."""
        cfg = self.config
        x0, y0, x1, y1 = crop
        crop_hw = (y1 - y0, x1 - x0)
        points = grid * np.array([[crop_hw[1], crop_hw[0]]])  # (P, 2) crop pixels (float64, float32 once batched)
        parts = []
        for start in range(0, len(points), cfg.points_per_batch):
            parts.append(self._batch(feats, points[start : start + cfg.points_per_batch], crop, image_hw))
        found = _Found.cat(parts)
        if found.rles:
            found = found.take(_nms(found.boxes, found.iou, cfg.box_nms_thresh))
        offset = torch.tensor([x0, y0], dtype=found.points.dtype)
        found.points = found.points + offset
        found.boxes = found.boxes + torch.tensor([x0, y0, x0, y0], dtype=found.boxes.dtype)
        return found

    def _batch(self, feats: SamImageFeatures, points: np.ndarray, crop: CropBox, image_hw: tuple[int, int]) -> _Found:
        """Decode, filter and encode the masks of one batch of points (crop pixels)."""
        cfg, thr = self.config, self.threshold
        crop_hw = (crop[3] - crop[1], crop[2] - crop[0])
        xy = torch.as_tensor(points, dtype=torch.float32)
        if cfg.multimask_output and cfg.pred_iou_thresh > 0.0 and not cfg.use_m2m:
            # masks only for the clicks with a candidate above the IoU threshold (the rest are dropped unseen)
            rows, low_res, iou = self.predictor.decode_candidates(feats, crop_hw, xy, cfg.pred_iou_thresh)
            iou, xy = iou.index_select(0, rows), xy[rows.cpu()]
        else:
            low_res, iou = self.predictor.decode_points(feats, crop_hw, xy, multimask_output=cfg.multimask_output)
        k = iou.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)  # (B*K, s, s), (B*K,)
        point_xy = xy.repeat_interleave(k, dim=0)  # (B*K, 2) float32, as SAM 2 reports them
        if cfg.use_m2m:  # every mask once more, its own (clamped) logits as the mask prompt, one mask per click
            prompts = low_res.clamp(-32.0, 32.0)[:, None]
            refined = [
                self.predictor.decode_points(
                    feats, crop_hw, point_xy[i : i + cfg.points_per_batch],
                    mask_input=prompts[i : i + cfg.points_per_batch], multimask_output=False,
                )
                for i in range(0, len(prompts), cfg.points_per_batch)
            ]  # fmt: skip
            low_res = torch.cat([r[0][:, 0] for r in refined])
            iou = torch.cat([r[1][:, 0] for r in refined])
        if cfg.pred_iou_thresh > 0.0:
            keep = (iou > cfg.pred_iou_thresh).nonzero()[:, 0]
            low_res, iou, point_xy = low_res[keep], iou[keep], point_xy[keep.cpu()]
        if cfg.min_mask_region_area > 0 and len(low_res):
            area = cfg.min_mask_region_area
            low_res = fill_small_components(low_res[:, None], area, area, thr)[:, 0]
        parts = []
        for start in range(0, len(low_res), RESIZE_CHUNK):
            sl = slice(start, start + RESIZE_CHUNK)
            parts.append(self._encode(low_res[sl], iou[sl], point_xy[sl], crop, crop_hw, image_hw))
        return _Found.cat(parts)

    def _encode(
        self, low_res: torch.Tensor, iou: torch.Tensor, point_xy: torch.Tensor, crop: CropBox,
        crop_hw: tuple[int, int], image_hw: tuple[int, int],
    ) -> _Found:  # fmt: skip
        """(M, s, s) low-res logits -> stability filter, boxes, crop-edge filter, RLE at the image size."""
        cfg, thr = self.config, self.threshold
        logits = F.interpolate(low_res[:, None], crop_hw, mode="bilinear", align_corners=False)[:, 0]
        # counted over the flattened pixels: a sum over the two last axes at once is several times slower on CPU
        inter = (logits > thr + cfg.stability_score_offset).flatten(1).sum(1, dtype=torch.int32)
        union = (logits > thr - cfg.stability_score_offset).flatten(1).sum(1, dtype=torch.int32)
        stability = inter / union
        masks = logits > thr
        del logits
        keep = stability >= cfg.stability_score_thresh if cfg.stability_score_thresh > 0.0 else None
        boxes = masks_to_boxes(masks if keep is None else masks[keep])
        if keep is not None:
            idx = keep.nonzero()[:, 0]
            masks, iou, stability, point_xy = masks[idx], iou[idx], stability[idx], point_xy[idx.cpu()]
        near = _near_crop_edge(boxes, crop, image_hw)
        if near.any():
            idx = (~near).nonzero()[:, 0]
            masks, boxes, iou, stability = masks[idx], boxes[idx], iou[idx], stability[idx]
            point_xy = point_xy[idx.cpu()]
        return _Found(
            _to_rle(masks, crop, image_hw), boxes.cpu(), iou.cpu(), stability.cpu(), point_xy.cpu(),
            torch.zeros(len(masks), dtype=torch.int64),
        )  # fmt: skip


def _nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices kept by class-agnostic box NMS, highest score first."""
    return batched_nms(boxes.float(), scores.float(), torch.zeros(len(boxes), dtype=torch.int64), threshold)


def _near_crop_edge(boxes: torch.Tensor, crop: CropBox, image_hw: tuple[int, int]) -> torch.Tensor:
    """(M, 4) crop-pixel boxes -> (M,) bool: a side within 20 px of an edge of the crop that is not the image's."""
    x0, y0 = crop[0], crop[1]
    crop_t = upload(crop, boxes.device, torch.float32)
    image_t = upload([0, 0, image_hw[1], image_hw[0]], boxes.device, torch.float32)
    shifted = boxes + upload([x0, y0, x0, y0], boxes.device, torch.float32)
    near_crop = torch.isclose(shifted, crop_t[None], atol=CROP_EDGE_TOLERANCE, rtol=0)
    near_image = torch.isclose(shifted, image_t[None], atol=CROP_EDGE_TOLERANCE, rtol=0)
    return (near_crop & ~near_image).any(dim=1)


def _to_rle(masks: torch.Tensor, crop: CropBox, image_hw: tuple[int, int]) -> list[dict]:
    """(M, h, w) bool crop masks -> COCO RLEs at the image size (pycocotools, column-major)."""
    if len(masks) == 0:
        return []
    x0, y0, x1, y1 = crop
    height, width = image_hw
    if (x0, y0, x1, y1) != (0, 0, width, height):
        masks = F.pad(masks, (x0, width - x1, y0, height - y1), value=False)
    # (M, W, H) in C order is (H, W, M) in Fortran order, the layout pycocotools reads.
    columns = masks.transpose(1, 2).contiguous().cpu().numpy().view(np.uint8)
    return mask_utils.encode(columns.transpose(2, 1, 0))


def point_grids(points_per_side: int, crop_n_layers: int, downscale: int) -> list[np.ndarray]:
    """Per crop layer, an (n*n, 2) grid of (x, y) in [0, 1], cell centres, n = points_per_side // downscale**layer."""
    grids = []
    for layer in range(crop_n_layers + 1):
        n = int(points_per_side / downscale**layer)
        offset = 1 / (2 * n)
        side = np.linspace(offset, 1 - offset, n)
        xs, ys = np.tile(side[None, :], (n, 1)), np.tile(side[:, None], (1, n))
        grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
    return grids


def crop_boxes(hw: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[CropBox], list[int]]:
    """The whole image, then (2^i)^2 overlapping crops for layer i = 1..n_layers -> (boxes, layer of each)."""
    height, width = hw
    boxes, layers = [(0, 0, width, height)], [0]
    short = min(height, width)

    def length(full: int, n: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n - 1) + full) / n))

    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short * (2 / n))
        crop_w, crop_h = length(width, n, overlap), length(height, n, overlap)
        xs = [int((crop_w - overlap) * i) for i in range(n)]
        ys = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(xs, ys):
            boxes.append((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)))
            layers.append(layer)
    return boxes, layers
