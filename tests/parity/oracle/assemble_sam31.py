"""Assemble the upstream SAM 3.1 oracle (``.oracle31/sam3``) from a git snapshot of the upstream repository.

The package index has ``sam3==0.1.4`` only (no SAM 3.1). The upstream tree at the release is commit ``bfbed07``
("Daily arc lint", 2026-03-31, after ``9f22cb9`` "SAM 3.1 Release (#503)") of a snapshot that carries the
upstream history, for example the public fork ``sthsmall/sam3-modeify`` (its own later commits rewrite line
endings and patch ``model_builder.py``; they are not used). Run from the repository root::

    .venv/bin/python tests/parity/oracle/assemble_sam31.py --git-dir /path/to/snapshot.git [--commit bfbed07]

It writes ``.oracle31/sam3`` (ignored by git; nothing of it is committed). The oracle runs with
``PYTHONPATH=.oracle31:.oracle``: the upstream ``sam3`` first, its third-party dependencies (timm, iopath,
einops, ...) from the SAM 3 oracle in ``.oracle``.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = ROOT / ".oracle31"
RELEASE_COMMIT = "bfbed07"
# The files SAM 3.1 adds; their presence is how the tests tell an assembled oracle (harness31.ORACLE31_FILES).
MULTIPLEX_FILES = (
    "sam3/model/multiplex_mask_decoder.py",
    "sam3/model/multiplex_utils.py",
    "sam3/model/sam3_multiplex_base.py",
    "sam3/model/sam3_multiplex_detector.py",
    "sam3/model/sam3_multiplex_tracking.py",
    "sam3/model/video_tracking_multiplex.py",
    "sam3/model/video_tracking_multiplex_demo.py",
)


def assemble(git_dir: Path, commit: str, out: Path) -> Path:
    """Extract ``sam3/`` at ``commit`` from the bare repository ``git_dir`` into ``out`` (replaced)."""
    tar = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", "--format=tar", commit, "sam3"],
        check=True,
        capture_output=True,
    ).stdout
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(out, filter="data")
    missing = [f for f in MULTIPLEX_FILES if not (out / f).is_file()]
    if missing:
        raise SystemExit(f"{commit} is not a SAM 3.1 tree: missing {missing}")
    # setuptools' pkg_resources is absent from modern environments; the upstream builders only use it to find
    # the BPE file, which every caller here passes explicitly.
    (out / "ORACLE_COMMIT").write_text(commit + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--git-dir", type=Path, required=True, help="bare git directory of the snapshot")
    parser.add_argument("--commit", default=RELEASE_COMMIT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    out = assemble(args.git_dir, args.commit, args.out)
    print(f"assembled the upstream SAM 3.1 oracle at {out} from {args.git_dir} @ {args.commit}")


if __name__ == "__main__":
    main()
