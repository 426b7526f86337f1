"""Mask post-processing: connected components, hole filling and sprinkle removal.

Two flavours of clean-up are used by SAM 3 and both live here:

* the video / tracker clean-up (``fill_holes_in_mask_scores``): small background islands become
  foreground with a *small* score (+0.1) and small foreground specks become background (-0.1);
* the click predictor clean-up (``fill_small_components``): small background islands get a
  *large* score (threshold + 10), optional specks get threshold - 10.

Components are 8-connected and every pixel of a component carries the component's area. Labelling
runs in scikit-image on the CPU; the result is moved back to the input's device. The video clean-up on an
accelerator decides with tensor ops where the masks are (:mod:`sam3.ops.small_components`).
"""

from __future__ import annotations

import numpy as np
import torch

from sam3.device import upload
from sam3.ops.small_components import small_components
from skimage.measure import label as _sk_label


# Device types whose video masks are labelled on the host (scikit-image: faster than the min-pool steps on a CPU,
# and nothing to wait for there); on the others the decisions stay on the device.
HOST_LABELLED = frozenset({"cpu"})


def _label_2d(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) bool -> (labels int64, per-pixel component area int64); background has label 0, area 0."""
    labels = _sk_label(binary, connectivity=2).astype(np.int64, copy=False)  # connectivity 2 = 8-neighbours
    counts = np.bincount(labels.ravel())
    counts[0] = 0  # label 0 is "not in any component"
    return labels, counts[labels]


def component_areas(mask: torch.Tensor) -> torch.Tensor:
    """Each pixel's 8-connected component area, on the mask's device (one read, one upload).

    mask: (N, H, W) or (N, 1, H, W), bool or integer (nonzero = inside); each image labelled on its own.
    Returns int64 of the shape and device of ``mask``: the pixel count of the pixel's component (0 outside).
    """
    return upload(label_components(mask)[1].view(mask.shape), mask.device)


def label_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) or (N, 1, H, W) -> host (labels, areas), (N, H, W) int64 each, from one read of the mask: labels
    1..K per image (0 outside every component), areas as :func:`component_areas` gives them."""
    if mask.dim() == 4 and mask.shape[1] == 1:
        planes = mask[:, 0]
    elif mask.dim() == 3:
        planes = mask
    else:
        raise ValueError(f"mask must be (N, H, W) or (N, 1, H, W), got {tuple(mask.shape)}")
    binary = (planes != 0).cpu().numpy()
    labels = np.zeros(binary.shape, dtype=np.int64)
    areas = np.zeros(binary.shape, dtype=np.int64)
    for i in range(binary.shape[0]):
        labels[i], areas[i] = _label_2d(binary[i])
    return torch.from_numpy(labels), torch.from_numpy(areas)


def fill_holes_in_mask_scores(
    mask: torch.Tensor,
    max_area: float,
    fill_holes: bool = True,
    remove_sprinkles: bool = True,
    on_device: bool | None = None,
) -> torch.Tensor:
    """Video / tracker clean-up of mask logits (N, 1, H, W); returns a new tensor of the same shape.

    1. Background components (logit <= 0) of area <= ``max_area`` are set to +0.1.
    2. Then, on the updated mask, foreground components (logit > 0) of area <= min(``max_area``,
       floor(total foreground area / 2)) are set to -0.1; the half-area cap keeps tiny objects whole.

    The official code pads H and W to even sizes before labelling (its GPU labeller works on 2x2
    blocks); zero padding adds no pixel to any component, so labelling the unpadded mask gives the
    same areas. ``on_device`` (None: unless the mask's device type is in :data:`HOST_LABELLED`): decided with
    tensor ops where the mask is (:func:`~sam3.ops.small_components.small_components`, no host round-trip);
    otherwise both labellings run on the host from one read, and the decisions go back in one upload.
    Both give the same result.
    """
    if max_area <= 0 or not (fill_holes or remove_sprinkles):
        return mask
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (N, 1, H, W), got {tuple(mask.shape)}")
    if on_device is None:
        on_device = mask.device.type not in HOST_LABELLED
    decide = _decide_on_device if on_device else _decide_on_host
    holes, specks = decide(mask[:, 0], max_area, fill_holes, remove_sprinkles)
    mask = torch.where(holes[:, None], 0.1, mask)
    return torch.where(specks[:, None], -0.1, mask)


def _decide_on_host(
    logits: torch.Tensor, max_area: float, fill_holes: bool, remove_sprinkles: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) logits -> (holes, specks), (N, H, W) bool each on the logits' device: one read (foreground 1,
    background -1, neither 0: NaN), both labellings on the host (the sprinkles on the mask after the holes were
    filled), one upload."""
    side = ((logits > 0).to(torch.int8) - (logits <= 0).to(torch.int8)).cpu().numpy()
    holes = np.zeros(side.shape, bool)
    specks = np.zeros(side.shape, bool)
    for i, plane in enumerate(side):
        background, foreground = plane < 0, plane > 0
        if fill_holes:
            _, areas = _label_2d(background)
            holes[i] = background & (areas <= max_area)
            foreground = foreground | holes[i]
        if remove_sprinkles:
            limit = min(int(foreground.sum()) // 2, max_area)
            _, areas = _label_2d(foreground)
            specks[i] = foreground & (areas <= limit)
    decided = upload(torch.from_numpy(np.stack([holes, specks])), logits.device)  # (2, N, H, W)
    return decided[0], decided[1]


def _decide_on_device(
    logits: torch.Tensor, max_area: float, fill_holes: bool, remove_sprinkles: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_decide_on_host`'s decisions with tensor ops on the logits' device (nothing read back)."""
    area = int(max_area)  # components have whole areas: area <= max_area is area <= floor(max_area)
    background, foreground = logits <= 0, logits > 0
    holes = small_components(background, area, area) if fill_holes else torch.zeros_like(background)
    foreground = foreground | holes
    if not remove_sprinkles:
        return holes, torch.zeros_like(foreground)
    limit = torch.clamp(foreground.flatten(1).sum(1) // 2, max=area)
    return holes, small_components(foreground, limit, area)


def fill_small_components(
    logits: torch.Tensor,
    max_hole_area: float,
    max_sprinkle_area: float = 0.0,
    threshold: float = 0.0,
) -> torch.Tensor:
    """Click-predictor clean-up of mask logits (B, C, H, W); returns a new tensor.

    Background components (logit <= ``threshold``) of area <= ``max_hole_area`` get
    ``threshold + 10``; then, if ``max_sprinkle_area`` > 0, foreground components (logit > threshold)
    of area <= ``max_sprinkle_area`` get ``threshold - 10``. An area limit <= 0 disables its step.
    """
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, C, H, W), got {tuple(logits.shape)}")
    out = logits.float()
    planes = lambda t: t.flatten(0, 1)  # noqa: E731  every (b, c) map is labelled on its own
    if max_hole_area > 0:
        areas = component_areas(planes(out <= threshold))
        is_hole = (areas > 0) & (areas <= max_hole_area)
        out = torch.where(is_hole.view_as(out), threshold + 10.0, out)
    if max_sprinkle_area > 0:
        areas = component_areas(planes(out > threshold))
        is_speck = (areas > 0) & (areas <= max_sprinkle_area)
        out = torch.where(is_speck.view_as(out), threshold - 10.0, out)
    return out
