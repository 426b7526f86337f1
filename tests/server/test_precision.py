"""SAM3_PRECISION / SAM3_COMPILE / SAM3_WARMUP(_OBJECTS) / SAM3_NUM_THREADS / SAM3_LAZY_NECKS in the real app (tiny
preset, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from server.main import create_app
from server.settings import Settings
from tests.server.conftest import tiny_settings
from tests.server.media import decode_mask, encode


def test_auto_resolves_by_the_cpu_and_the_warm_up_runs_in_it(auto_policy, coffee):
    """``auto`` is bf16 on a CPU with native bf16, fp32 elsewhere (both ways on any machine: SAM3_CPU_BF16 states
    the CPU); the warm-up runs in that precision before the model is reported loaded, and both image paths
    answer afterwards."""
    settings = tiny_settings(cpu_bf16=auto_policy.cpu_bf16, warmup=True, num_threads=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        health = client.get("/health").json()
        assert health["model_loaded"], health["error"]
        assert health["precision"] == auto_policy.mode
        assert health["backbone_runs"] == 0  # the warm-up encoded with its own processor
        image = {"image": ("c.jpg", encode(coffee, "JPEG"), "image/jpeg")}
        click = client.post("/predict/mask", files=image, data={"points": json.dumps([[300, 200]])})
        assert click.status_code == 200, click.text
        assert decode_mask(click.content).shape == coffee.shape[:2]
        detect = client.post("/detect", files=image, data={"text": "a cup", "confidence": "0.0"})
        assert detect.status_code == 200 and detect.json()["count"] > 0, detect.text


def test_a_stated_cpu_is_a_setting(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAM3_CPU_BF16", "Native")
    assert Settings().cpu_bf16 == "native"
    monkeypatch.setenv("SAM3_CPU_BF16", "avx")
    with pytest.raises(ValueError, match="SAM3_CPU_BF16"):
        Settings()


def test_int8_app_serves_clicks_and_text(coffee):
    """int8 on the CPU: the large linears are quantised, the warm-up ran, both image paths answer."""
    settings = tiny_settings(precision="int8", warmup=True, num_threads=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        health = client.get("/health").json()
        assert health["model_loaded"], health["error"]
        assert health["precision"] == "int8" and health["backbone_runs"] == 0  # warm-up uses its own processor
        image = {"image": ("c.jpg", encode(coffee, "JPEG"), "image/jpeg")}
        click = client.post("/predict/mask", files=image, data={"points": json.dumps([[300, 200]])})
        assert click.status_code == 200, click.text
        assert decode_mask(click.content).shape == coffee.shape[:2]
        detect = client.post("/detect", files=image, data={"text": "a cup", "confidence": "0.0"})
        assert detect.status_code == 200, detect.text
        assert detect.json()["count"] > 0


def test_lazy_necks_switch_gives_the_same_answers(coffee):
    """SAM3_LAZY_NECKS: necks made on first use (default) or at encode time answer with the same bytes."""
    image = {"image": ("c.jpg", encode(coffee, "JPEG"), "image/jpeg")}
    answers = []
    for lazy in (True, False):
        with TestClient(create_app(tiny_settings(lazy_necks=lazy)), raise_server_exceptions=False) as client:
            click = client.post("/predict/mask", files=image, data={"points": json.dumps([[300, 200]])})
            detect = client.post("/detect", files=image, data={"text": "a cup", "confidence": "0.0"})
            assert click.status_code == detect.status_code == 200, (click.text, detect.text)
            assert client.get("/health").json()["backbone_runs"] == 1  # the click's encoding served /detect
            answers.append((click.content, detect.json()["count"], detect.json()["objects"]))
    assert answers[0] == answers[1] and answers[0][1] > 0


def test_bf16_app_serves_clicks():
    """bf16 autocast on the CPU (emulated on AVX2: slow but correct): the answer is a valid mask."""
    import numpy as np

    image = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    with TestClient(create_app(tiny_settings(precision="bf16", warmup=False)), raise_server_exceptions=False) as client:
        assert client.get("/health").json()["precision"] == "bf16"
        response = client.post(
            "/predict/mask", files={"image": ("r.png", encode(image, "PNG"), "image/png")},
            data={"points": "[[64, 48]]", "multimask": "true"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        assert len(response.json()["masks"]) == 3


def test_a_precision_the_device_cannot_run_leaves_the_service_up_saying_why():
    with TestClient(create_app(tiny_settings(device="cpu", precision="int8", warmup=False))) as ok:
        assert ok.get("/health").json()["model_loaded"] is True
    if torch.cuda.is_available():  # int8 on CUDA is refused with the reason in /health
        with TestClient(create_app(tiny_settings(device="cuda", precision="int8"))) as client:
            body = client.get("/health").json()
            assert body["model_loaded"] is False and "CPU only" in body["error"]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, ("auto", False, True, None, 16)),
        ({"SAM3_PRECISION": "INT8", "SAM3_COMPILE": "true", "SAM3_WARMUP": "false", "SAM3_NUM_THREADS": "3",
          "SAM3_WARMUP_OBJECTS": "4"},
         ("int8", True, False, 3, 4)),
        ({"SAM3_PRECISION": "", "SAM3_NUM_THREADS": ""}, ("auto", False, True, None, 16)),
    ],
)  # fmt: skip
def test_settings_from_the_environment(monkeypatch, tmp_path, env, expected):
    monkeypatch.chdir(tmp_path)
    for name in ("SAM3_PRECISION", "SAM3_COMPILE", "SAM3_WARMUP", "SAM3_NUM_THREADS", "SAM3_WARMUP_OBJECTS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert (s.precision, s.compile, s.warmup, s.num_threads, s.warmup_objects) == expected


@pytest.mark.parametrize(
    "name, value", [("SAM3_PRECISION", "int4"), ("SAM3_NUM_THREADS", "-2"), ("SAM3_WARMUP_OBJECTS", "-1")]
)
def test_bad_values_are_refused(monkeypatch, tmp_path, name, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Settings()


@pytest.mark.parametrize("compile_, bucket", [(False, False), (True, True)])
def test_a_compiled_frame_step_tracks_objects_in_buckets_on_every_device(tmp_path, compile_, bucket):
    """SAM3_COMPILE pads a frame's tracked objects to 1, 2, 4, ... also on a CPU (the shapes the video warm-up
    compiled); without it a CPU tracks the objects unpadded (padding only adds work there)."""
    from PIL import Image

    for t in range(2):
        Image.new("RGB", (64, 48), (40 * t, 90, 160)).save(tmp_path / f"{t:03d}.jpg")
    settings = tiny_settings(compile=compile_, warmup=False, media_roots=str(tmp_path))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/track/start", json={"video_path": str(tmp_path)}).status_code == 200
        assert client.app.state.tracking.predictor.engine.runner.bucket is bucket
