"""In-process fixtures: the real app on the tiny preset with random weights, driven by Starlette's TestClient.

One app (and one tiny model) serves the whole module set; tests that need other settings build their own
app (model-not-loaded apps cost nothing to build).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from server.main import create_app
from server.settings import Settings

# Small limits so the limit tests send small bodies.
TEST_LIMITS = dict(max_upload_mb=2.0, max_image_pixels=4_000_000, max_text_length=200, max_points=16)


# Torch keeps its CPU thread count per calling thread, and the worker threads that run model calls are shared by
# every app of this process: an app started with num_threads=1 would leave its workers at 1 thread for the next
# app, whose fp32 sums would then differ in the last bit from a reference's. Every test app therefore states it.
DEFAULT_THREADS = torch.get_num_threads()


def tiny_settings(**overrides) -> Settings:
    values = dict(
        num_threads=DEFAULT_THREADS,
        preset="tiny",
        random_weights=True,
        device="cpu",
        load_in_background=False,
        auto_download=False,
        image_cache_mb=256,
        warmup=False,  # the warm-up has its own test (test_precision.py); elsewhere it only slows the start
        **TEST_LIMITS,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def media_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def client(media_root: Path) -> Iterator[TestClient]:
    """The real app (tiny model, random weights) with its lifespan running."""
    app = create_app(tiny_settings(media_roots=str(media_root), max_sessions=2))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        health = test_client.get("/health").json()
        assert health["model_loaded"], f"tiny model failed to load: {health['error']}"
        yield test_client


@pytest.fixture()
def unloaded_client(tmp_path: Path) -> Iterator[TestClient]:
    """An app whose model cannot load: no checkpoint and no download allowed."""
    settings = tiny_settings(
        random_weights=False, checkpoint=str(tmp_path / "missing" / "sam3.pt"), media_roots=str(tmp_path)
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client
