# Sourced by run_sam.sh and run_tests.sh: one rule for which torch build a fresh .venv gets, and one check that
# torch and torchvision belong together.
#
#   torch_index_url          the wheel index: $TORCH_INDEX_URL when set; the CPU build on a Linux machine
#                            without an NVIDIA GPU (about 200 MB instead of about 6 GB of CUDA wheels) when
#                            that index answers; else empty (pip's own configuration: PyPI's CUDA builds on
#                            Linux, CPU/MPS builds on macOS, or the wheels a machine without internet keeps on
#                            disk). An index that cannot be reached is not passed to pip: pip would then
#                            resolve from its find-links alone and could pair a local torch with a torchvision
#                            built for another one.
#   install_torch PYTHON     pip-install torch and torchvision from that index, unless torch is installed
#   check_torch_pair PYTHON  fail, saying how to fix it, when torchvision's compiled ops do not fit torch
#                            (a mismatched pair fails the model load with "operator torchvision::nms does not exist")

# the CPU wheel index ($CPU_TORCH_INDEX stands in for it in tests/test_torch_build.py)
CPU_TORCH_INDEX="${CPU_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"

# index_answers URL: true when URL answers within a few seconds (a machine without internet fails at once)
index_answers() {
    "${PYTHON:-python3}" - "$1" >/dev/null 2>&1 <<'PY'
import sys
import urllib.request

urllib.request.urlopen(sys.argv[1] + "/", timeout=5).close()
PY
}

torch_index_url() {
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
        echo "$TORCH_INDEX_URL"
    elif [[ "$(uname -s)" == "Linux" ]] && ! nvidia-smi >/dev/null 2>&1 && index_answers "$CPU_TORCH_INDEX"; then
        echo "$CPU_TORCH_INDEX"
    fi
}

install_torch() {
    local python="$1" index
    if "$python" -c "import torch" >/dev/null 2>&1; then
        return 0
    fi
    index="$(torch_index_url)"
    if [[ -n "$index" ]]; then
        echo "torch: installing torch and torchvision from $index" >&2
        "$python" -m pip install -q --disable-pip-version-check torch torchvision --index-url "$index"
    else
        echo "torch: installing torch and torchvision with pip's own configuration (PyPI unless pip is set otherwise)" >&2
        "$python" -m pip install -q --disable-pip-version-check torch torchvision
    fi
}

check_torch_pair() {
    local python="$1" problem index
    problem="$("$python" - 2>&1 <<'PY'
import sys
try:
    import torch
    import torchvision
    from torchvision.ops import nms

    nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
except Exception as exc:  # noqa: BLE001 -- any failure means the pair does not work
    versions = []
    for name in ("torch", "torchvision"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except Exception:  # noqa: BLE001
            versions.append(f"{name} missing")
    print(f"{', '.join(versions)}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    sys.exit(1)
PY
)" && return 0
    index="$(torch_index_url)"
    echo "torch and torchvision do not match ($problem)." >&2
    echo "Fix: reinstall both from the same build, e.g." >&2
    echo "  $python -m pip install --force-reinstall torch torchvision${index:+ --index-url $index}" >&2
    return 1
}
