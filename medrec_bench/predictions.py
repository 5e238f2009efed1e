"""Saved test predictions: what :func:`medrec_bench.runner.rescore` and the report's p-values read back.

One run's predictions are a parquet file (one row per test sample: keyed hash of the patient id, ``n_visits``, the true
drug indices, the float32 probabilities) with a JSON sidecar of the same stem naming the drug codes in column order and
the parquet file's sha256, checked by :func:`load_predictions` (a changed or truncated file is refused, never scored).
The raw patient id is never written: :func:`patient_key` is an HMAC-SHA256 of it under the results store's secret
(:meth:`medrec_bench.store.ResultStore.patient_secret`, kept inside the SQLite file, never next to the predictions), so
the files alone do not allow guessing ids. Both files are written to a unique temporary name and renamed into place,
so concurrent writers and readers never see half a file. numpy and polars only (no torch).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import polars as pl

from .data.cache import file_sha256

if TYPE_CHECKING:
    from .tasks.protocols import Sample

__all__ = ["Predictions", "load_predictions", "patient_key", "save_predictions"]


class Predictions(NamedTuple):
    """Saved predictions of N test samples over M drugs."""

    y_true: np.ndarray  #: bool [N, M]
    y_prob: np.ndarray  #: float32 [N, M]
    patient_keys: np.ndarray  #: str [N], keyed hashes of the patient ids (see :func:`patient_key`)
    n_visits: np.ndarray  #: int [N], the sample's visits up to and including the current one
    drugs: tuple[str, ...]  #: the M drug codes, in column order


def patient_key(patient_id: str, secret: str) -> str:
    """HMAC-SHA256 of a patient id under ``secret`` (20 hex characters): what prediction files store instead of the
    id."""
    return hmac.new(secret.encode(), patient_id.encode(), hashlib.sha256).hexdigest()[:20]


def _write_atomically(path: Path, write: Callable[[Path], None], before_rename: Callable[[Path], None] = lambda _: None
                      ) -> None:
    """Call ``write(tmp)`` on a fresh, uniquely named sibling of ``path``, then ``before_rename(tmp)``, and rename it
    onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        before_rename(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_predictions(path: Path, samples: Sequence[Sample], y_prob: np.ndarray, drug_codes: Sequence[str],
                     secret: str) -> None:
    """Write ``y_prob`` float [N, M] for ``samples`` (N) to ``path`` (parquet) and its ``.json`` drug sidecar."""
    frame = pl.DataFrame({
        "patient_key": [patient_key(s.patient_id, secret) for s in samples],
        "n_visits": np.array([s.n_visits for s in samples], dtype=np.int32),
        "target": [list(s.target) for s in samples],
        "prob": list(np.asarray(y_prob, dtype=np.float32)),
    })

    def write_sidecar(parquet: Path) -> None:  # the sidecar names the checksum of the parquet file about to be renamed
        sidecar = json.dumps({"drugs": list(drug_codes), "sha256": file_sha256(parquet)})
        _write_atomically(path.with_suffix(".json"), lambda tmp: tmp.write_text(sidecar))

    _write_atomically(path, lambda tmp: frame.write_parquet(tmp), write_sidecar)


def load_predictions(path: Path) -> Predictions:
    """Read a file written by :func:`save_predictions`; ValueError (one line) when the file or its sidecar is
    missing, unreadable or does not match the checksum written with it."""
    path = Path(path)
    try:
        sidecar = json.loads(path.with_suffix(".json").read_text())
        drugs, expected = tuple(sidecar["drugs"]), sidecar.get("sha256")
        actual = file_sha256(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"predictions {path} cannot be read ({type(exc).__name__}: {exc}); re-run the model with "
                         f"--force") from None
    if actual != expected:
        why = "has no checksum" if expected is None else "does not match the checksum written with it"
        raise ValueError(f"predictions {path} {why} (changed or truncated since the run): refusing to score it; "
                         f"re-run the model with --force")
    frame = pl.read_parquet(path)
    if frame.height:
        y_prob = np.stack(frame["prob"].to_numpy()).astype(np.float32)
    else:
        y_prob = np.zeros((0, len(drugs)), dtype=np.float32)
    y_true = np.zeros(y_prob.shape, dtype=bool)
    for i, target in enumerate(frame["target"].to_list()):
        y_true[i, target] = True
    return Predictions(y_true, y_prob, frame["patient_key"].to_numpy(), frame["n_visits"].to_numpy(), drugs)


def delete_predictions(path: Path) -> None:
    """Remove a prediction file written by :func:`save_predictions` and its sidecar (missing files are fine)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)
