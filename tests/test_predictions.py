"""Saved test predictions: round trip, salted keys, empty files, atomic writes under a unique temporary name."""

import hashlib
import hmac
from pathlib import Path

import numpy as np
import polars as pl

from medrec_bench.data.schema import Visit
from medrec_bench.predictions import Predictions, load_predictions, patient_key, save_predictions
from medrec_bench.store import ResultStore
from medrec_bench.tasks.protocols import Sample

DRUGS = ("A01A", "B01A", "C07A")


def make_sample(patient_id: str, n_visits: int, target: tuple[int, ...]) -> Sample:
    """A sample whose patient has ``n_visits`` visits up to the current one."""
    earlier = tuple(Visit(f"{patient_id}-{k}", None, (), (), (), {}) for k in range(n_visits - 1))
    return Sample(patient_id, f"{patient_id}-now", earlier, (), (), {}, target)


def write_example(path: Path, salt: str = "s") -> tuple[list[Sample], np.ndarray]:
    samples = [make_sample("p1", 1, (0,)), make_sample("p2", 3, (1, 2)), make_sample("p1", 2, ())]
    y_prob = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.7], [0.5, 0.5, 0.5]], dtype=np.float64)
    save_predictions(path, samples, y_prob, DRUGS, salt)
    return samples, y_prob


def test_round_trip(tmp_path):
    path = tmp_path / "preds" / "run.parquet"
    _, y_prob = write_example(path)
    pred = load_predictions(path)
    assert isinstance(pred, Predictions) and pred.drugs == DRUGS
    assert pred.y_prob.dtype == np.float32 and np.array_equal(pred.y_prob, y_prob.astype(np.float32))
    assert pred.y_true.tolist() == [[True, False, False], [False, True, True], [False, False, False]]
    assert pred.n_visits.tolist() == [1, 3, 2]
    assert pred.patient_keys.tolist() == [patient_key("p1", "s"), patient_key("p2", "s"), patient_key("p1", "s")]
    assert "p1" not in set(pl.read_parquet(path)["patient_key"].to_list())


def test_empty_predictions_keep_the_drug_axis(tmp_path):
    path = tmp_path / "empty.parquet"
    save_predictions(path, [], np.zeros((0, 3), dtype=np.float32), DRUGS, "s")
    pred = load_predictions(path)
    assert pred.y_prob.shape == (0, 3) and pred.y_prob.dtype == np.float32 and pred.y_true.shape == (0, 3)


def test_written_through_a_unique_temporary_name(tmp_path):
    path = tmp_path / "run.parquet"
    path.with_suffix(".tmp").mkdir()  # a fixed temporary name would be blocked (e.g. by a concurrent writer)
    write_example(path)
    write_example(path)  # overwriting works too
    assert load_predictions(path).y_prob.shape == (3, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.parquet", "run.tmp"]


def test_patient_keys_are_hmacs_under_the_store_secret_kept_in_the_database(tmp_path):
    with ResultStore(tmp_path / "a.db") as a, ResultStore(tmp_path / "b.db") as b:
        secret = a.patient_secret()
        assert len(secret) == 64 and a.patient_secret() == secret and b.patient_secret() != secret
    with ResultStore(tmp_path / "a.db") as a:
        assert a.patient_secret() == secret  # kept in the SQLite file
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == ["a.db", "b.db"]
    assert patient_key("p1", secret) == hmac.new(secret.encode(), b"p1", hashlib.sha256).hexdigest()[:20]
    assert patient_key("p1", secret) != patient_key("p1", "other")


def test_without_the_secret_ids_cannot_be_recovered_from_the_files(tmp_path):
    """The attack of the issue: with the old unkeyed layout a brute force over ids 0-99,999 found every patient; the
    prediction folder now holds no secret, and hashing candidate ids without it matches nothing."""
    path = tmp_path / "predictions" / "run.parquet"
    with ResultStore(tmp_path / "r.db") as store:
        save_predictions(path, [make_sample(str(i), 1, (0,)) for i in (17, 4242, 99999)], np.full((3, 3), 0.5),
                         DRUGS, store.patient_secret())
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json", "run.parquet"]
    keys = set(pl.read_parquet(path)["patient_key"].to_list())
    guesses = {h for i in range(100_000) for h in (hashlib.sha256(f":{i}".encode()).hexdigest()[:20],
                                                   hmac.new(b"", str(i).encode(), hashlib.sha256).hexdigest()[:20])}
    assert not keys & guesses
