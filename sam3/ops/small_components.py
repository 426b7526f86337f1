"""Which pixels lie in small 8-connected components, decided where the masks are (no host round-trip).

The host labeller (scikit-image, :mod:`sam3.ops.masks`) needs the masks on the host: on an accelerator a
device-to-host read and an upload in the middle of every video frame. This answers the one question the video
clean-up asks (is this pixel's component at most ``limit`` pixels?) with tensor operations only, exactly:

1. every pixel of the class starts with its own label (its raster index + 1); ``max_area - 1`` times, each pixel
   takes the smallest label of itself and its 8 neighbours of the class (a min-pool). A component of at most
   ``max_area`` pixels is at most ``max_area - 1`` steps across, so after that every such component carries one
   label (its smallest pixel's);
2. a label is *closed* when no pixel holding it touches a pixel of the class holding another label. A closed label
   is held by exactly one whole component (labels spread only inside a component, and a closed set of its pixels
   is all of it), so its pixel count is that component's area. A label that is not closed belongs to a component
   that did not settle, hence of more than ``max_area`` pixels: never small.

Cost: ``max_area - 1`` min-pools of the masks (15 at the video's hole area of 16), then two histograms. Labels are
float32 (exact up to 2**24 pixels a plane), so the pooling runs on every device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_PIXELS = 1 << 24  # float32 holds every label exactly below this


def small_components(binary: torch.Tensor, limit: torch.Tensor | float, max_area: int) -> torch.Tensor:
    """Pixels of 8-connected components of at most ``limit`` pixels.

    binary:   (P, H, W) bool, the class (each plane labelled on its own).
    limit:    a number, or (P,) per plane; at most ``max_area`` (a larger limit is not decided exactly).
    max_area: the largest limit asked for; sets the number of min-pool steps (``max_area - 1``).
    Returns (P, H, W) bool: in the class and in a component of area <= ``limit``. Same as labelling with
    scikit-image (connectivity 2) and comparing each component's area (``tests/ops/test_small_components.py``).
    """
    if binary.dim() != 3:
        raise ValueError(f"binary must be (P, H, W), got {tuple(binary.shape)}")
    p, h, w = binary.shape
    hw = h * w
    if hw >= MAX_PIXELS:
        raise ValueError(f"a {h}x{w} plane has more pixels than float32 labels can tell apart ({MAX_PIXELS})")
    outside = -float(hw + 1)  # below every negated label: max pooling never picks it
    inside = binary[:, None]  # (P, 1, H, W)
    labels = torch.arange(1, hw + 1, device=binary.device, dtype=torch.float32).view(1, 1, h, w)
    neg = torch.where(inside, -labels, outside)  # negated labels: a max-pool takes the smallest label around
    for _ in range(max(int(max_area) - 1, 0)):
        neg = torch.where(inside, F.max_pool2d(neg, 3, stride=1, padding=1), outside)
    smallest = F.max_pool2d(neg, 3, stride=1, padding=1)  # the smallest label of the class around (negated)
    largest = F.max_pool2d(torch.where(inside, -neg, 0.0), 3, stride=1, padding=1)  # and the largest
    unsettled = inside & ((smallest != neg) | (largest != -neg))
    index = torch.where(inside, -neg, 0.0).long().view(p, hw)  # 0: outside the class
    ones = inside.view(p, hw).to(torch.int32)
    area = torch.zeros(p, hw + 1, dtype=torch.int32, device=binary.device).scatter_add_(1, index, ones)
    open_ = torch.zeros_like(area).scatter_add_(1, index, unsettled.view(p, hw).to(torch.int32))
    limit = torch.as_tensor(limit, device=binary.device).reshape(-1, 1)
    small = (open_.gather(1, index) == 0) & (area.gather(1, index) <= limit)
    return binary & small.view(p, h, w)
