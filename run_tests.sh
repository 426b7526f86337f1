#!/usr/bin/env bash
# Set up (first run only) and run the test suite.
#   ./run_tests.sh            quick suite: tiny preset, real app, real clients, parity against the official oracle
#   ./run_tests.sh --full     the slow checks: full-size (1008 px) parity against the official release
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
ORACLE=.oracle
# The official package is the test oracle: installed beside the project, never imported by product code.
ORACLE_PKGS="sam3==0.1.4 timm==1.0.31 iopath==0.1.10 einops==0.8.2 pycocotools==2.0.11 psutil==7.2.2 \
opencv-python-headless==5.0.0.93 tqdm==4.70.1 portalocker==4.4.2 scipy==1.17.1"

stamp_of() { cat pyproject.toml "$0" scripts/torch_build.sh | sha256sum | cut -c1-16; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shared with run_sam.sh: the CPU build of torch on a machine without an NVIDIA GPU (not PyPI's CUDA wheels)
source scripts/torch_build.sh
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$(stamp_of)" ]; then
  echo "== installing the project and its test dependencies into $VENV"
  install_torch "$VENV/bin/python"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[server,scale,test]"
  stamp_of > "$VENV/.stamp"
fi
if [ ! -f "$ORACLE/.stamp" ] || [ "$(cat "$ORACLE/.stamp")" != "$ORACLE_PKGS" ]; then
  echo "== installing the official oracle into $ORACLE (isolated; used by tests/parity only)"
  rm -rf "$ORACLE"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --target "$ORACLE" $ORACLE_PKGS
  echo "$ORACLE_PKGS" > "$ORACLE/.stamp"
fi

# SAM 2's automatic mask generator is the yardstick of /segment/everything (tests/parity/sam2_adapter.py): a
# source distribution whose CUDA extension is skipped, with the hydra/omegaconf it imports, kept beside the
# project like the oracle (the service needs none of it).
SAM2_PKGS="sam2==1.1.0 hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3"
if [ ! -f .sam2/.stamp ] || [ "$(cat .sam2/.stamp)" != "$SAM2_PKGS" ]; then
  echo "== installing SAM 2's generator into .sam2 (isolated; used by tests/parity and bench/everything.py only)"
  rm -rf .sam2
  # its setup.py imports torch, so it builds against the venv's (no isolation; setuptools is not in every venv)
  "$VENV/bin/python" -c "import setuptools" 2>/dev/null || "$VENV/bin/pip" install -q --disable-pip-version-check setuptools
  SAM2_BUILD_CUDA=0 "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --target .sam2 $SAM2_PKGS
  echo "$SAM2_PKGS" > .sam2/.stamp
fi

# The web page's browser tests (tests/ui) drive Debian's Chromium: install it on a fresh machine when we can.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Debian's chromium for the browser tests (tests/ui)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

check_torch_pair "$VENV/bin/python"

export PYTHONDONTWRITEBYTECODE=1
# Lint and format check first (seconds): ruff's rules are in pyproject.toml.
echo "== ruff check + format check"
"$VENV/bin/ruff" check --quiet . && "$VENV/bin/ruff" format --check --quiet .
# Every run in a shuffled order (pytest-randomly), its seed said here so that a failure can be repeated with
# RANDOMLY_SEED=N ./run_tests.sh (-p no:randomly keeps file order).
ORDER=()
if [[ " $* " != *" no:randomly "* && " $* " != *"-p no:randomly"* ]]; then
  SEED=${RANDOMLY_SEED:-$((RANDOM * 32768 + RANDOM))}
  echo "== shuffled order: RANDOMLY_SEED=$SEED"
  ORDER=(-p randomly "--randomly-seed=$SEED")
fi
if [ "${1:-}" = "--full" ]; then
  shift
  exec "$VENV/bin/python" -m pytest -m full -p no:cacheprovider "${ORDER[@]}" "$@"
fi
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "${ORDER[@]}" "$@"
