"""SAM 3.1 parity plumbing: the upstream 3.1 oracle (``.oracle31``, assembled by
``tests/parity/oracle/assemble_sam31.py``) run in a subprocess, and its availability check.

The oracle runs with ``PYTHONPATH=.oracle31:.oracle``: the upstream 3.1 tree first, its third-party
dependencies from the SAM 3 oracle. Tests that need it skip with :data:`ORACLE31_HINT` when it is absent
(CI cannot download the upstream snapshot).
"""

from __future__ import annotations

import subprocess
import sys

from tests.parity.harness import ORACLE, ORACLE_SCRIPTS, ROOT, oracle_available, oracle_env

ORACLE31 = ROOT / ".oracle31"
ORACLE31_HINT = (
    "the upstream SAM 3.1 oracle is not assembled in .oracle31 (it is not on the package index): fetch a git "
    "snapshot of the upstream tree (e.g. github:sthsmall/sam3-modeify, commit bfbed07) and run "
    ".venv/bin/python tests/parity/oracle/assemble_sam31.py --git-dir <snapshot>; it also needs the SAM 3 "
    "oracle in .oracle for its dependencies"
)


def oracle31_available() -> bool:
    return (ORACLE31 / "sam3" / "model" / "multiplex_mask_decoder.py").is_file() and oracle_available()


def run_oracle31(script: str, *args: str, threads: int = 1, timeout: float = 3600) -> str:
    """Run ``tests/parity/oracle/<script>`` in the 3.1 oracle environment; returns stdout, raises with stderr."""
    env = oracle_env(threads)
    env["PYTHONPATH"] = f"{ORACLE31}:{ORACLE}"
    cmd = [sys.executable, "-P", "-W", "ignore", str(ORACLE_SCRIPTS / script), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"oracle {script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}")
    return proc.stdout
