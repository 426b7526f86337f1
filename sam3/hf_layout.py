"""The transformers layout of SAM 3 (``model.safetensors``): one renaming table, both directions.

Keys there are prefixed ``detector_model.`` / ``tracker_model.`` / ``tracker_neck.``; fused q/k/v tensors are
split, the ViT position table has no cls slot, the four point embeddings are one (4, C) table and the
CLIP text projection is transposed. :data:`sam3.hf_rules.HF_RULES` lists every rule with the tensor
operation it needs; ``ours_to_hf`` / ``hf_to_ours`` here apply it in either direction.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping

import torch
from torch import nn

from sam3.checkpoint_errors import CheckpointError, StateDict
from sam3.checkpoint_errors import head as _head
from sam3.hf_rules import (
    DROP_CLS,
    DUPLICATE,
    HF_ABSENT,
    HF_RULES,
    RECOMPUTED,
    SPLIT_QKV,
    STACK,
    TRANSPOSE,
)

log = logging.getLogger(__name__)


_PLACEHOLDERS = {"i": r"\d+", "j": r"\d+", "p": r"weight|bias", "qkv": r"q|k|v"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    out = []
    for n, part in enumerate(parts):
        out.append(f"(?P<{part}>{_PLACEHOLDERS[part]})" if n % 2 else re.escape(part))
    return re.compile("^" + "".join(out) + "$")


_OURS_PATTERNS = [(_compile(r.ours), r) for r in HF_RULES]
_HF_PATTERNS = [(_compile(h), r) for r in HF_RULES for h in r.hf]


def _fill(template: str, fields: Mapping[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: fields[m.group(1)], template)


def _match(patterns, key: str):
    for pattern, rule in patterns:
        m = pattern.match(key)
        if m:
            return rule, m.groupdict()
    return None, None


def ours_to_hf(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Our (``sam3.pt``) names -> the transformers ``Sam3VideoModel`` layout.

    RoPE tables are dropped (HF recomputes them), and so are the detector's point-prompt projections
    (HF has none). Raises ``CheckpointError`` naming any tensor no rule covers.
    """
    out: StateDict = {}
    stacks: dict[str, dict[int, torch.Tensor]] = {}
    unknown = []
    for key, t in state.items():
        rule, f = _match(_OURS_PATTERNS, key)
        if rule is None:
            unknown.append(key)
            continue
        if rule.op in (RECOMPUTED, HF_ABSENT):
            continue
        if rule.op == SPLIT_QKV:
            for name, part in zip("qkv", t.chunk(3, dim=0)):
                out[_fill(rule.hf[0], {**f, "qkv": name})] = part.clone()  # own storage (safetensors)
        elif rule.op == STACK:
            stacks.setdefault(_fill(rule.hf[0], f), {})[int(f["j"])] = t
        elif rule.op == DUPLICATE:
            for n, h in enumerate(rule.hf):
                out[_fill(h, f)] = t if n == 0 else t.clone()  # safetensors refuses shared storage
        elif rule.op == DROP_CLS:
            out[_fill(rule.hf[0], f)] = t[:, 1:].clone()
        elif rule.op == TRANSPOSE:
            out[_fill(rule.hf[0], f)] = t.t().contiguous()
        else:
            out[_fill(rule.hf[0], f)] = t
    if unknown:
        raise CheckpointError(f"{len(unknown)} tensors have no transformers name: {_head(sorted(unknown))}")
    for key, parts in stacks.items():
        out[key] = torch.cat([parts[j] for j in sorted(parts)], dim=0)
    return out


def hf_to_ours(state: Mapping[str, torch.Tensor]) -> StateDict:
    """The transformers layout -> our names (the inverse of ``ours_to_hf``).

    The ViT position table gets back its (unused) cls slot as zeros. RoPE tables and the point-prompt
    projections are absent; ``load_state_dict_strict`` fills them (see ``fill_hf_absent``).
    Raises ``CheckpointError`` naming any tensor no rule covers or an incomplete q/k/v triple.
    """
    out: StateDict = {}
    triples: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, t in state.items():
        rule, f = _match(_HF_PATTERNS, key)
        if rule is None:
            unknown.append(key)
            continue
        ours = _fill(rule.ours, {**f, "j": "{j}"}) if rule.op == STACK else _fill(rule.ours, f)
        if rule.op == SPLIT_QKV:
            triples.setdefault(ours, {})[f["qkv"]] = t
        elif rule.op == STACK:
            for j in range(t.shape[0]):
                out[ours.replace("{j}", str(j))] = t[j : j + 1].clone()
        elif rule.op == DUPLICATE:
            if ours in out and not t.is_meta and not torch.equal(out[ours], t):
                raise CheckpointError(f"the two HF copies of {ours} differ: {', '.join(rule.hf)}")
            out[ours] = t
        elif rule.op == DROP_CLS:
            out[ours] = torch.cat([t.new_zeros(t.shape[0], 1, t.shape[2]), t], dim=1)
        elif rule.op == TRANSPOSE:
            out[ours] = t.t().contiguous()
        else:
            out[ours] = t
    if unknown:
        raise CheckpointError(f"{len(unknown)} transformers tensors have no SAM 3 name: {_head(sorted(unknown))}")
    for ours, parts in triples.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{ours}: the HF file lacks the {sorted({'q', 'k', 'v'} - set(parts))} projection")
        out[ours] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def fill_hf_absent(model: nn.Module, expected: Mapping[str, torch.Tensor], state: StateDict) -> StateDict:
    """Add the tensors a transformers-layout file cannot carry, when (and only when) they are missing.

    RoPE tables are recomputed by the module that owns them; the detector's point-prompt projections
    (used only by detector point prompts, which neither the processor nor the video predictor sends)
    are zero-filled, and a log line says so.
    """
    missing = [k for k in expected if k not in state]
    if not missing:
        return state
    state = dict(state)
    zeroed = []
    for key in missing:
        rule, _ = _match(_OURS_PATTERNS, key)
        if rule is None:
            continue
        ref = expected[key]
        if rule.op == RECOMPUTED:
            state[key] = _recompute_buffer(model, key, ref)
        elif rule.op == HF_ABSENT:
            state[key] = torch.zeros(ref.shape, dtype=ref.dtype)
            zeroed.append(key)
    if zeroed:
        log.info("checkpoint has no %s; set to zero (detector point prompts unavailable)", ", ".join(zeroed))
    return state


def _recompute_buffer(model: nn.Module, key: str, like: torch.Tensor) -> torch.Tensor:
    """A derived buffer absent from the file (the ViT RoPE table), computed on the CPU."""
    from sam3.modeling.vision.rope import axial_rope_table
    from sam3.modeling.vision.vit import RopeAttention

    module_name, _, buffer_name = key.rpartition(".")
    module = model.get_submodule(module_name)
    if buffer_name != "freqs_cis" or not isinstance(module, RopeAttention):
        raise CheckpointError(f"{key} is absent from the checkpoint and cannot be recomputed")
    side = math.isqrt(like.shape[0])  # the table covers a square grid of side x side tokens
    return axial_rope_table(module.head_dim, side, side, module.rope_reference / side, module.rope_theta)
