"""The version registry (``sam3.registry``) and one name per meaning across our API and the official one."""

from __future__ import annotations

import ast
import inspect

import pytest

from sam3 import registry


def test_versions_map_to_their_builder_and_checkpoint():
    assert registry.DEFAULT_VERSION == "sam3"
    assert set(registry.MODEL_VERSIONS) == {"sam3", "sam3.1"}
    sam3, sam31 = registry.get_version("sam3"), registry.get_version("sam3.1")
    assert (sam3.hub_repo, sam3.checkpoint_filename) == ("facebook/sam3", "sam3.pt")
    assert (sam31.hub_repo, sam31.checkpoint_filename) == ("facebook/sam3.1", "sam3.1_multiplex.pt")
    assert str(sam31.default_local_path) == "models/sam3.1/sam3.1_multiplex.pt"
    for version in registry.MODEL_VERSIONS.values():
        assert callable(version.load_builder()), version.builder


def test_unknown_version_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model version 'sam4'.*sam3, sam3\.1"):
        registry.get_version("sam4")


def test_build_model_sam3_is_our_video_model():
    from sam3.modeling.sam3_model import Sam3Model

    model = registry.build_model("sam3", preset="tiny", random_weights=True, device="cpu")
    assert isinstance(model, Sam3Model) and model.tracker is not None


def _imported_modules(module) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_official_layer_has_no_import_cycle():
    """``sam3.model_builder`` uses ``sam3.model.sam3_video_predictor``; never the other way round (even lazily)."""
    import sam3.model.sam3_video_predictor as predictor
    import sam3.model_builder as builder

    assert "sam3.model.sam3_video_predictor" in _imported_modules(builder)
    assert "sam3.model_builder" not in _imported_modules(predictor)


def test_one_name_one_meaning_for_builders():
    """Our builders have names of their own; the official names live in the compatibility layer only."""
    import sam3.build as ours
    import sam3.model_builder as official

    assert not hasattr(ours, "build_sam3_image_model") and not hasattr(ours, "build_sam3_video_model")
    assert official.build_sam3_image_model.__module__ == "sam3.model_builder"
    assert inspect.signature(official.build_sam3_image_model).parameters["enable_inst_interactivity"].default is False
    assert inspect.signature(ours.build_image_model).parameters["enable_inst_interactivity"].default is True


def test_official_build_sam3_predictor_picks_by_version():
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor
    from sam3.model_builder import build_sam3_predictor

    predictor31 = build_sam3_predictor(preset="tiny", random_weights=True, device="cpu")  # the default: sam3.1
    assert isinstance(predictor31, Sam3VideoPredictor) and predictor31.model.version == "sam3.1"
    assert predictor31.predictor.engine.multiplex
    with pytest.raises(ValueError, match="Unknown version"):
        build_sam3_predictor(version="sam2")
    predictor = build_sam3_predictor(version="sam3", preset="tiny", random_weights=True, device="cpu")
    assert isinstance(predictor, Sam3VideoPredictor)
