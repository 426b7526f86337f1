"""What the checkpoint modules share: the state-dict type, their errors and how they list tensor names.

A leaf module (imports nothing of ``sam3``), so that ``sam3.checkpoint`` can import ``sam3.hf_layout`` and
both can raise the same errors without an import cycle.
"""

from __future__ import annotations

import torch

StateDict = dict[str, torch.Tensor]


class CheckpointError(RuntimeError):
    """The checkpoint does not fit the model (the message names the tensors)."""


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint could be found or downloaded (the message lists what was tried and the ways out)."""


def head(names: list[str], n: int = 5) -> str:
    """The first ``n`` names, comma-separated, with a count of the rest."""
    more = f", ... (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more
