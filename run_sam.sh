#!/usr/bin/env bash
# Start the SAM 3 service: ./run_sam.sh
#
# On first use it creates .venv and installs this project with its server extras. Settings come from the
# environment or a .env file (see .env.example); the bind address from SAM_SERVICE_HOST / SAM_SERVICE_PORT
# (default 127.0.0.1:8001; use SAM_SERVICE_HOST=0.0.0.0 only inside a container).
set -euo pipefail
cd "$(dirname "$0")"

# Ops that MPS (Apple Silicon) lacks fall back to the CPU instead of failing.
export PYTORCH_ENABLE_MPS_FALLBACK=1

# Read the bind address from .env when the environment does not set it (the app reads the rest itself).
if [[ -f .env ]]; then
    env_value() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" .env | tail -n 1 | tr -d "\"'"; }
    : "${SAM_SERVICE_HOST:=$(env_value SAM_SERVICE_HOST)}"
    : "${SAM_SERVICE_PORT:=$(env_value SAM_SERVICE_PORT)}"
fi
SAM_SERVICE_HOST="${SAM_SERVICE_HOST:-127.0.0.1}"
SAM_SERVICE_PORT="${SAM_SERVICE_PORT:-8001}"
export SAM_SERVICE_HOST SAM_SERVICE_PORT

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    echo "run_sam.sh: creating .venv and installing the service (first run only)" >&2
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --upgrade pip
    .venv/bin/python -m pip install torch torchvision
    .venv/bin/python -m pip install -e ".[server]"
elif ! .venv/bin/python -c "import fastapi, uvicorn, pydantic_settings, multipart, av, sam3, server" 2>/dev/null; then
    echo "run_sam.sh: installing missing server dependencies into .venv" >&2
    .venv/bin/python -m pip install -e ".[server]"
fi

echo "run_sam.sh: SAM 3 service on http://${SAM_SERVICE_HOST}:${SAM_SERVICE_PORT} (health: /health)" >&2
exec .venv/bin/python -m uvicorn server.main:app --host "$SAM_SERVICE_HOST" --port "$SAM_SERVICE_PORT"
