"""Finding and loading SAM 3 weights: Meta's ``sam3.pt`` and the transformers ``model.safetensors``.

Our module names are the ``sam3.pt`` names, so loading ``sam3.pt`` is an identity mapping. Two other
layouts are accepted:

* older prefixes (``sam3_model.`` / ``sam2_predictor.model.``) and the official image model's view
  (``inst_interactive_predictor.model.``): one prefix table, ``_PREFIX_ALIASES``;
* the transformers layout (``detector_model.`` / ``tracker_model.`` / ``tracker_neck.``): one renaming
  table in ``sam3.hf_layout``, used in both directions.

Loading is strict: a missing, unexpected or wrong-shaped tensor raises ``CheckpointError`` naming the
tensors. Files are read with ``weights_only=True`` on the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

HF_REPO_ID = "facebook/sam3"
CHECKPOINT_FILENAME = "sam3.pt"
ENV_CHECKPOINT = "SAM3_CHECKPOINT"
DEFAULT_LOCAL_PATH = Path("models") / "sam3" / CHECKPOINT_FILENAME

StateDict = dict[str, torch.Tensor]


class CheckpointError(RuntimeError):
    """The checkpoint does not fit the model (the message names the tensors)."""


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint could be found or downloaded (the message lists what was tried)."""


# --------------------------------------------------------------------------------------------------
# Locating the file
# --------------------------------------------------------------------------------------------------


def _local_candidates() -> list[Path]:
    """Where a checkpoint is looked for when no path is given, in order."""
    found = []
    env = os.environ.get(ENV_CHECKPOINT)
    if env:
        found.append(Path(env).expanduser())
    found.append(Path.cwd() / DEFAULT_LOCAL_PATH)
    project_root = Path(__file__).resolve().parent.parent
    if project_root != Path.cwd():
        found.append(project_root / DEFAULT_LOCAL_PATH)
    return found


def resolve_checkpoint(path: str | os.PathLike | None = None, auto_download: bool = True) -> Path:
    """Return the path of a ``sam3.pt`` (or ``.safetensors``) file.

    An explicit ``path`` must exist (it is never replaced by a download). Without one: ``$SAM3_CHECKPOINT``,
    ``./models/sam3/sam3.pt``, the same under the project root, the Hugging Face cache, and finally, if
    ``auto_download``, a download of ``facebook/sam3`` into that cache. Raises ``CheckpointNotFoundError``
    listing everything tried and how to provide the file.
    """
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        raise CheckpointNotFoundError(_not_found_message([f"{p} (given path: no such file)"]))

    tried = []
    for p in _local_candidates():
        if p.is_file():
            return p
        tried.append(f"{p} (no such file)")

    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub is a declared dependency
        tried.append(f"Hugging Face {HF_REPO_ID}/{CHECKPOINT_FILENAME} (huggingface_hub not installed)")
        raise CheckpointNotFoundError(_not_found_message(tried)) from None

    try:
        return Path(hf_hub_download(HF_REPO_ID, CHECKPOINT_FILENAME, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any failure means "not in the cache"
        tried.append(f"Hugging Face cache for {HF_REPO_ID}/{CHECKPOINT_FILENAME} ({type(exc).__name__})")

    if not auto_download:
        tried.append(f"download from {HF_REPO_ID} (disabled: load_from_HF / auto_download is False)")
        raise CheckpointNotFoundError(_not_found_message(tried))
    try:
        return Path(hf_hub_download(HF_REPO_ID, CHECKPOINT_FILENAME))
    except Exception as exc:  # offline, a gated repo without a token, ...
        tried.append(f"download from {HF_REPO_ID} ({type(exc).__name__}: {_first_line(exc)})")
        raise CheckpointNotFoundError(_not_found_message(tried)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _not_found_message(tried: list[str]) -> str:
    lines = "\n".join(f"  - {t}" for t in tried)
    return (
        f"SAM 3 checkpoint not found. Tried:\n{lines}\n"
        f"Provide it by passing checkpoint_path=..., setting {ENV_CHECKPOINT}=/path/to/sam3.pt, or placing "
        f"the file at {DEFAULT_LOCAL_PATH}. It is '{CHECKPOINT_FILENAME}' from the Hugging Face repo "
        f"{HF_REPO_ID} (gated: accept the licence and run `huggingface-cli login` to allow the download)."
    )


# --------------------------------------------------------------------------------------------------
# Reading and normalising a state dict
# --------------------------------------------------------------------------------------------------

# Older or alternative top-level prefixes -> ours. The official image model stores the detector
# without a prefix; its top-level names are listed so that layout maps too.
_PREFIX_ALIASES: tuple[tuple[str, str], ...] = (
    ("sam3_model.", "detector."),
    ("sam2_predictor.model.", "tracker."),
    ("inst_interactive_predictor.model.", "tracker."),
    ("backbone.", "detector.backbone."),
    ("geometry_encoder.", "detector.geometry_encoder."),
    ("transformer.", "detector.transformer."),
    ("segmentation_head.", "detector.segmentation_head."),
    ("dot_prod_scoring.", "detector.dot_prod_scoring."),
)
_HF_PREFIXES = ("detector_model.", "tracker_model.", "tracker_neck.")
_TRACKER_ONLY = ("tracker.", "detector.backbone.vision_backbone.sam2_convs.")


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a checkpoint file into our (``sam3.pt``) naming, on the CPU, without loading it anywhere.

    Transformers-layout files are renamed with ``hf_to_ours``; older prefixes with ``_PREFIX_ALIASES``.
    """
    return normalize_state_dict(_read_raw(Path(path)))


def _read_raw(path: Path) -> dict[str, torch.Tensor]:
    """``.safetensors`` via safetensors, anything else via ``torch.load(weights_only=True)`` (memory-mapped
    when the file allows it, so a 3.4 GB checkpoint is not held twice); unwraps a top-level ``"model"``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(path), device="cpu")
    else:
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping):
            raw = raw["model"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(raw).__name__}")
    return dict(raw)


def is_hf_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(_HF_PREFIXES) for k in state)


def normalize_state_dict(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Map any accepted layout to our names (identity for ``sam3.pt``)."""
    if is_hf_layout(state):
        from sam3.hf_layout import hf_to_ours  # (hf_layout imports this module)

        return hf_to_ours(state)
    out: StateDict = {}
    for key, value in state.items():
        if not key.startswith(("detector.", "tracker.")):
            for old, new in _PREFIX_ALIASES:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
        if key in out:
            raise CheckpointError(f"two checkpoint tensors map to the same name {key!r}")
        out[key] = value
    return out


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load ``path`` into ``model`` strictly, assigning the checkpoint tensors (works on a meta model).

    Tracker tensors (``tracker.*``, ``sam2_convs``) are dropped when the model has no tracker. For a
    transformers-layout file, the tensors that layout cannot carry are filled in (``sam3.hf_layout.fill_hf_absent``).
    """
    raw = _read_raw(Path(path))
    hf = is_hf_layout(raw)
    load_state_dict_strict(model, normalize_state_dict(raw), source=str(path), fill_hf_absent=hf)


def load_state_dict_strict(
    model: nn.Module, state: StateDict, source: str = "checkpoint", fill_hf_absent: bool = False
) -> None:
    """Check names, shapes and dtypes, then ``load_state_dict(strict=True, assign=True)``.

    Floating-point tensors are cast to the model's dtype (a bf16 or fp16 file gives an fp32 model).
    Raises ``CheckpointError`` listing the first few missing / unexpected / wrong-shaped tensors with
    their counts. After loading, no parameter or buffer may remain on the meta device.
    """
    if getattr(model, "tracker", "absent") is None:
        state = {k: v for k, v in state.items() if not k.startswith(_TRACKER_ONLY)}
    expected = model.state_dict()
    if fill_hf_absent:
        from sam3.hf_layout import fill_hf_absent as _fill

        state = _fill(model, expected, state)
    check_state_dict(expected, state, source)
    state = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    still_meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if still_meta:
        raise CheckpointError(
            f"{source}: {len(still_meta)} tensors of the model were not loaded: {_head(still_meta)}"
        )


def check_state_dict(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise ``CheckpointError`` unless ``state`` has exactly the names and shapes of ``expected`` and
    dtypes of the same kind (real floating point vs complex)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    common = sorted(set(state) & set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in common
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    kind = lambda t: "complex" if t.is_complex() else ("float" if t.is_floating_point() else str(t.dtype))
    wrong_kind = [
        f"{k}: checkpoint {state[k].dtype} vs model {expected[k].dtype}"
        for k in common
        if kind(state[k]) != kind(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_head(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_head(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape: {_head(wrong)}")
    if wrong_kind:
        problems.append(f"{len(wrong_kind)} with the wrong dtype: {_head(wrong_kind)}")
    if problems:
        raise CheckpointError(f"{source} does not match the model:\n  " + "\n  ".join(problems))


def _head(names: list[str], n: int = 5) -> str:
    more = f", ... (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more
