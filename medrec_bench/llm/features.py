"""An on-disk cache of per-sample feature vectors (the LEADER teacher's hidden states for distillation).

Layout of a cache folder (one per teacher fingerprint)::

    index.json        {"fingerprint": str, "dim": int, "dtype": "float16", "shards": [file, ...],
                       "rows": {sample key: [shard number, row]}}
    shard-0000.npy    float16 [rows, dim], opened with ``np.load(mmap_mode="r")``
    shard-0001.npy    ... (one shard per call that had samples not cached yet)

A sample key is the sha256 (hex) of ``patient_id``, a unit separator, and ``visit_id``. Files are written to a
temporary name and renamed, so a crash never leaves a half-written index; two processes filling the same folder
at the same time may compute the same rows twice (the last index written wins), never corrupt it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medrec_bench.tasks.protocols import Sample

__all__ = ["FeatureCache", "sample_key"]

INDEX_FILE = "index.json"


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


class FeatureCache:
    """float16 feature rows [dim] by sample, stored under ``folder`` (created on first write)."""

    def __init__(self, folder: Path, fingerprint: str, dim: int) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.dim = dim
        self._index = self._read_index()

    def _read_index(self) -> dict:
        path = self.folder / INDEX_FILE
        empty = {"fingerprint": self.fingerprint, "dim": self.dim, "dtype": "float16", "shards": [], "rows": {}}
        if not path.is_file():
            return empty
        try:
            index = json.loads(path.read_text())
        except (OSError, ValueError):
            return empty
        if index.get("fingerprint") != self.fingerprint or index.get("dim") != self.dim:
            return empty
        if not all((self.folder / s).is_file() for s in index["shards"]):
            return empty
        return index

    def __len__(self) -> int:
        return len(self._index["rows"])

    def get(self, samples: Sequence[Sample], compute: Callable[[list[Sample]], np.ndarray]) -> np.ndarray:
        """float16 [len(samples), dim]: cached rows, ``compute(missing samples) -> [k, dim]`` for the others (then
        stored as a new shard)."""
        keys = [sample_key(s) for s in samples]
        rows = self._index["rows"]
        missing: dict[str, Sample] = {}
        for key, sample in zip(keys, samples):
            if key not in rows and key not in missing:
                missing[key] = sample
        if missing:
            values = np.asarray(compute(list(missing.values())))
            if values.shape != (len(missing), self.dim):
                raise ValueError(f"computed features have shape {values.shape}, expected {(len(missing), self.dim)}")
            self._add(list(missing), values)
            rows = self._index["rows"]
        out = np.empty((len(samples), self.dim), dtype=np.float16)
        shards = [np.load(self.folder / name, mmap_mode="r") for name in self._index["shards"]]
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for i, key in enumerate(keys):
            shard, row = rows[key]
            by_shard.setdefault(shard, ([], []))
            by_shard[shard][0].append(i)
            by_shard[shard][1].append(row)
        for shard, (targets, source_rows) in by_shard.items():
            out[targets] = shards[shard][source_rows]
        return out

    def _add(self, keys: list[str], values: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        values = np.clip(values.astype(np.float32), -65504, 65504).astype(np.float16)  # no inf in float16
        number = len(self._index["shards"])
        name = f"shard-{number:04d}.npy"
        while (self.folder / name).exists():  # another process wrote this name: pick the next free one
            number += 1
            name = f"shard-{number:04d}.npy"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".npy", dir=self.folder)
        os.close(fd)
        try:
            np.save(tmp, values)
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        shard = len(self._index["shards"])
        self._index["shards"].append(name)
        for row, key in enumerate(keys):
            self._index["rows"][key] = [shard, row]
        _atomic_write_bytes(self.folder / INDEX_FILE, json.dumps(self._index).encode())
