#!/usr/bin/env bash
# bench/device_check.py on a lent GPU machine in one call (bench/README.md, "device_check.py").
#
#   bench/device_kit.sh pack                  here, once: fills .whl/ (ignored, about 4 MB) with what the lent
#                                             machine lacks: Python 3.12 wheels of ftfy, wcwidth and pycocotools,
#                                             and the official sam3 package (with iopath) from .oracle, which is
#                                             too large to travel whole (and its compiled parts are for Python 3.11)
#   bench/device_kit.sh run [ARGS...]         there, with .whl carried: installs its wheels into $SITE (default
#                                             /tmp/site), then runs device_check.py --preset sam3 with the official
#                                             side from .whl/oracle, writing device_check.log and
#                                             device_check.jsonl (one line per measurement, as it is made) into
#                                             $OUT (default ./device-out). ARGS go to device_check.py after the
#                                             kit's own, so they win. $KIT names another folder than .whl.
#
# The lent machine has python3 3.12 with torch, torchvision, numpy, scipy, scikit-image, opencv, timm, einops,
# tqdm, regex, safetensors, huggingface_hub and portalocker (the device tool's KINDS.md), and no network.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
pack)
    py=${PYTHON:-.venv/bin/python}
    if [[ ! -f .oracle/sam3/model_builder.py ]]; then
        echo ".oracle holds no official sam3 package: ./run_tests.sh installs it" >&2
        exit 1
    fi
    rm -rf .whl
    mkdir -p .whl/oracle
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "ftfy==6.3.1" "wcwidth==0.9.4" "pycocotools==2.0.11"
    cp -r .oracle/sam3 .oracle/iopath .whl/oracle/  # pure Python; the rest of .oracle is on the lent machine
    find .whl -name __pycache__ -prune -exec rm -rf {} +
    du -sh .whl
    ;;
run)
    shift
    out=${OUT:-$PWD/device-out}
    site=${SITE:-/tmp/site}
    kit=${KIT:-.whl}
    mkdir -p "$out"
    shopt -s nullglob
    wheels=("$kit"/*.whl)
    if ((${#wheels[@]})); then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "${wheels[@]}"
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONUNBUFFERED=1
    {
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        fi
        python3 bench/device_check.py --preset sam3 --oracle "$kit/oracle" --json "$out/device_check.jsonl" \
            --deadline 420 "$@"
    } 2>&1 | tee "$out/device_check.log"
    ;;
*)
    echo "usage: bench/device_kit.sh pack | run [device_check.py arguments]" >&2
    exit 2
    ;;
esac
