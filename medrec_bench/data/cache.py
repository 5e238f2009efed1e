"""Content fingerprints, checksummed cache folders and atomic writes (into a temporary sibling, then renamed).

Every cache folder (a cohort, a trained model) carries ``SHA256SUMS.json``, the sha256 of each of its files, written
last inside the temporary folder: :func:`checksum_problem` says what no longer matches, so a truncated, zeroed or
swapped file is rebuilt instead of used. Temporary folders are named ``.<target>.<pid>.<random>``; those whose
process is gone (killed with ``kill -9``) are removed by the next :func:`atomic_folder` on the same target.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import resources

CHECKSUM_FILE = "SHA256SUMS.json"
_CHUNK = 1 << 20


class CacheRebuiltWarning(UserWarning):
    """A cache entry failed its checksum and is rebuilt."""


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE)


def write_checksums(folder: Path) -> None:
    """Write ``folder/SHA256SUMS.json``: {relative path: sha256} of every file below ``folder``."""
    sums = {p.relative_to(folder).as_posix(): file_sha256(p) for p in _cache_files(folder)}
    (folder / CHECKSUM_FILE).write_text(json.dumps(sums, indent=1, sort_keys=True))


def checksum_problem(folder: Path) -> str | None:
    """None when every file of ``folder`` matches its ``SHA256SUMS.json`` (no file missing, none added), else what
    does not, in a few words (e.g. ``visits.parquet does not match its checksum``)."""
    try:
        sums = json.loads((folder / CHECKSUM_FILE).read_text())
    except FileNotFoundError:
        return f"it has no {CHECKSUM_FILE}"
    except (OSError, ValueError):
        return f"its {CHECKSUM_FILE} is unreadable"
    if not isinstance(sums, dict):
        return f"its {CHECKSUM_FILE} is unreadable"
    present = {p.relative_to(folder).as_posix(): p for p in _cache_files(folder)}
    for name in sorted(set(sums) | set(present)):
        if name not in present:
            return f"{name} is missing"
        if name not in sums:
            return f"{name} is not in its {CHECKSUM_FILE}"
        if file_sha256(present[name]) != sums[name]:
            return f"{name} does not match its checksum"
    return None


def discard_if_corrupt(folder: Path, what: str) -> bool:
    """Whether ``folder`` (a complete cache entry) fails its checksum; if so warn once (:class:`CacheRebuiltWarning`,
    naming ``what``, the folder and the problem) and remove it so that it is rebuilt."""
    problem = checksum_problem(folder)
    if problem is None:
        return False
    warnings.warn(f"cached {what} at {folder} is not what was written ({problem}); rebuilding it",
                  CacheRebuiltWarning, stacklevel=3)
    shutil.rmtree(folder, ignore_errors=True)
    return True


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(parent: Path, name: str) -> None:
    """Remove ``parent/.<name>.<pid>.*`` temporary folders whose process no longer runs (a build killed mid-way)."""
    prefix = f".{name}."
    for path in parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix):].partition(".")[0]
        if path.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def atomic_folder(target: Path, write: Callable[[Path], None]) -> Path:
    """Create ``target`` by calling ``write(tmp)`` on a fresh temporary sibling, adding its ``SHA256SUMS.json``
    (:func:`write_checksums`) and renaming it into place.

    An exception (or an interrupt) leaves no ``target`` behind; if another process finished first, its folder wins.
    Temporary folders of killed processes are removed first (:func:`remove_stale_temporaries`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", dir=target.parent))
    try:
        write(tmp)
        write_checksums(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
