"""Click / box prompting on a single image (the SAM-1 task), with the tracker's SAM heads.

The image features come from the tracker neck (``BackboneFeatures.sam2_fpn``) computed once per
image by the caller; this module only turns prompts into masks:

1. features: ``conv_s0`` / ``conv_s1`` project levels 0 / 1 for the decoder skips and the learned
   ``no_mem_embed`` is added to level 2 (an image seen without memory, as in video training);
2. prompts in original-image pixels are mapped to model-input pixels; a box becomes two corner
   points (labels 2, 3) placed before the clicks;
3. prompt encoder + mask decoder give 4g x 4g logits;
4. small background holes (area <= ``max_hole_area``) are filled, the logits are resized to the
   original size and thresholded.

Nothing is cached here: callers keep ``SamImageFeatures`` between clicks. Those hold, besides the
projected levels, what every click without a mask prompt would otherwise recompute (``tokens``: the
dense positional encoding and the first two-way block's image-only projections); a click with a mask
prompt takes the plain path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam3.device import download, upload
from sam3.modeling.interactive.mask_decoder import MaskDecoder
from sam3.modeling.interactive.prompt_encoder import PromptEncoder
from sam3.modeling.interactive.two_way_transformer import ImageTokens
from sam3.modeling.outputs import BackboneFeatures
from sam3.ops.masks import fill_small_components

ArrayLike = np.ndarray | torch.Tensor | list | tuple

VALID_LABELS = (-1, 0, 1, 2, 3)  # padding, negative, positive, box top-left, box bottom-right


class SamHeads(Protocol):
    """What the predictor needs from the tracker (``Sam3Tracker`` has these attributes)."""

    sam_prompt_encoder: PromptEncoder
    sam_mask_decoder: MaskDecoder
    no_mem_embed: nn.Parameter  # (1, 1, C)


@dataclass
class SamImageFeatures:
    """Decoder-ready features of one image.

    image_embed: (1, C, g, g) tracker level 2 + ``no_mem_embed``
    high_res:    [(1, C/8, 4g, 4g), (1, C/4, 2g, 2g)] levels 0 / 1 after ``conv_s0`` / ``conv_s1`` (the plain
                 path), or None when ``skips`` holds them
    skips:       the same two levels in ``MaskDecoder.block_skips`` order, for the decoder's fast upscaling
                 (the fast path), or None
    tokens:      the two-way transformer's image side for clicks without a mask prompt (about 18 MB
                 at the released size), or None (then every click computes it)
    """

    image_embed: torch.Tensor
    high_res: list[torch.Tensor] | None = None
    skips: list[torch.Tensor] | None = None
    tokens: ImageTokens | None = None

    def nbytes(self) -> int:
        own = sum(t.numel() * t.element_size() for t in (self.image_embed, *(self.high_res or self.skips)))
        return own + (self.tokens.nbytes() if self.tokens is not None else 0)


class InteractivePredictor:
    """Masks from clicks, boxes and previous low-res masks on an already encoded image.

    ``heads`` is read lazily (``heads.sam_prompt_encoder`` etc.) so that weights loaded into it
    after construction are used.
    """

    def __init__(
        self,
        heads: SamHeads,
        mask_threshold: float = 0.0,
        max_hole_area: float = 256.0,
        max_sprinkle_area: float = 0.0,
    ):
        self.heads = heads
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area

    @property
    def image_size(self) -> int:
        return self.heads.sam_prompt_encoder.image_size

    @torch.no_grad()
    def prepare_features(self, features: BackboneFeatures, precompute_tokens: bool = True) -> SamImageFeatures:
        """Project the tracker-neck levels of a one-image batch for the mask decoder.

        ``precompute_tokens`` (the fast path) also computes the image side of the first two-way block
        (``tokens``), which makes each later click without a mask prompt cheaper, and keeps the skips in
        the order of the decoder's per-pixel upscaling (``skips``, ``MaskDecoder(fast_upscale=True)``);
        same results to fp32 round-off.
        """
        if features.sam2_fpn is None:
            raise ValueError("these features have no tracker levels (sam2_fpn); build the model with a tracker")
        return self.prepare_levels(features.sam2_fpn, precompute_tokens)

    @torch.no_grad()
    def prepare_levels(self, levels: list[torch.Tensor], precompute_tokens: bool = True) -> SamImageFeatures:
        """:meth:`prepare_features` on the tracker-neck levels themselves:
        [(1, C, 4g, 4g), (1, C, 2g, 2g), (1, C, g, g)] (``BackboneFeatures.sam2_fpn``)."""
        if len(levels) < 3:
            raise ValueError(f"expected 3 tracker levels, got {len(levels)}")
        level0, level1, level2 = levels[-3:]
        if level2.shape[0] != 1:
            raise ValueError(f"predict_inst takes one image, got a batch of {level2.shape[0]}; use features.select(i)")
        decoder, encoder = self.heads.sam_mask_decoder, self.heads.sam_prompt_encoder
        no_mem = self.heads.no_mem_embed.reshape(1, -1, 1, 1)  # (1, 1, C) token -> (1, C, 1, 1) map offset
        image_embed = level2 + no_mem
        high_res = [decoder.conv_s0(level0), decoder.conv_s1(level1)]
        if not precompute_tokens:
            return SamImageFeatures(image_embed=image_embed, high_res=high_res)
        # What the decoder adds for "no mask prompt" (PromptEncoder.forward's dense output).
        no_mask = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return SamImageFeatures(
            image_embed=image_embed,
            skips=decoder.block_skips(high_res),
            tokens=decoder.transformer.precompute_image(image_embed + no_mask, encoder.get_dense_pe()),
        )

    @torch.no_grad()
    def predict_inst(
        self,
        features: BackboneFeatures | SamImageFeatures,
        orig_hw: tuple[int, int],
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
        bool_masks: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one image.

        point_coords: (N, 2) (x, y), or (B, N, 2) for B objects at once; original-image pixels when
                      ``normalize_coords`` (the default), else fractions of width / height in [0, 1].
        point_labels: (N,) or (B, N) ints: 1 positive, 0 negative (-1 padding, 2 / 3 box corners).
        box:          (4,) or (B, 4) xyxy, same units as the points.
        mask_input:   (1, 4g, 4g) or (B, 1, 4g, 4g) logits, e.g. a previous ``low_res_masks`` entry.
        Returns (masks, iou_predictions, low_res_masks) as float32 numpy arrays:
        masks (K, H, W) 0/1 (logits with ``return_logits``), iou (K,), low-res logits (K, 4g, 4g)
        clamped to +-32, with K = 3 for multimask output, else 1; a leading B axis when B > 1.
        ``bool_masks``: thresholded masks as bool instead of float32 0/1 (a quarter of the memory and no
        float write; the official API returns float32, hence off by default).
        """
        feats = features if isinstance(features, SamImageFeatures) else self.prepare_features(features)
        h, w = _check_hw(orig_hw)
        device = feats.image_embed.device
        coords, labels = self._prep_points(point_coords, point_labels, (h, w), normalize_coords, device)
        if box is not None:
            corners = self._prep_box(box, (h, w), normalize_coords, device)
            corner_labels = upload([[2, 3]], device, torch.int32).repeat(corners.shape[0], 1)
            if coords is None:
                coords, labels = corners, corner_labels
            else:
                if coords.shape[0] != corners.shape[0]:
                    raise ValueError(f"{corners.shape[0]} boxes but {coords.shape[0]} point sets")
                coords, labels = torch.cat([corners, coords], dim=1), torch.cat([corner_labels, labels], dim=1)
        masks_in = self._prep_mask(mask_input, device)
        n_prompts = coords.shape[0] if coords is not None else 1
        if masks_in is not None and masks_in.shape[0] not in (1, n_prompts):
            raise ValueError(f"{masks_in.shape[0]} mask inputs for {n_prompts} prompts")

        low_res, iou = self._decode(feats, coords, labels, masks_in, multimask_output)
        masks = fill_small_components(low_res, self.max_hole_area, self.max_sprinkle_area, self.mask_threshold)
        masks = _resize(masks, (h, w))
        if not return_logits:
            masks = masks > self.mask_threshold
            if not bool_masks:
                masks = masks.float()
        low_res = low_res.clamp(-32.0, 32.0)
        masks, iou, low_res = download(masks.squeeze(0), iou.float().squeeze(0), low_res.squeeze(0))  # one transfer
        return masks, iou, low_res

    @torch.no_grad()
    def decode_points(
        self,
        features: SamImageFeatures,
        orig_hw: tuple[int, int],
        points: ArrayLike,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One positive click per prompt, decoded where the features are; nothing goes to the host.

        points:     (B, 2) (x, y) in original-image pixels, one click per prompt.
        mask_input: (B, 1, 4g, 4g) low-res logits of a previous pass, or None.
        Returns (low_res (B, K, 4g, 4g) float32 logits, iou (B, K) float32): what :meth:`predict_inst` computes
        for the same prompts before its clean-up, resize and clamp (the automatic mask generator's batches).
        """
        device = features.image_embed.device
        coords, labels = self._one_click_each(points, orig_hw, device)
        masks_in = self._prep_mask(mask_input, device)
        return self._decode(features, coords, labels, masks_in, multimask_output)

    @torch.no_grad()
    def decode_candidates(
        self, features: SamImageFeatures, orig_hw: tuple[int, int], points: ArrayLike, iou_floor: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`decode_points` with ``multimask_output`` for the automatic mask generator, the masks made only
        for the prompts with a candidate whose predicted IoU is above ``iou_floor`` (the generator drops every
        other one unseen). Nothing goes to the host but the kept rows' count.

        points: (B, 2) (x, y) in original-image pixels, one positive click per prompt.
        Returns rows (R,) int64 ascending, low_res (R, 3, 4g, 4g) float32 logits of those prompts (their
        :meth:`decode_points` masks to fp32 round-off) and iou (B, 3) float32 of every prompt.
        """
        if features.tokens is None:  # no precomputed image side: decode everything, then keep
            low_res, iou = self.decode_points(features, orig_hw, points, multimask_output=True)
            rows = (iou > iou_floor).any(dim=1).nonzero()[:, 0]
            return rows, low_res.index_select(0, rows), iou
        coords, labels = self._one_click_each(points, orig_hw, features.image_embed.device)
        sparse, _ = self.heads.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        rows, low_res, iou = self.heads.sam_mask_decoder.candidate_masks(
            features.image_embed,
            sparse,
            features.skips if features.skips is not None else features.high_res,
            features.tokens,
            iou_floor,
            fast_upscale=features.skips is not None,
        )
        return rows, low_res.float(), iou.float()

    def _one_click_each(
        self, points: ArrayLike, orig_hw: tuple[int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2) (x, y) original-image pixels -> one positive click per prompt: coords (B, 1, 2), labels (B, 1)."""
        xy = torch.as_tensor(np.asarray(points) if isinstance(points, (list, tuple)) else points)
        if xy.dim() != 2 or xy.shape[-1] != 2:
            raise ValueError(f"points must be (B, 2), got {tuple(xy.shape)}")
        ones = torch.ones(xy.shape[0], 1, dtype=torch.int32)
        return self._prep_points(xy[:, None, :], ones, _check_hw(orig_hw), True, device)

    def _decode(
        self, feats: SamImageFeatures, coords: torch.Tensor | None, labels: torch.Tensor | None,
        masks_in: torch.Tensor | None, multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Prompt encoder + mask decoder -> (low_res (B, K, 4g, 4g) float32, iou (B, K))."""
        encoder, decoder = self.heads.sam_prompt_encoder, self.heads.sam_mask_decoder
        points = None if coords is None else (coords, labels)
        sparse, dense = encoder(points=points, boxes=None, masks=masks_in)
        # Without a mask prompt the image side is the same for every click: take it from the features.
        tokens = feats.tokens if masks_in is None else None
        low_res, iou, _, _ = decoder(
            image_embeddings=feats.image_embed,
            image_pe=None if tokens is not None else encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=sparse.shape[0] > 1,
            high_res_features=feats.skips if feats.skips is not None else feats.high_res,
            image_tokens=tokens,
            fast_upscale=feats.skips is not None,
        )
        return low_res.float(), iou.float()

    # ---- prompt preparation -------------------------------------------------------------------

    def _to_model_pixels(self, xy: torch.Tensor, hw: tuple[int, int], normalize: bool) -> torch.Tensor:
        """(..., 2) (x, y) in original pixels (or [0, 1] fractions) -> model-input pixels."""
        if normalize:
            xy = xy.clone()
            xy[..., 0] = xy[..., 0] / hw[1]
            xy[..., 1] = xy[..., 1] / hw[0]
        return xy * self.image_size

    def _prep_points(
        self, coords: ArrayLike | None, labels: ArrayLike | None, hw: tuple[int, int], normalize: bool,
        device: torch.device,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
        """-> (coords (B, N, 2) float32, labels (B, N) int32) in model-input pixels, or (None, None)."""
        if coords is None and labels is None:
            return None, None
        if coords is None or labels is None:
            raise ValueError("point_coords and point_labels must be given together")
        # checked where the values are (the caller's host arrays, as a rule) before they go to the device: a
        # check on device values would cost a device-to-host synchronisation per click
        coords = torch.as_tensor(np.asarray(coords) if isinstance(coords, (list, tuple)) else coords)
        labels = torch.as_tensor(np.asarray(labels) if isinstance(labels, (list, tuple)) else labels)
        coords = coords.to(dtype=torch.float32)
        if coords.dim() not in (2, 3) or coords.shape[-1] != 2:
            raise ValueError(f"point_coords must be (N, 2) or (B, N, 2), got {tuple(coords.shape)}")
        if labels.dim() != coords.dim() - 1 or tuple(labels.shape) != tuple(coords.shape[:-1]):
            raise ValueError(
                f"point_labels shape {tuple(labels.shape)} does not match point_coords {tuple(coords.shape)}"
            )
        if labels.is_floating_point() and not torch.equal(labels, labels.round()):
            raise ValueError("point_labels must be integers")
        labels = labels.to(dtype=torch.int32)
        bad = ~torch.isin(labels, torch.tensor(VALID_LABELS, dtype=torch.int32, device=labels.device))
        if bad.any():
            raise ValueError(f"point_labels must be in {VALID_LABELS}, got {labels[bad].unique().tolist()}")
        if not torch.isfinite(coords).all():
            raise ValueError("point_coords must be finite")
        coords = self._to_model_pixels(upload(coords, device), hw, normalize)
        labels = upload(labels, device)
        if coords.dim() == 2:
            coords, labels = coords[None], labels[None]
        return coords, labels

    def _prep_box(self, box: ArrayLike, hw: tuple[int, int], normalize: bool, device: torch.device) -> torch.Tensor:
        """(4,) or (B, 4) xyxy -> corners (B, 2, 2) in model-input pixels."""
        box = torch.as_tensor(np.asarray(box) if isinstance(box, (list, tuple)) else box)
        box = box.to(dtype=torch.float32)
        if box.dim() not in (1, 2) or box.shape[-1] != 4:
            raise ValueError(f"box must be (4,) or (B, 4) xyxy, got {tuple(box.shape)}")
        if not torch.isfinite(box).all():  # on the caller's values, before the upload (see _prep_points)
            raise ValueError("box must be finite")
        return self._to_model_pixels(upload(box, device).reshape(-1, 2, 2), hw, normalize)

    def _prep_mask(self, mask_input: ArrayLike | None, device: torch.device) -> torch.Tensor | None:
        """(1, S, S) or (B, 1, S, S) logits -> (B, 1, S, S) float32, S = 4g."""
        if mask_input is None:
            return None
        mask = upload(torch.as_tensor(mask_input), device, torch.float32)
        if mask.dim() == 3:
            mask = mask[None]
        size = self.heads.sam_prompt_encoder.mask_input_size
        if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != (size, size):
            raise ValueError(
                f"mask_input must be (1, {size}, {size}) or (B, 1, {size}, {size}) low-res logits, "
                f"got {tuple(torch.as_tensor(mask_input).shape)}"
            )
        return mask


def _resize(masks: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, K, s, s) logits -> (B, K, H, W), bilinear. The K masks go through ``F.interpolate`` as a batch of
    one-channel maps, (B*K, 1, s, s), which its CPU kernel runs about twice as fast as K channels (same
    values to ~1e-6, identical thresholded masks)."""
    b, k, s1, s2 = masks.shape
    out = F.interpolate(masks.reshape(b * k, 1, s1, s2), hw, mode="bilinear", align_corners=False)
    return out.reshape(b, k, *hw)


def _check_hw(orig_hw: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in orig_hw)
    except (TypeError, ValueError):
        raise ValueError(f"orig_hw must be (height, width), got {orig_hw!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"orig_hw must be positive, got {(h, w)}")
    return h, w
