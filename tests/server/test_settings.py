"""Settings come from the environment under the contract's names, with the contract's defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.settings import Settings

CONTRACT_VARIABLES = [
    "SAM_SERVICE_HOST",
    "SAM_SERVICE_PORT",
    "SAM3_CHECKPOINT",
    "SAM3_AUTO_DOWNLOAD",
    "SAM3_DEVICE",
    "SAM3_PRESET",
    "SAM3_RANDOM_WEIGHTS",
    "SAM_MEDIA_ROOTS",
    "SAM_MAX_UPLOAD_MB",
    "SAM_MAX_IMAGE_PIXELS",
    "SAM_MAX_SESSIONS",
    "SAM_SESSION_TTL_S",
    "SAM_CORS_ORIGINS",
]


@pytest.fixture()
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("SAM_", "SAM3_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env here
    return monkeypatch


def test_defaults_match_the_contract(clean_env, tmp_path):
    s = Settings()
    assert (s.host, s.port) == ("127.0.0.1", 8001)
    assert s.checkpoint == "models/sam3/sam3.pt" and s.auto_download is True
    assert s.device is None and s.preset == "sam3" and s.random_weights is False
    assert s.max_upload_mb == 25 and s.max_image_pixels == 40_000_000
    assert s.max_sessions == 4 and s.session_ttl_s == 1800
    assert s.cors_origin_list == ["*"] and s.confidence == 0.5
    assert s.media_root_paths == (tmp_path.resolve(),)


def test_environment_overrides(clean_env, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    clean_env.setenv("SAM_SERVICE_PORT", "9001")
    clean_env.setenv("SAM3_PRESET", "tiny")
    clean_env.setenv("SAM3_RANDOM_WEIGHTS", "true")
    clean_env.setenv("SAM3_DEVICE", "auto")
    clean_env.setenv("SAM_MEDIA_ROOTS", f"{a}:{b}")
    clean_env.setenv("SAM_CORS_ORIGINS", "http://localhost:5173, http://localhost:8000")
    s = Settings()
    assert s.port == 9001 and s.preset == "tiny" and s.random_weights is True and s.device is None
    assert s.media_root_paths == (a.resolve(), b.resolve())
    assert s.cors_origin_list == ["http://localhost:5173", "http://localhost:8000"]


def test_dotenv_file_is_read(clean_env, tmp_path):
    (tmp_path / ".env").write_text("SAM_MAX_SESSIONS=9\nSAM3_CONFIDENCE=0.25\n")
    s = Settings()
    assert s.max_sessions == 9 and s.confidence == 0.25


def test_bad_values_are_refused(clean_env):
    clean_env.setenv("SAM3_PRESET", "huge")
    with pytest.raises(ValueError, match="SAM3_PRESET"):
        Settings()


def test_env_example_documents_every_setting():
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    aliases = [f.validation_alias for f in Settings.model_fields.values()]
    names = [a if isinstance(a, str) else a.choices[0] for a in aliases]
    for name in set(names) | set(CONTRACT_VARIABLES) | {"SAM_SERVICE_URL"}:
        assert f"\n{name}=" in text, f"{name} missing from .env.example"
