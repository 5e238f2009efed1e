"""Tests for medrec_bench.store (SQLite results store)."""

from __future__ import annotations

import math
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medrec_bench.records import MetricResult
from medrec_bench.store import SCHEMA_VERSION, ResultStore, RunRecord, StoreError, SweepRecord, SweepTrial

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_run(key: str = "k1", seed: int = 0, model: str = "safedrug", **kw) -> RunRecord:
    base = dict(
        run_key=key,
        model=model,
        params='{"lr": 0.001, "dim": 64}',
        data="synthetic",
        data_fingerprint="fp1",
        protocol="temporal",
        seed=seed,
        git_commit="abc123",
        versions={"numpy": "1.26", "polars": "1.0"},
        started_at="2024-01-01T00:00:00+00:00",
        ended_at="2024-01-01T00:10:00+00:00",
        train_seconds=12.5,
        predict_ms_per_sample=0.75,
        n_parameters=1000,
        threshold=0.5,
        predictions_path="results/preds/k1.parquet",
    )
    base.update(kw)
    return RunRecord(**base)


def make_metrics(jaccard: float = 0.5, f1: float = 0.6) -> list[MetricResult]:
    return [
        MetricResult("overall", "sample", "jaccard", jaccard, jaccard - 0.1, jaccard + 0.1, 100, 40, 0.05),
        MetricResult("overall", "sample", "f1", f1, f1 - 0.05, f1 + 0.05, 100, 40, 0.025),
        MetricResult("multi_visit", "patient", "jaccard", jaccard / 2, 0.0, jaccard, 30, 10, 0.1),
    ]


def count_rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    (tmp_path / "nested" / "dir").mkdir(parents=True)  # missing parents are created only when asked (see below)
    return tmp_path / "nested" / "dir" / "medrec.db"


def test_open_creates_schema_and_wal(db: Path) -> None:
    with ResultStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "metrics"} <= tables
    # Re-opening an existing file works and keeps the version.
    with ResultStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION


def test_newer_schema_version_is_refused(db: Path) -> None:
    ResultStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="schema version"):
        ResultStore(db)


def test_round_trip_run_and_metrics(db: Path) -> None:
    run = make_run()
    metrics = make_metrics()
    with ResultStore(db) as store:
        run_id = store.record_run(run, metrics)
        assert isinstance(run_id, int)
        got = store.get_run(run_id)
        assert got is not None
        assert got.id == run_id
        assert got.status == "complete" and got.error is None
        assert got.run_key == "k1" and got.model == "safedrug" and got.seed == 0
        # JSON columns are stored canonically (sorted keys, compact).
        assert got.params == '{"dim":64,"lr":0.001}'
        assert got.versions == '{"numpy":"1.26","polars":"1.0"}'
        assert got.git_commit == "abc123"
        assert got.started_at == "2024-01-01T00:00:00+00:00"
        assert got.ended_at == "2024-01-01T00:10:00+00:00"
        assert got.train_seconds == 12.5 and got.predict_ms_per_sample == 0.75
        assert got.n_parameters == 1000 and got.threshold == 0.5
        assert got.predictions_path == "results/preds/k1.parquet"
        assert store.metrics_for(run_id) == sorted(
            metrics, key=lambda m: (m.group, m.averaging, m.metric)
        )
        assert store.get_run(run_id + 999) is None


def test_metric_mappings_and_defaults(db: Path) -> None:
    objs = [{"group": "overall", "averaging": "patient", "metric": "ddi_rate", "mean": 0.07, "ci_low": 0.06,
             "ci_high": 0.08, "n_samples": 50, "n_patients": 20, "std": 0.005}]
    run = RunRecord(
        run_key="minimal",
        model="leader",
        params={"b": 1, "a": 2},
        data="synthetic",
        data_fingerprint="fp",
        protocol="random",
        seed=3,
    )
    with ResultStore(db) as store:
        run_id = store.record_run(run, objs)
        got = store.get_run(run_id)
        assert got is not None
        assert got.params == '{"a":2,"b":1}'
        assert got.started_at and got.ended_at  # filled in with the current time
        assert got.git_commit is None and got.train_seconds is None
        assert store.metrics_for(run_id) == [
            MetricResult("overall", "patient", "ddi_rate", 0.07, 0.06, 0.08, 50, 20, 0.005)
        ]
        assert got.code_hash is None and got.uncertainty is None and got.diagnostics == "{}"


def test_nan_metric_reads_back_as_nan(db: Path) -> None:
    with ResultStore(db) as store:
        run_id = store.record_run(
            make_run(), [MetricResult("overall", "sample", "auc", float("nan"), 0.1, 0.2, 5, 2)]
        )
        (m,) = store.metrics_for(run_id)
        assert math.isnan(m.mean) and m.ci_low == 0.1 and math.isnan(m.std)


def test_completed_run_by_key(db: Path) -> None:
    with ResultStore(db) as store:
        assert store.completed_run("k1") is None
        run_id = store.record_run(make_run("k1"), make_metrics())
        got = store.completed_run("k1")
        assert got is not None and got.id == run_id and got.run_key == "k1"
        assert store.completed_run("other") is None


def test_duplicate_key_not_duplicated(db: Path) -> None:
    with ResultStore(db) as store:
        first = store.record_run(make_run("k1"), make_metrics(jaccard=0.5))
        second = store.record_run(make_run("k1"), make_metrics(jaccard=0.9))
        assert second == first
        assert len(store.runs()) == 1
        # The original metrics are kept, not overwritten.
        jac = [m for m in store.metrics_for(first) if m.metric == "jaccard" and m.group == "overall"]
        assert jac[0].mean == 0.5
        # A failure for the same key never overwrites a complete run.
        assert store.record_failure(make_run("k1"), "boom") == first
        got = store.get_run(first)
        assert got is not None and got.status == "complete" and got.error is None
    assert count_rows(db, "runs") == 1
    assert count_rows(db, "metrics") == 3


def test_failed_run_then_replaced_by_complete(db: Path) -> None:
    with ResultStore(db) as store:
        failed_id = store.record_failure(make_run("k1"), "CUDA out of memory")
        failed = store.get_run(failed_id)
        assert failed is not None and failed.status == "failed"
        assert failed.error == "CUDA out of memory"
        assert store.completed_run("k1") is None
        assert store.metrics_for(failed_id) == []

        # A second failure replaces the first rather than adding a row.
        failed_id2 = store.record_failure(make_run("k1"), "second failure")
        assert [r.error for r in store.runs()] == ["second failure"]

        new_id = store.record_run(make_run("k1"), make_metrics())
        assert store.get_run(failed_id2) is None or failed_id2 == new_id
        runs = store.runs()
        assert len(runs) == 1
        assert runs[0].id == new_id and runs[0].status == "complete" and runs[0].error is None
        assert len(store.metrics_for(new_id)) == 3


def test_failure_error_is_one_line(db: Path) -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 3, in <module>\n'
        "    patient_id = 12345\n"
        "ValueError: bad shape (3, 4)\n"
    )
    with ResultStore(db) as store:
        run_id = store.record_failure(make_run("k1"), tb)
        got = store.get_run(run_id)
        assert got is not None
        assert got.error == "ValueError: bad shape (3, 4)"
        run_id2 = store.record_failure(make_run("k2"), "first line\nsecond line")
        got2 = store.get_run(run_id2)
        assert got2 is not None and got2.error == "first line"


def test_runs_filters_and_delete(db: Path) -> None:
    with ResultStore(db) as store:
        a = store.record_run(make_run("a", model="safedrug"), make_metrics())
        b = store.record_run(make_run("b", model="gamenet", protocol="random"), make_metrics())
        c = store.record_failure(make_run("c", model="gamenet"), "oops")
        assert [r.id for r in store.runs()] == [a, b, c]
        assert [r.id for r in store.runs(model="gamenet")] == [b, c]
        assert [r.id for r in store.runs(model="gamenet", status="complete")] == [b]
        assert [r.id for r in store.runs(protocol="random")] == [b]
        assert [r.id for r in store.runs(status="failed")] == [c]
        assert store.runs(data="mimic3") == []

        assert store.delete_run(a) is True
        assert store.delete_run(a) is False
        assert store.get_run(a) is None
        assert store.metrics_for(a) == []
    # ON DELETE CASCADE removed a's metric rows; b's remain.
    assert count_rows(db, "metrics") == 3


def test_diagnostics_code_hash_and_uncertainty_round_trip(db: Path) -> None:
    run = make_run(code_hash="0123456789abcdef", uncertainty="rounds_with_replacement",
                   diagnostics={"oov_rate": 0.125, "epochs_run": 7, "backbone": "smollm2"})
    with ResultStore(db) as store:
        got = store.get_run(store.record_run(run, make_metrics()))
    assert got.code_hash == "0123456789abcdef" and got.uncertainty == "rounds_with_replacement"
    assert got.diagnostics == '{"backbone":"smollm2","epochs_run":7,"oov_rate":0.125}'


def test_record_run_replace_overwrites_a_complete_run(db: Path) -> None:
    with ResultStore(db) as store:
        first = store.record_run(make_run("k1"), make_metrics(jaccard=0.5))
        second = store.record_run(make_run("k1"), make_metrics(jaccard=0.9), replace=True)
        assert [r.id for r in store.runs()] == [second]  # SQLite may hand the freed id out again
        jac = [m.mean for m in store.metrics_for(second) if m.metric == "jaccard" and m.group == "overall"]
        assert jac == [0.9]
    assert count_rows(db, "metrics") == 3


def test_complete_metrics_joins_runs_and_filters(db: Path) -> None:
    with ResultStore(db) as store:
        a = store.record_run(make_run("a", seed=0), make_metrics(jaccard=0.4))
        store.record_run(make_run("b", seed=1, protocol="visit"), make_metrics(jaccard=0.6))
        store.record_failure(make_run("c", seed=2), "boom")
        pairs = store.complete_metrics(protocol="temporal", group="overall", metric="jaccard")
    assert [(run.id, run.seed, m.mean) for run, m in pairs] == [(a, 0, 0.4)]
    assert pairs[0][1] == make_metrics(jaccard=0.4)[0]


# The schema of version 1, as files written before version 2 have it (frozen here on purpose).
_V1_SCHEMA = """
CREATE TABLE runs (id INTEGER PRIMARY KEY, run_key TEXT NOT NULL UNIQUE, model TEXT NOT NULL, params TEXT NOT NULL,
    data TEXT NOT NULL, data_fingerprint TEXT NOT NULL, protocol TEXT NOT NULL, seed INTEGER NOT NULL,
    git_commit TEXT, versions TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('complete', 'failed')), error TEXT, train_seconds REAL,
    predict_ms_per_sample REAL, n_parameters INTEGER, threshold REAL, predictions_path TEXT);
CREATE INDEX runs_lookup ON runs (data, protocol, model, status);
CREATE TABLE metrics (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, grp TEXT NOT NULL,
    averaging TEXT NOT NULL CHECK (averaging IN ('sample', 'patient')), metric TEXT NOT NULL, mean REAL,
    ci_low REAL, ci_high REAL, n_samples INTEGER, n_patients INTEGER, PRIMARY KEY (run_id, grp, averaging, metric));
INSERT INTO runs VALUES (1, 'old', 'popular', '{}', 'synthetic', 'fp', 'last_visit', 0, NULL, '{}',
    '2024-01-01T00:00:00+00:00', '2024-01-01T00:01:00+00:00', 'complete', NULL, 1.5, 0.1, NULL, 0.5, NULL);
INSERT INTO metrics VALUES (1, 'overall', 'sample', 'jaccard', 0.25, 0.2, 0.3, 10, 5);
PRAGMA user_version = 1;
"""


def test_version_1_database_opens_and_migrates(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        conn.executescript(_V1_SCHEMA)
    with ResultStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        old = store.get_run(1)
        assert old.run_key == "old" and old.train_seconds == 1.5
        assert old.code_hash is None and old.uncertainty is None and old.diagnostics == "{}"
        (m,) = store.metrics_for(1)
        assert (m.metric, m.mean, m.ci_low, m.n_patients) == ("jaccard", 0.25, 0.2, 5) and math.isnan(m.std)
        new = store.record_run(make_run("new", diagnostics={"epochs_run": 3}), make_metrics())
        assert store.get_run(new).diagnostics == '{"epochs_run":3}'
    with ResultStore(db) as store:  # re-opening a migrated file changes nothing
        assert store.schema_version == SCHEMA_VERSION and len(store.runs()) == 2


def test_version_3_database_gains_the_sweep_tables(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        conn.executescript(_V1_SCHEMA)
    with ResultStore(db) as store:  # a version-3 file: migrate to 3, then take the sweep tables away again
        conn = store._conn_or_raise()
        conn.executescript("DROP TABLE sweep_runs; DROP TABLE sweeps; PRAGMA user_version = 3;")
    with ResultStore(db) as store:
        assert store.schema_version == 4 and store.get_run(1).run_key == "old"
        a = store.record_run(make_run("a"), make_metrics())
        b = store.record_run(make_run("b"), make_metrics())
        sweep = SweepRecord("key", "lr-sweep", "safedrug", {"params": {"lr": [0.1, 0.2]}}, "synthetic", "temporal")
        sweep_id = store.record_sweep(sweep, [SweepTrial(a, 0, 0.5), SweepTrial(b, 1, 0.7, chosen=True)])
        again = store.record_sweep(sweep, [SweepTrial(a, 0, 0.5, chosen=True), SweepTrial(b, 1, None)])
        assert again == sweep_id and store.sweep("key").spec == '{"params":{"lr":[0.1,0.2]}}'
        assert store.sweep_trials(sweep_id) == [SweepTrial(a, 0, 0.5, True), SweepTrial(b, 1, None, False)]
        store.delete_run(b)  # a deleted run leaves its sweep
        assert [t.run_id for t in store.sweep_trials(sweep_id)] == [a]


def _raising_after_two():
    metrics = make_metrics()
    yield metrics[0]
    yield metrics[1]
    raise RuntimeError("simulated crash while producing metrics")


def test_atomic_when_metrics_iteration_raises(db: Path) -> None:
    with ResultStore(db) as store:
        with pytest.raises(RuntimeError, match="simulated crash"):
            store.record_run(make_run("crash"), _raising_after_two())
        assert store.runs() == []
        assert store.completed_run("crash") is None
        # The store stays usable afterwards.
        assert store.record_run(make_run("after"), make_metrics()) > 0
    assert count_rows(db, "runs") == 1
    assert count_rows(db, "metrics") == 3


def test_atomic_when_metric_insert_fails(db: Path) -> None:
    """The run row is inserted first; a failing metric insert must roll it back."""
    dup = MetricResult("overall", "sample", "jaccard", 0.5, 0.4, 0.6, 10, 5)
    with ResultStore(db) as store:
        with pytest.raises(sqlite3.IntegrityError):
            store.record_run(make_run("dup"), [dup, dup])
        with pytest.raises(ValueError, match="averaging"):
            store.record_run(
                make_run("bad"), [dup, MetricResult("overall", "visit", "f1", 0.1, 0, 0.2, 1, 1)]
            )
        assert store.runs() == []
    assert count_rows(db, "runs") == 0
    assert count_rows(db, "metrics") == 0


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def test_process_killed_mid_transaction_leaves_nothing(db: Path) -> None:
    ResultStore(db).close()
    code = textwrap.dedent(
        f"""
        import os
        from medrec_bench.records import MetricResult
        from medrec_bench.store import ResultStore, RunRecord

        def metrics():
            yield MetricResult("overall", "sample", "jaccard", 0.5, 0.4, 0.6, 10, 5)
            yield MetricResult("overall", "sample", "f1", 0.5, 0.4, 0.6, 10, 5)
            os._exit(17)  # hard crash: no cleanup, no rollback

        store = ResultStore({str(db)!r})
        store.record_run(
            RunRecord(run_key="killed", model="m", params="{{}}", data="synthetic",
                      data_fingerprint="fp", protocol="p", seed=0),
            metrics(),
        )
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_child_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 17, proc.stderr
    with ResultStore(db) as store:
        assert store.runs() == []
        assert store.completed_run("killed") is None
        assert store.record_run(make_run("next"), make_metrics()) > 0
    assert count_rows(db, "runs") == 1
    assert count_rows(db, "metrics") == 3


_WRITER = textwrap.dedent(
    """
    import sys, time
    from medrec_bench.records import MetricResult
    from medrec_bench.store import ResultStore, RunRecord

    path, worker, n_runs, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    store = ResultStore(path)
    while time.time() < start_at:
        time.sleep(0.005)
    for i in range(n_runs):
        run = RunRecord(run_key=f"{worker}-{i}", model=f"model-{worker}", params='{"i": %d}' % i,
                        data="synthetic", data_fingerprint="fp", protocol="temporal", seed=i)
        metrics = [MetricResult(g, "sample", m, 0.5, 0.4, 0.6, 10, 5)
                   for g in ("overall", "multi_visit") for m in ("jaccard", "f1")]
        store.record_run(run, metrics)
        if i % 3 == 0:
            store.record_failure(RunRecord(run_key=f"{worker}-fail-{i}", model="x", params="{}",
                                           data="synthetic", data_fingerprint="fp",
                                           protocol="temporal", seed=i), "boom")
            store.record_run(RunRecord(run_key=f"{worker}-fail-{i}", model="x", params="{}",
                                       data="synthetic", data_fingerprint="fp",
                                       protocol="temporal", seed=i), metrics[:1])
    store.close()
    print("done", worker)
    """
)


def test_concurrent_writers_lose_nothing(db: Path) -> None:
    n_workers, n_runs = 3, 30
    start_at = time.time() + 1.5  # every writer starts at the same instant
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db), f"w{w}", str(n_runs), str(start_at)],
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(n_workers)
    ]
    for w, proc in enumerate(procs):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert out.strip() == f"done w{w}"
        assert err == ""

    n_replaced = len(range(0, n_runs, 3))
    with ResultStore(db) as store:
        runs = store.runs()
        assert len(runs) == n_workers * (n_runs + n_replaced)
        assert all(r.status == "complete" for r in runs)
        keys = {r.run_key for r in runs}
        for w in range(n_workers):
            for i in range(n_runs):
                assert f"w{w}-{i}" in keys
                run = store.completed_run(f"w{w}-{i}")
                assert run is not None and len(store.metrics_for(run.id)) == 4
    assert count_rows(db, "metrics") == n_workers * (n_runs * 4 + n_replaced)


def _not_sqlite(path):
    path.write_text("hello, not a database")
    return path


def _directory(path):
    path.mkdir()
    return path


def _under_a_file(path):
    path.write_text("a file")
    return path / "x.db"


def _newer_schema(path):
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    return path


def _other_runs_table(path):
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
    return path


def _missing_folder(path):
    return path / "no" / "such" / "x.db"


@pytest.mark.parametrize("make, message", [
    (_not_sqlite, "is not a medrec-bench SQLite database (file is not a database)"),
    (_directory, "is a directory; expected a database file"),
    (_under_a_file, "is a file, not a folder"),
    (_newer_schema, f"schema version {SCHEMA_VERSION + 1}, this code supports up to {SCHEMA_VERSION}"),
    (_other_runs_table, "is not a medrec-bench SQLite database"),
    (_missing_folder, "does not exist (create it, or pass --create-dirs)"),
])
def test_a_path_that_is_not_a_store_is_a_one_line_error_and_left_alone(tmp_path, make, message):
    path = make(tmp_path / "store")
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(StoreError, match=re.escape(message)) as err:
        ResultStore(path)
    assert "\n" not in str(err.value)
    assert (path.read_bytes() if path.is_file() else None) == before  # nothing written into a foreign file
    assert not (tmp_path / "store" / "no").exists()


def test_parent_folders_are_created_only_when_asked(tmp_path):
    with ResultStore(tmp_path / "a" / "b" / "r.db", create_parents=True) as store:
        assert store.runs() == []
