"""Strict checkpoint loading: sam3.pt layouts, error messages naming the tensors, locating the file."""

from __future__ import annotations


import pytest
import torch

from sam3 import checkpoint as ck
from sam3.build import build_image_model
from sam3.checkpoint import CheckpointError, CheckpointNotFoundError, resolve_checkpoint


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_image_model(preset="tiny", random_weights=True, device="cpu")
    return {k: v.clone() for k, v in model.state_dict().items()}


def _save(tmp_path, obj, name="sam3.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _assert_same(model, state):
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype, k
        assert torch.equal(loaded[k], v), k


def test_roundtrip_identical(tmp_path, tiny_state):
    path = _save(tmp_path, tiny_state)
    model = build_image_model(checkpoint_path=path, preset="tiny", device="cpu")
    _assert_same(model, tiny_state)
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    assert not model.training


def test_model_wrapper_and_old_prefixes(tmp_path, tiny_state):
    renamed = {
        (
            "sam3_model." + k[len("detector.") :]
            if k.startswith("detector.")
            else "sam2_predictor.model." + k[len("tracker.") :]
        ): v
        for k, v in tiny_state.items()
    }
    for obj in ({"model": tiny_state}, renamed, {"model": renamed}):
        path = _save(tmp_path, obj)
        _assert_same(build_image_model(checkpoint_path=path, preset="tiny", device="cpu"), tiny_state)


def test_official_image_model_layout(tmp_path, tiny_state):
    image_layout = {
        (
            k[len("detector.") :]
            if k.startswith("detector.")
            else "inst_interactive_predictor.model." + k[len("tracker.") :]
        ): v
        for k, v in tiny_state.items()
    }
    path = _save(tmp_path, image_layout)
    _assert_same(build_image_model(checkpoint_path=path, preset="tiny", device="cpu"), tiny_state)


def test_no_tracker_drops_tracker_tensors(tmp_path, tiny_state):
    path = _save(tmp_path, tiny_state)
    model = build_image_model(checkpoint_path=path, preset="tiny", device="cpu", enable_inst_interactivity=False)
    assert model.tracker is None
    keys = set(model.state_dict())
    assert not any(k.startswith("tracker.") or ".sam2_convs." in k for k in keys)
    assert keys == {k for k in tiny_state if not k.startswith("tracker.") and ".sam2_convs." not in k}


def test_missing_tensor_is_named(tmp_path, tiny_state):
    victim = "detector.transformer.decoder.query_embed.weight"
    state = {k: v for k, v in tiny_state.items() if k != victim}
    with pytest.raises(CheckpointError, match=r"1 missing: detector\.transformer\.decoder\.query_embed\.weight"):
        build_image_model(checkpoint_path=_save(tmp_path, state), preset="tiny", device="cpu")


def test_unexpected_tensor_is_named(tmp_path, tiny_state):
    state = dict(tiny_state, **{"detector.not_a_module.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"1 unexpected: detector\.not_a_module\.weight"):
        build_image_model(checkpoint_path=_save(tmp_path, state), preset="tiny", device="cpu")


def test_wrong_shape_is_named(tmp_path, tiny_state):
    victim = "tracker.sam_mask_decoder.iou_token.weight"
    state = dict(tiny_state, **{victim: torch.zeros(2, 7)})
    with pytest.raises(
        CheckpointError,
        match=r"1 with the wrong shape: tracker\.sam_mask_decoder\.iou_token\.weight: "
        r"checkpoint \(2, 7\) vs model \(1, 256\)",
    ):
        build_image_model(checkpoint_path=_save(tmp_path, state), preset="tiny", device="cpu")


def test_many_problems_are_counted(tmp_path, tiny_state):
    state = {k: v for k, v in tiny_state.items() if not k.startswith("detector.transformer.")}
    with pytest.raises(CheckpointError, match=r"\d+ missing: .*\(\+\d+ more\)"):
        build_image_model(checkpoint_path=_save(tmp_path, state), preset="tiny", device="cpu")


def test_not_a_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="expected a dict of tensors"):
        ck.read_state_dict(_save(tmp_path, [1, 2, 3]))


@pytest.fixture
def no_checkpoint_anywhere(tmp_path, monkeypatch):
    """An empty working directory, an empty HF cache, and no models/ under the project."""
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(ck, "PROJECT_ROOT", tmp_path / "project")
    return tmp_path


def test_offline_without_file_gives_one_clear_error(no_checkpoint_anywhere):
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_checkpoint(None, auto_download=False)
    text = str(info.value)
    assert str(no_checkpoint_anywhere / "models" / "sam3" / "sam3.pt") in text
    assert str(no_checkpoint_anywhere / "project" / "models" / "sam3" / "sam3.pt") in text
    assert "SAM3_CHECKPOINT" in text and "facebook/sam3" in text and "disabled" in text
    assert "hf auth login" in text and "SAM3_PRESET=tiny SAM3_RANDOM_WEIGHTS=true" in text


def test_builder_without_weights_raises_the_same_error(no_checkpoint_anywhere):
    with pytest.raises(CheckpointNotFoundError, match="SAM 3 checkpoint not found"):
        build_image_model(preset="tiny", load_from_HF=False, device="cpu")


def test_explicit_missing_path_is_not_replaced_by_a_download(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="given path"):
        resolve_checkpoint(tmp_path / "missing.pt", auto_download=True)


def test_environment_is_not_read(no_checkpoint_anywhere, monkeypatch, tiny_state):
    """SAM3_CHECKPOINT belongs to the service's settings, which pass the path down; the model package reads
    no SAM3_* variable."""
    path = _save(no_checkpoint_anywhere, tiny_state, "weights.pt")
    monkeypatch.setenv("SAM3_CHECKPOINT", str(path))
    with pytest.raises(CheckpointNotFoundError):
        resolve_checkpoint(None, auto_download=False)
    assert resolve_checkpoint(path, auto_download=False) == path


def test_service_path_falls_back_to_the_project_root(no_checkpoint_anywhere, tiny_state):
    project = no_checkpoint_anywhere / "project"
    (project / "models" / "sam3").mkdir(parents=True)
    path = _save(project / "models" / "sam3", tiny_state)
    found = resolve_checkpoint("models/sam3/sam3.pt", auto_download=False, download_missing=True)
    assert found == path


def test_offline_start_fails_fast_when_hf_hub_offline(no_checkpoint_anywhere, monkeypatch, hub_calls):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointNotFoundError, match="HF_HUB_OFFLINE") as info:
        resolve_checkpoint("models/sam3/sam3.pt", auto_download=True, download_missing=True)
    assert hub_calls == {"probes": 0, "downloads": 0}  # not even a probe: no retries to wait for
    assert "SAM3_RANDOM_WEIGHTS=true" in str(info.value)


def test_offline_start_fails_fast_when_the_hub_is_unreachable(no_checkpoint_anywhere, monkeypatch, hub_calls):
    """A closed port on 127.0.0.1 stands for a machine without network: no retries, one clear message."""
    import socket

    import huggingface_hub.constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(CheckpointNotFoundError, match="unreachable") as info:
        resolve_checkpoint("models/sam3/sam3.pt", auto_download=True, download_missing=True)
    assert hub_calls == {"probes": 1, "downloads": 0}  # one probe (bounded by its own timeout), no retries
    assert "hf auth login" in str(info.value) and "SAM3_PRESET=tiny" in str(info.value)


def test_no_import_cycle_between_checkpoint_and_hf_layout():
    """hf_layout is a leaf beside checkpoint: it imports only the shared errors."""
    import ast
    import inspect

    from sam3 import hf_layout

    tree = ast.parse(inspect.getsource(hf_layout))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "sam3.checkpoint" not in imported and "sam3.checkpoint_errors" in imported


def test_half_precision_file_gives_fp32_model(tmp_path, tiny_state):
    half = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in tiny_state.items()}
    model = build_image_model(checkpoint_path=_save(tmp_path, half), preset="tiny", device="cpu")
    loaded = model.state_dict()
    for k, v in half.items():
        assert loaded[k].dtype == tiny_state[k].dtype, k
        assert torch.equal(loaded[k], v.to(tiny_state[k].dtype)), k


def test_wrong_dtype_kind_is_named(tmp_path, tiny_state):
    victim = "detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis"
    state = dict(tiny_state, **{victim: torch.zeros(tiny_state[victim].shape)})  # real, not complex
    with pytest.raises(CheckpointError, match=r"1 with the wrong dtype: .*blocks\.0\.attn\.freqs_cis"):
        build_image_model(checkpoint_path=_save(tmp_path, state), preset="tiny", device="cpu")
