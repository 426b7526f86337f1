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
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from sam3.checkpoint_errors import CheckpointError, CheckpointNotFoundError, StateDict
from sam3.checkpoint_errors import head as _head
from sam3 import hf_layout
from sam3.registry import SAM3, ModelVersion

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# How long the reachability check of the Hub may take before an offline start gives up (seconds).
HUB_PROBE_TIMEOUT_S = 3.0

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "StateDict",
    "check_state_dict",
    "load_checkpoint",
    "load_state_dict_strict",
    "normalize_state_dict",
    "read_state_dict",
    "resolve_checkpoint",
]


# --------------------------------------------------------------------------------------------------
# Locating the file (the one lookup: the builders and the service both call resolve_checkpoint)
# --------------------------------------------------------------------------------------------------


def resolve_checkpoint(
    path: str | os.PathLike | None = None,
    auto_download: bool = True,
    *,
    download_missing: bool = False,
    version: ModelVersion | None = None,
) -> Path:
    """Return the path of a ``sam3.pt`` (or ``model.safetensors``) file. Reads no environment variable:
    the caller passes its settings (the service: ``SAM3_CHECKPOINT`` and ``SAM3_AUTO_DOWNLOAD``).

    * ``path`` given and ``download_missing`` False (the builders): that file must exist; it is never
      replaced by a download.
    * ``path`` given and ``download_missing`` True (the service: the path says where the file belongs):
      ``path``, then the same relative path under the project root, then the Hugging Face cache, then, if
      ``auto_download``, a download of ``facebook/sam3`` into ``path``'s folder.
    * no ``path``: ``./models/sam3/sam3.pt``, the same under the project root, the Hugging Face cache, then,
      if ``auto_download``, a download into that cache.

    An offline machine fails fast: ``HF_HUB_OFFLINE=1`` or an unreachable Hub (a
    ``HUB_PROBE_TIMEOUT_S`` check) skips the download instead of retrying it for half a minute.
    ``version`` (:mod:`sam3.registry`; default SAM 3) names the released file, its Hub repository and its
    default folder (``models/<version>/``).
    Raises ``CheckpointNotFoundError`` listing everything tried and both ways out (the real weights, or
    random weights at the tiny preset for development).
    """
    version = version if version is not None else SAM3
    repo, default_path = version.hub_repo, version.default_local_path
    given = Path(path).expanduser() if path is not None else None
    if given is not None and given.is_file():
        return given
    if given is not None and not download_missing:
        raise CheckpointNotFoundError(_not_found_message([f"{given} (given path: no such file)"], given, version))

    candidates = [given] if given is not None else [Path.cwd() / default_path]
    relative = given if given is not None else default_path
    if not relative.is_absolute() and (PROJECT_ROOT / relative).resolve() != candidates[0].resolve():
        candidates.append(PROJECT_ROOT / relative)
    tried = []
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        tried.append(f"{candidate} (no such file)")

    filename = given.name if given is not None and given.name in version.hub_filenames else version.checkpoint_filename
    target = (given if given is not None else Path.cwd() / default_path).absolute()
    try:
        from huggingface_hub import constants as hf_constants
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub is a declared dependency
        tried.append(f"Hugging Face {repo}/{filename} (huggingface_hub not installed)")
        raise CheckpointNotFoundError(_not_found_message(tried, target, version)) from None

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any failure means "not in the cache"
        tried.append(f"the Hugging Face cache for {repo}/{filename} ({type(exc).__name__})")

    if not auto_download:
        tried.append(f"download from {repo} (disabled: SAM3_AUTO_DOWNLOAD=false / load_from_HF=False)")
        raise CheckpointNotFoundError(_not_found_message(tried, target, version))
    if hf_constants.HF_HUB_OFFLINE:
        tried.append(f"download from {repo} (skipped: HF_HUB_OFFLINE is set)")
        raise CheckpointNotFoundError(_not_found_message(tried, target, version))
    unreachable = hub_unreachable(hf_constants.ENDPOINT)
    if unreachable:
        tried.append(f"download from {repo} (skipped: {unreachable})")
        raise CheckpointNotFoundError(_not_found_message(tried, target, version))

    local_dir = str(given.parent) if given is not None else None
    log.info(
        "checkpoint not found locally: downloading %s/%s%s",
        repo,
        filename,
        f" into {local_dir}" if local_dir else " into the Hugging Face cache",
    )
    try:
        return Path(hf_hub_download(repo, filename, local_dir=local_dir))
    except Exception as exc:  # a gated repo without a token, a network failure mid-way, ...
        tried.append(f"download from {repo} ({type(exc).__name__}: {_first_line(exc)})")
        raise CheckpointNotFoundError(_not_found_message(tried, target, version)) from exc


def hub_unreachable(endpoint: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the Hub's host opens within ``timeout_s``, else why not.

    The name lookup runs in a daemon thread, because ``getaddrinfo`` itself has no timeout.
    """
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port} is unreachable: {exc.strerror or exc}")

    thread = threading.Thread(target=probe, name="hf-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return outcome[0] if outcome else f"{host}:{port} did not answer within {timeout_s:g} s"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _not_found_message(tried: list[str], target: Path, version: ModelVersion = SAM3) -> str:
    """The first line alone says what is wrong and both ways out (``/health`` shows only that line)."""
    lines = "\n".join(f"  - {t}" for t in tried)
    label = "SAM 3" if version is SAM3 else f"SAM {version.name.removeprefix('sam')}"
    return (
        f"{label} checkpoint not found ({tried[-1]}). Either place '{version.checkpoint_filename}' from "
        f"{version.hub_repo} at "
        f"{target} (or set SAM3_CHECKPOINT), or accept the licence of the gated repo on the Hub and run "
        f"`hf auth login` so that it downloads; for development without weights set "
        f"SAM3_PRESET=tiny SAM3_RANDOM_WEIGHTS=true (a small random model, meaningless masks).\n"
        f"Tried:\n{lines}\n"
        f"A transformers-layout 'model.safetensors' works too; in Python pass checkpoint_path=... to the builders."
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
        return hf_layout.hf_to_ours(state)
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
        state = hf_layout.fill_hf_absent(model, expected, state)
    check_state_dict(expected, state, source)
    state = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    still_meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if still_meta:
        raise CheckpointError(f"{source}: {len(still_meta)} tensors of the model were not loaded: {_head(still_meta)}")


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
