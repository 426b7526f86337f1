"""Comparison rows of the parity harness: one tensor (or mask) against its official counterpart, and the table.

Tolerance for tensors: ``max|ours - official| <= RTOL * max(1, max|official|)``; binary masks may differ only
where the official probability is within ``MASK_BAND`` of 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

RTOL = 1e-4  # max|ours - official| <= RTOL * max(1, max|official|)
MASK_BAND = 1e-3  # pixels whose official probability is this close to the threshold may differ


@dataclass
class Row:
    """One comparison: ``diff`` = max|ours - official| (or a count for masks), ``ref`` = max|official|."""

    name: str
    diff: float
    ref: float
    passed: bool
    note: str = ""


def compare(name: str, ours, official, rtol: float = RTOL) -> Row:
    """Tensor comparison with the harness tolerance; shapes must match."""
    if ours is None:
        return Row(name, math.nan, math.nan, False, "missing on our side")
    a = torch.as_tensor(np.asarray(ours) if not torch.is_tensor(ours) else ours).detach().cpu()
    b = torch.as_tensor(np.asarray(official) if not torch.is_tensor(official) else official).detach().cpu()
    if tuple(a.shape) != tuple(b.shape):
        return Row(name, math.nan, math.nan, False, f"shape {tuple(a.shape)} vs official {tuple(b.shape)}")
    if b.dtype == torch.bool or not b.is_floating_point():
        same = torch.equal(a.to(b.dtype), b)
        n = int((a.to(b.dtype) != b).sum()) if b.numel() else 0
        return Row(name, float(n), float(b.numel()), same, "exact" if same else f"{n} elements differ")
    a, b = a.double(), b.double()
    if b.numel() == 0:
        return Row(name, 0.0, 0.0, True, "empty")
    if not torch.isfinite(a).all():
        return Row(name, math.inf, float(b.abs().max()), False, "non-finite values on our side")
    diff, ref = float((a - b).abs().max()), float(b.abs().max())
    return Row(name, diff, ref, diff <= rtol * max(1.0, ref))


def compare_masks(name: str, ours, official, official_prob) -> Row:
    """Binary masks: identical except where the official probability is within MASK_BAND of 0.5."""
    a = torch.as_tensor(np.asarray(ours)).bool() if not torch.is_tensor(ours) else ours.bool()
    b = torch.as_tensor(np.asarray(official)).bool() if not torch.is_tensor(official) else official.bool()
    if tuple(a.shape) != tuple(b.shape):
        return Row(name, math.nan, math.nan, False, f"shape {tuple(a.shape)} vs official {tuple(b.shape)}")
    band = (official_prob.double() - 0.5).abs() <= MASK_BAND
    bad = int(((a != b) & ~band).sum())
    near = int(((a != b) & band).sum())
    return Row(name, float(bad), float(b.numel()), bad == 0, f"{near} differing pixels inside the band")


def table(rows: list[Row], only_failures: bool = False) -> str:
    """The parity table: tensor, max abs diff, max abs official, pass."""
    shown = [r for r in rows if not (only_failures and r.passed)]
    width = max([len(r.name) for r in shown] + [6])
    lines = [f"{'tensor':<{width}}  {'max|diff|':>11}  {'max|official|':>13}  pass  note"]
    for r in shown:
        lines.append(f"{r.name:<{width}}  {r.diff:>11.3e}  {r.ref:>13.4g}  {'ok' if r.passed else 'FAIL':<4}  {r.note}")
    return "\n".join(lines)
