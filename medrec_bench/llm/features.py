"""On-disk caches of per-sample arrays: the LEADER teacher's hidden states for distillation (:class:`FeatureCache`,
one vector per sample) and, through :class:`ArrayStore`, the frozen-prefix states of :mod:`.prefix_cache` (one
[tokens, hidden] matrix per sample).

Layout of an :class:`ArrayStore` folder (one per fingerprint)::

    index.json        {"format": 3, "fingerprint": str, "dim": int, "dtype": "float16", "shards": [file, ...],
                       "sha256": {file: sha256 hex}, "rows": {key: [shard number, first row, number of rows]}}
    shard-0000.npy    float16 [rows, dim], opened with ``np.load(mmap_mode="r")``
    shard-0001.npy    ... (one shard per write)

A sample key is the sha256 (hex) of ``patient_id``, a unit separator, and ``visit_id``. Files are written to a
temporary name and renamed, so a crash never leaves a half-written index; two processes filling the same folder
at the same time may compute the same rows twice (the last index written wins), never corrupt it. Every shard the
index points to is checked against its sha256 when the store opens: the rows of a changed or truncated shard are
dropped (one :class:`~medrec_bench.data.cache.CacheRebuiltWarning`) and so computed again. Without a folder the store
lives in memory; a read-only store (``writable=False``: the other processes of a data-parallel launch, see
:mod:`medrec_bench.distributed`) reads the folder and keeps what it computes in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medrec_bench.data.cache import CacheRebuiltWarning, file_sha256
from medrec_bench.tasks.protocols import Sample

__all__ = ["ArrayStore", "FeatureCache", "sample_key"]

INDEX_FILE = "index.json"
INDEX_FORMAT = 3
FLOAT16_MAX = 65504.0


def sample_key(sample: Sample) -> str:
    """sha256 hex of the sample's patient id and visit id (the row key of the cache)."""
    return hashlib.sha256(f"{sample.patient_id}\x1f{sample.visit_id}".encode()).hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_float16(values: np.ndarray) -> np.ndarray:
    """float16 copy of ``values``, clipped to float16's finite range (no inf)."""
    return np.clip(np.asarray(values, dtype=np.float32), -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


class ArrayStore:
    """float16 arrays [n_k, dim] by string key, in memory-mapped ``.npy`` shards under ``folder`` (created on first
    write), or in memory when ``folder`` is None or not ``writable``. An index of another fingerprint or width is
    ignored (empty)."""

    def __init__(self, folder: Path | None, fingerprint: str, dim: int, writable: bool = True) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.fingerprint = fingerprint
        self.dim = dim
        self.writable = writable
        self._memory: dict[str, np.ndarray] = {}
        self._shards: dict[int, np.ndarray] = {}
        self._index = self._read_index()

    def _empty(self) -> dict:
        return {"format": INDEX_FORMAT, "fingerprint": self.fingerprint, "dim": self.dim, "dtype": "float16",
                "shards": [], "sha256": {}, "rows": {}}

    def _read_index(self) -> dict:
        if self.folder is None or not (self.folder / INDEX_FILE).is_file():
            return self._empty()
        try:
            index = json.loads((self.folder / INDEX_FILE).read_text())
        except (OSError, ValueError):
            return self._empty()
        if (index.get("format") != INDEX_FORMAT or index.get("fingerprint") != self.fingerprint
                or index.get("dim") != self.dim):
            return self._empty()
        return self._verified(index)

    def _verified(self, index: dict) -> dict:
        """``index`` without the rows of shards that are missing or fail their checksum (those files removed)."""
        assert self.folder is not None
        used = sorted({row[0] for row in index["rows"].values()})
        bad = {n for n in used if not (self.folder / index["shards"][n]).is_file()
               or file_sha256(self.folder / index["shards"][n]) != index["sha256"].get(index["shards"][n])}
        if bad:
            names = ", ".join(index["shards"][n] for n in sorted(bad))
            warnings.warn(f"cached arrays at {self.folder}: {names} missing or not what was written; their rows are "
                          f"computed again", CacheRebuiltWarning, stacklevel=4)
            index["rows"] = {k: row for k, row in index["rows"].items() if row[0] not in bad}
            for n in bad:
                (self.folder / index["shards"][n]).unlink(missing_ok=True)
        return index

    def __contains__(self, key: str) -> bool:
        return key in self._memory or key in self._index["rows"]

    def __len__(self) -> int:
        return len(self._memory) + len(self._index["rows"])

    def _shard(self, number: int) -> np.ndarray:
        if number not in self._shards:
            assert self.folder is not None
            self._shards[number] = np.load(self.folder / self._index["shards"][number], mmap_mode="r")
        return self._shards[number]

    def read(self, key: str) -> np.ndarray:
        """float16 [n_k, dim] stored under ``key`` (a read-only memory map slice for a folder store)."""
        if key in self._memory:
            return self._memory[key]
        shard, start, length = self._index["rows"][key]
        return self._shard(shard)[start:start + length]

    def write(self, keys: Sequence[str], arrays: Sequence[np.ndarray]) -> None:
        """Store ``arrays[i]`` (float [n_i, dim]) under ``keys[i]``: one new shard for a folder store."""
        arrays = [to_float16(a).reshape(-1, self.dim) for a in arrays]
        if self.folder is None or not self.writable:
            self._memory.update(zip(keys, arrays))
            return
        if not arrays:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        number = len(self._index["shards"])
        name = f"shard-{number:04d}.npy"
        while (self.folder / name).exists():  # another process wrote this name: pick the next free one
            number += 1
            name = f"shard-{number:04d}.npy"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".npy", dir=self.folder)
        os.close(fd)
        try:
            np.save(tmp, np.concatenate(arrays, axis=0))
            self._index["sha256"][name] = file_sha256(Path(tmp))
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        shard = len(self._index["shards"])
        self._index["shards"].append(name)
        start = 0
        for key, array in zip(keys, arrays):
            self._index["rows"][key] = [shard, start, len(array)]
            start += len(array)
        _atomic_write_bytes(self.folder / INDEX_FILE, json.dumps(self._index).encode())


class FeatureCache:
    """float16 feature rows [dim] by sample, stored under ``folder`` (see :class:`ArrayStore`). ``hits`` / ``computed``
    count the rows served from the cache and the rows computed, over the cache's life."""

    def __init__(self, folder: Path | None, fingerprint: str, dim: int, writable: bool = True) -> None:
        self.store = ArrayStore(folder, fingerprint, dim, writable)
        self.dim = dim
        self.hits = 0
        self.computed = 0

    @property
    def folder(self) -> Path | None:
        return self.store.folder

    def __len__(self) -> int:
        return len(self.store)

    def get(self, samples: Sequence[Sample], compute: Callable[[list[Sample]], np.ndarray]) -> np.ndarray:
        """float16 [len(samples), dim]: cached rows, ``compute(missing samples) -> [k, dim]`` for the others (then
        stored as a new shard)."""
        keys = [sample_key(s) for s in samples]
        missing: dict[str, Sample] = {}
        for key, sample in zip(keys, samples):
            if key not in self.store and key not in missing:
                missing[key] = sample
        if missing:
            values = np.asarray(compute(list(missing.values())))
            if values.shape != (len(missing), self.dim):
                raise ValueError(f"computed features have shape {values.shape}, expected {(len(missing), self.dim)}")
            self.store.write(list(missing), list(values[:, None, :]))
        self.computed += len(missing)
        self.hits += len(keys) - len(missing)
        out = np.empty((len(samples), self.dim), dtype=np.float16)
        for i, key in enumerate(keys):
            out[i] = self.store.read(key)[0]
        return out
