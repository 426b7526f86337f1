"""Box helpers: format conversions, the clamped logit, and boxes around binary masks.

Boxes are (..., 4) tensors. ``cxcywh`` is centre x, centre y, width, height; ``xyxy`` is the
top-left and bottom-right corners. The model works in normalised cxcywh.
"""

from __future__ import annotations

import torch


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Logit of ``x`` (any shape), with x clamped to [0, 1] and both x and 1 - x floored at ``eps``.

    The floor of 1e-3 keeps the box refinement finite for degenerate reference boxes; the
    released model was trained with exactly this clamp, so it must not be tightened.
    """
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) cx, cy, w, h -> (..., 4) x0, y0, x1, y1."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) x0, y0, x1, y1 -> (..., 4) cx, cy, w, h."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes around binary masks: (N, H, W) (bool or numeric, nonzero = inside) -> (N, 4) float xyxy.

    The corners are pixel indices and the maximum is inclusive: a mask holding only pixel (x=3, y=5)
    gives [3, 5, 3, 5]. An empty mask gives [0, 0, 0, 0].
    """
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.float32, device=masks.device)
    inside = masks if masks.dtype == torch.bool else masks != 0  # (a copy of a bool mask costs a pass)
    return boxes_from_projections(inside.any(dim=2), inside.any(dim=1))


def boxes_from_projections(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """:func:`masks_to_boxes` from a mask's projections: rows (N, H) and cols (N, W) bool, which rows and
    columns hold a pixel -> (N, 4) float xyxy (an empty mask gives [0, 0, 0, 0])."""
    h, w = rows.shape[1], cols.shape[1]
    ys = torch.arange(h, device=rows.device)
    xs = torch.arange(w, device=cols.device)
    # Masked min / max: rows or columns without pixels are pushed out of the reduction's way.
    x0 = torch.where(cols, xs, w).amin(dim=1)
    y0 = torch.where(rows, ys, h).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    boxes = torch.stack((x0, y0, x1, y1), dim=1).float()
    empty = ~rows.any(dim=1)
    return boxes.masked_fill(empty[:, None], 0.0)
