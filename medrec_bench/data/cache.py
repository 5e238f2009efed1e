"""Content fingerprints and atomic cache folders (write into a temporary sibling, then rename)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import resources


def fingerprint(payload: dict[str, Any]) -> str:
    """sha256 hex of a JSON payload (sorted keys) plus the vendored tables' checksums."""
    sums = (resources.FILES_DIR / "SHA256SUMS").read_text()
    text = json.dumps(payload, sort_keys=True, default=str) + sums
    return hashlib.sha256(text.encode()).hexdigest()


def file_identity(folder: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime_ns) of every CSV table in ``folder``: cheap and changes whenever a file does."""
    out = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith((".csv", ".csv.gz")):
            st = path.stat()
            out.append((path.name, st.st_size, st.st_mtime_ns))
    return out


def atomic_folder(target: Path, write: Callable[[Path], None]) -> Path:
    """Create ``target`` by calling ``write(tmp)`` on a fresh temporary sibling and renaming it into place.

    An exception (or an interrupt) leaves no ``target`` behind; if another process finished first, its folder wins.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
