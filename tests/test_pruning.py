"""Deleting runs: by id or by filters (a model, one configuration as the leaderboard labels it, a cohort, a
protocol), metrics and prediction files go with them, and nothing is deleted without a filter."""

import pytest
from click.testing import CliRunner

from medrec_bench.cli import main
from medrec_bench.pruning import delete_runs, select_runs
from medrec_bench.report import run_config
from medrec_bench.store import ResultStore
from tests.test_store import make_metrics, make_run


def _store(tmp_path):
    store = ResultStore(tmp_path / "r.db")
    preds = tmp_path / "preds"
    preds.mkdir()
    for key, kw in {"old": {"code_hash": "c1"}, "new": {"code_hash": "c2"}, "other": {"model": "gamenet"},
                    "demo": {"data": "mimic3-x"}}.items():
        path = preds / f"{key}.parquet"
        path.write_bytes(b"p")
        path.with_suffix(".json").write_text("{}")
        store.record_run(make_run(key, predictions_path=str(path), **kw), make_metrics(0.4))
    return store, preds


def test_select_by_label_cohort_and_id(tmp_path):
    store, _ = _store(tmp_path)
    with store:
        runs = {r.run_key: r for r in store.runs()}
        label = f"safedrug[{run_config(runs['old'])}]"
        assert [r.run_key for r in select_runs(store, model=label)] == ["old"]
        assert {r.run_key for r in select_runs(store, model="safedrug")} == {"old", "new", "demo"}
        assert [r.run_key for r in select_runs(store, data="mimic3-x")] == ["demo"]
        assert [r.run_key for r in select_runs(store, ids=[runs["other"].id])] == ["other"]
        assert select_runs(store, ids=[runs["other"].id], model="safedrug") == []
        with pytest.raises(ValueError, match="name the runs"):
            select_runs(store)
        with pytest.raises(ValueError, match="leaderboard label"):
            select_runs(store, model="safedrug[zz]")


def test_delete_removes_metrics_and_prediction_files(tmp_path):
    store, preds = _store(tmp_path)
    with store:
        old = select_runs(store, data="mimic3-x")
        assert delete_runs(store, old) == 1
        assert delete_runs(store, old) == 0  # already gone
        assert store.metrics_for(old[0].id) == []
        assert sorted(p.name for p in preds.iterdir()) == sorted(
            f"{k}.{ext}" for k in ("old", "new", "other") for ext in ("parquet", "json"))
        assert len(store.runs()) == 3


def test_cli_dry_run_deletes_nothing_then_deletes(tmp_path):
    store, _ = _store(tmp_path)
    store.close()
    db = str(tmp_path / "r.db")
    out = CliRunner().invoke(main, ["runs", "delete", "--store", db, "--model", "gamenet", "--dry-run"])
    assert out.exit_code == 0 and "would delete 1 run(s)" in out.output and "gamenet[" in out.output
    with ResultStore(db) as again:
        assert len(again.runs()) == 4
    out = CliRunner().invoke(main, ["runs", "delete", "--store", db, "--model", "gamenet"])
    assert out.exit_code == 0 and "deleted 1 run(s)" in out.output
    out = CliRunner().invoke(main, ["runs", "delete", "--store", db])
    assert out.exit_code == 1 and "name the runs to delete" in out.output
    with ResultStore(db) as again:
        assert {r.model for r in again.runs()} == {"safedrug"}
