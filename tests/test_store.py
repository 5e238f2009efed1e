"""Tests for medrec_bench.store (SQLite results store)."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from medrec_bench.store import (
    SCHEMA_VERSION,
    MetricRow,
    ResultStore,
    RunRecord,
    params_hash,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FakeMetricResult:
    """Stand-in for the MetricResult dataclass defined elsewhere (duck typing)."""

    group: str
    averaging: str
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n_samples: int
    n_patients: int


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


def make_metrics(jaccard: float = 0.5, f1: float = 0.6) -> list[MetricRow]:
    return [
        MetricRow("overall", "sample", "jaccard", jaccard, jaccard - 0.1, jaccard + 0.1, 100, 40),
        MetricRow("overall", "sample", "f1", f1, f1 - 0.05, f1 + 0.05, 100, 40),
        MetricRow("multi_visit", "patient", "jaccard", jaccard / 2, 0.0, jaccard, 30, 10),
    ]


def count_rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "medrec.db"


def test_open_creates_parent_dirs_schema_and_wal(db: Path) -> None:
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
    with pytest.raises(RuntimeError, match="schema version"):
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


def test_metric_duck_typing_and_defaults(db: Path) -> None:
    objs = [FakeMetricResult("overall", "patient", "ddi_rate", 0.07, 0.06, 0.08, 50, 20)]
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
            MetricRow("overall", "patient", "ddi_rate", 0.07, 0.06, 0.08, 50, 20)
        ]


def test_nan_metric_reads_back_as_nan(db: Path) -> None:
    with ResultStore(db) as store:
        run_id = store.record_run(
            make_run(), [MetricRow("overall", "sample", "auc", float("nan"), 0.1, 0.2, 5, 2)]
        )
        (m,) = store.metrics_for(run_id)
        assert math.isnan(m.mean) and m.ci_low == 0.1


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


def test_leaderboard_aggregates_two_seeds(db: Path) -> None:
    with ResultStore(db) as store:
        store.record_run(make_run("s0", seed=0), make_metrics(jaccard=0.40, f1=0.60))
        store.record_run(make_run("s1", seed=1), make_metrics(jaccard=0.50, f1=0.70))
        store.record_failure(make_run("s2", seed=2), "crashed")
        recs = store.leaderboard_records(group="overall", averaging="sample", metric="jaccard")
        assert len(recs) == 1
        rec = recs[0]
        assert set(rec) == {
            "model", "params_hash", "data", "protocol", "group", "averaging",
            "metric", "mean", "ci_low", "ci_high", "n_seeds",
        }
        assert rec["model"] == "safedrug"
        assert rec["data"] == "synthetic" and rec["protocol"] == "temporal"
        assert rec["n_seeds"] == 2
        # means 0.40, 0.50 -> 0.45; CI lows 0.30, 0.40 -> 0.35; highs 0.50, 0.60 -> 0.55
        assert rec["mean"] == pytest.approx(0.45)
        assert rec["ci_low"] == pytest.approx(0.35)
        assert rec["ci_high"] == pytest.approx(0.55)
        assert rec["params_hash"] == params_hash('{"dim":64,"lr":0.001}', "fp1")

        # Unfiltered: one record per (group, averaging, metric), sorted deterministically.
        all_recs = store.leaderboard_records()
        keys = [(r["group"], r["averaging"], r["metric"]) for r in all_recs]
        assert keys == [
            ("multi_visit", "patient", "jaccard"),
            ("overall", "sample", "f1"),
            ("overall", "sample", "jaccard"),
        ]
        f1 = all_recs[1]
        assert f1["mean"] == pytest.approx(0.65) and f1["n_seeds"] == 2
        assert f1["ci_low"] == pytest.approx(0.60) and f1["ci_high"] == pytest.approx(0.70)


def test_leaderboard_single_seed_uses_run_ci(db: Path) -> None:
    with ResultStore(db) as store:
        store.record_run(
            make_run("one"), [MetricRow("overall", "sample", "jaccard", 0.5, 0.41, 0.57, 10, 5)]
        )
        (rec,) = store.leaderboard_records()
        assert rec["n_seeds"] == 1
        assert (rec["mean"], rec["ci_low"], rec["ci_high"]) == (0.5, 0.41, 0.57)


def test_failed_runs_not_in_leaderboard(db: Path) -> None:
    with ResultStore(db) as store:
        store.record_failure(make_run("f0", model="molerec"), "boom")
        assert store.leaderboard_records() == []
        store.record_run(make_run("ok", model="leader"), make_metrics())
        assert {r["model"] for r in store.leaderboard_records()} == {"leader"}


def test_leaderboard_separates_params_fingerprints_and_filters(db: Path) -> None:
    with ResultStore(db) as store:
        store.record_run(make_run("p1", params='{"dim": 64}'), make_metrics(jaccard=0.4))
        store.record_run(make_run("p2", params='{"dim": 128}'), make_metrics(jaccard=0.6))
        store.record_run(
            make_run("p3", params='{"dim": 64}', data_fingerprint="fp2"), make_metrics(jaccard=0.8)
        )
        store.record_run(make_run("p4", protocol="random"), make_metrics(jaccard=0.1))
        store.record_run(make_run("p5", data="mimic3"), make_metrics(jaccard=0.2))

        recs = store.leaderboard_records(
            data="synthetic", protocol="temporal", group="overall", averaging="sample", metric="jaccard"
        )
        assert len(recs) == 3
        assert all(r["model"] == "safedrug" and r["n_seeds"] == 1 for r in recs)
        assert sorted(r["mean"] for r in recs) == pytest.approx([0.4, 0.6, 0.8])
        assert len({r["params_hash"] for r in recs}) == 3
        assert recs == sorted(recs, key=lambda r: r["params_hash"])

        assert [r["mean"] for r in store.leaderboard_records(protocol="random", metric="jaccard",
                                                             group="overall")] == [0.1]
        assert [r["mean"] for r in store.leaderboard_records(data="mimic3", metric="jaccard",
                                                             group="overall")] == [0.2]


def test_leaderboard_same_seed_counts_once_latest_wins(db: Path) -> None:
    with ResultStore(db) as store:
        store.record_run(
            make_run("t-fixed", ended_at="2024-01-01T00:00:00+00:00"), make_metrics(jaccard=0.3)
        )
        store.record_run(
            make_run("t-tuned", ended_at="2024-02-01T00:00:00+00:00"), make_metrics(jaccard=0.5)
        )
        (rec,) = store.leaderboard_records(group="overall", metric="jaccard")
        assert rec["n_seeds"] == 1 and rec["mean"] == pytest.approx(0.5)


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
    dup = MetricRow("overall", "sample", "jaccard", 0.5, 0.4, 0.6, 10, 5)
    with ResultStore(db) as store:
        with pytest.raises(sqlite3.IntegrityError):
            store.record_run(make_run("dup"), [dup, dup])
        with pytest.raises(ValueError, match="averaging"):
            store.record_run(
                make_run("bad"), [dup, MetricRow("overall", "visit", "f1", 0.1, 0, 0.2, 1, 1)]
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
        from medrec_bench.store import ResultStore, RunRecord, MetricRow

        def metrics():
            yield MetricRow("overall", "sample", "jaccard", 0.5, 0.4, 0.6, 10, 5)
            yield MetricRow("overall", "sample", "f1", 0.5, 0.4, 0.6, 10, 5)
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
    from medrec_bench.store import ResultStore, RunRecord, MetricRow

    path, worker, n_runs, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    store = ResultStore(path)
    while time.time() < start_at:
        time.sleep(0.005)
    for i in range(n_runs):
        run = RunRecord(run_key=f"{worker}-{i}", model=f"model-{worker}", params='{"i": %d}' % i,
                        data="synthetic", data_fingerprint="fp", protocol="temporal", seed=i)
        metrics = [MetricRow(g, "sample", m, 0.5, 0.4, 0.6, 10, 5)
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
