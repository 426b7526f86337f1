#!/usr/bin/env bash
# Start the SAM 3 service: ./run_sam.sh
#
# On first use it creates .venv and installs this project with its server extras. On a Linux machine without
# an NVIDIA GPU it installs the CPU build of torch (about 200 MB instead of about 6 GB of CUDA wheels); set
# TORCH_INDEX_URL to choose the wheel index yourself (e.g. https://download.pytorch.org/whl/cu128).
# Settings come from the environment or a .env file (see .env.example); the bind address from
# SAM_SERVICE_HOST / SAM_SERVICE_PORT (default 127.0.0.1:8001; use SAM_SERVICE_HOST=0.0.0.0 only inside a
# container). Videos for /track/start are read from SAM_MEDIA_ROOTS, by default the folder you ran this
# script from (the service logs the allowed folders at start-up).
set -euo pipefail
LAUNCH_DIR="$PWD"
cd "$(dirname "$0")"

# Ops that MPS (Apple Silicon) lacks fall back to the CPU instead of failing.
export PYTORCH_ENABLE_MPS_FALLBACK=1

# Read the bind address and the media roots from .env when the environment does not set them (the app
# reads the rest itself).
if [[ -f .env ]]; then
    env_value() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" .env | tail -n 1 | tr -d "\"'"; }
    : "${SAM_SERVICE_HOST:=$(env_value SAM_SERVICE_HOST)}"
    : "${SAM_SERVICE_PORT:=$(env_value SAM_SERVICE_PORT)}"
    : "${SAM_MEDIA_ROOTS:=$(env_value SAM_MEDIA_ROOTS)}"
fi
SAM_SERVICE_HOST="${SAM_SERVICE_HOST:-127.0.0.1}"
SAM_SERVICE_PORT="${SAM_SERVICE_PORT:-8001}"
# The service runs in the repository; the videos a person means are where they started it from.
SAM_MEDIA_ROOTS="${SAM_MEDIA_ROOTS:-$LAUNCH_DIR}"
export SAM_SERVICE_HOST SAM_SERVICE_PORT SAM_MEDIA_ROOTS

# shared with run_tests.sh: which torch build to install, and the torch/torchvision check
source scripts/torch_build.sh

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    echo "run_sam.sh: creating .venv and installing the service (first run only)" >&2
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --upgrade pip
    install_torch .venv/bin/python
    .venv/bin/python -m pip install -e ".[server]"
elif ! .venv/bin/python -c "import fastapi, uvicorn, pydantic_settings, multipart, av, fastapi_offline, sam3, server" 2>/dev/null; then
    echo "run_sam.sh: installing missing server dependencies into .venv" >&2
    .venv/bin/python -m pip install -e ".[server]"
fi

check_torch_pair .venv/bin/python || exit 1

echo "run_sam.sh: SAM 3 service on http://${SAM_SERVICE_HOST}:${SAM_SERVICE_PORT} (health: /health, API docs: /docs)" >&2
# --http: a bound on request headers and JSON answers for requests the parser refuses (server/http_edge.py)
exec .venv/bin/python -m uvicorn server.main:app --host "$SAM_SERVICE_HOST" --port "$SAM_SERVICE_PORT" \
    --http server.http_edge:EdgeHttpProtocol
