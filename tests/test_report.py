"""The report: pooling stored runs over seeds, tables and their notes, p-values by direction, the run summary."""

from __future__ import annotations

import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

import medrec_bench
from medrec_bench import resources
from medrec_bench.evaluate import UNCERTAINTY_METHODS
from medrec_bench.leaderboard import build_boards
from medrec_bench.predictions import save_predictions
from medrec_bench.records import MetricResult
from medrec_bench.report import (
    INTERVALS,
    RECORD_KEYS,
    leaderboard_records,
    params_hash,
    pvalues_vs_best,
    results,
    run_summary,
    uncertainty_note,
)
from medrec_bench.store import ResultStore
from medrec_bench.tasks.protocols import Sample
from tests.test_store import REPO_ROOT, make_metrics, make_run


@pytest.fixture
def store(tmp_path: Path):
    with ResultStore(tmp_path / "r.db") as db:
        yield db


# --- pooling over seeds (moved here from the store) -------------------------------------------------------------------


def test_leaderboard_aggregates_two_seeds(store) -> None:
    store.record_run(make_run("s0", seed=0), make_metrics(jaccard=0.40, f1=0.60))
    store.record_run(make_run("s1", seed=1), make_metrics(jaccard=0.50, f1=0.70))
    store.record_failure(make_run("s2", seed=2), "crashed")
    recs = leaderboard_records(store, group="overall", averaging="sample", metric="jaccard")
    assert len(recs) == 1
    rec = recs[0]
    assert tuple(rec) == RECORD_KEYS
    assert rec["model"] == "safedrug"
    assert rec["data"] == "synthetic" and rec["protocol"] == "temporal"
    assert rec["n_seeds"] == 2 and rec["uncertainty"] is None
    # means 0.40, 0.50 -> 0.45; CI lows 0.30, 0.40 -> 0.35; highs 0.50, 0.60 -> 0.55
    assert rec["mean"] == pytest.approx(0.45)
    assert rec["ci_low"] == pytest.approx(0.35)
    assert rec["ci_high"] == pytest.approx(0.55)
    assert rec["params_hash"] == params_hash('{"dim":64,"lr":0.001}', "fp1")

    # Unfiltered: one record per (group, averaging, metric), sorted deterministically.
    all_recs = leaderboard_records(store)
    keys = [(r["group"], r["averaging"], r["metric"]) for r in all_recs]
    assert keys == [
        ("multi_visit", "patient", "jaccard"),
        ("overall", "sample", "f1"),
        ("overall", "sample", "jaccard"),
    ]
    f1 = all_recs[1]
    assert f1["mean"] == pytest.approx(0.65) and f1["n_seeds"] == 2
    assert f1["ci_low"] == pytest.approx(0.60) and f1["ci_high"] == pytest.approx(0.70)


def test_leaderboard_single_seed_uses_run_ci(store) -> None:
    store.record_run(make_run("one"), [MetricResult("overall", "sample", "jaccard", 0.5, 0.41, 0.57, 10, 5)])
    (rec,) = leaderboard_records(store)
    assert rec["n_seeds"] == 1
    assert (rec["mean"], rec["ci_low"], rec["ci_high"]) == (0.5, 0.41, 0.57)


def test_failed_runs_not_in_leaderboard(store) -> None:
    store.record_failure(make_run("f0", model="molerec"), "boom")
    assert leaderboard_records(store) == []
    store.record_run(make_run("ok", model="leader"), make_metrics())
    assert {r["model"] for r in leaderboard_records(store)} == {"leader"}


def test_leaderboard_separates_params_fingerprints_and_filters(store) -> None:
    store.record_run(make_run("p1", params='{"dim": 64}'), make_metrics(jaccard=0.4))
    store.record_run(make_run("p2", params='{"dim": 128}'), make_metrics(jaccard=0.6))
    store.record_run(make_run("p3", params='{"dim": 64}', data_fingerprint="fp2"), make_metrics(jaccard=0.8))
    store.record_run(make_run("p4", protocol="random"), make_metrics(jaccard=0.1))
    store.record_run(make_run("p5", data="mimic3"), make_metrics(jaccard=0.2))

    recs = leaderboard_records(store, data="synthetic", protocol="temporal", group="overall", averaging="sample",
                               metric="jaccard")
    assert len(recs) == 3
    assert all(r["model"] == "safedrug" and r["n_seeds"] == 1 for r in recs)
    assert sorted(r["mean"] for r in recs) == pytest.approx([0.4, 0.6, 0.8])
    assert len({r["params_hash"] for r in recs}) == 3
    assert recs == sorted(recs, key=lambda r: r["params_hash"])

    assert [r["mean"] for r in leaderboard_records(store, protocol="random", metric="jaccard",
                                                   group="overall")] == [0.1]
    assert [r["mean"] for r in leaderboard_records(store, data="mimic3", metric="jaccard", group="overall")] == [0.2]


def test_leaderboard_same_seed_counts_once_latest_wins(store) -> None:
    store.record_run(make_run("t-fixed", ended_at="2024-01-01T00:00:00+00:00"), make_metrics(jaccard=0.3))
    store.record_run(make_run("t-tuned", ended_at="2024-02-01T00:00:00+00:00"), make_metrics(jaccard=0.5))
    (rec,) = leaderboard_records(store, group="overall", metric="jaccard")
    assert rec["n_seeds"] == 1 and rec["mean"] == pytest.approx(0.5)


def test_code_versions_and_uncertainty_methods_are_not_pooled(store) -> None:
    store.record_run(make_run("old", seed=0, code_hash="a" * 16, uncertainty="bootstrap"), make_metrics(0.3))
    store.record_run(make_run("new", seed=1, code_hash="b" * 16, uncertainty="bootstrap"), make_metrics(0.5))
    store.record_run(make_run("rounds", seed=2, code_hash="b" * 16, uncertainty="rounds_with_replacement"),
                     make_metrics(0.7))
    recs = leaderboard_records(store, group="overall", metric="jaccard")
    assert [(r["mean"], r["uncertainty"], r["n_seeds"]) for r in recs] == [
        (0.3, "bootstrap", 1), (0.5, "bootstrap", 1), (0.7, "rounds_with_replacement", 1)]
    assert recs[0]["params_hash"] != recs[1]["params_hash"] == recs[2]["params_hash"]
    boards = build_boards(store)  # one board per uncertainty method; configurations of one model told apart
    assert [(b.uncertainty, sorted(r.model for r in b.rows)) for b in boards] == [
        ("bootstrap", sorted([f"safedrug[{recs[0]['params_hash']}]", f"safedrug[{recs[1]['params_hash']}]"])),
        ("rounds_with_replacement", ["safedrug"]),
    ]


# --- what the ± means -------------------------------------------------------------------------------------------------


def test_every_uncertainty_method_has_a_note() -> None:
    assert set(INTERVALS) == set(UNCERTAINTY_METHODS)


@pytest.mark.parametrize("uncertainty, seeds, note", [
    ("bootstrap", 1, "mean ± half the 95% bootstrap CI"),
    ("bootstrap", 3, "mean over seeds ± half the mean per-seed 95% bootstrap CI"),
    ("rounds_without_replacement", 1, "mean ± std over rounds (without replacement)"),
    ("rounds_with_replacement", 5, "mean over seeds ± mean per-seed std over rounds (with replacement)"),
    (None, 2, "mean ± half the stored interval (uncertainty method not recorded)"),
])
def test_uncertainty_note(uncertainty, seeds, note) -> None:
    assert uncertainty_note(uncertainty, seeds) == note


def test_table_note_says_what_the_interval_is(store) -> None:
    for seed in (0, 1):
        store.record_run(make_run(f"r{seed}", seed=seed, uncertainty="rounds_without_replacement"), make_metrics())
    assert [b.title for b in build_boards(store, averaging=None)] == ["synthetic / temporal"] * 2
    for board in build_boards(store, averaging=None):
        assert (f"{board.averaging} averaging; decision threshold 0.5 on every run; metrics: mean over seeds ± mean "
                "per-seed std over rounds (without replacement);") in board.note()


# --- p-values ---------------------------------------------------------------------------------------------------------


def _ddi_drugs() -> tuple[str, str, str, str]:
    """Drugs (a, b, c, d): a and b interact, c and d interact with nothing among the four."""
    pairs = resources.ddi_pairs()
    a, b = sorted(pairs)[0]
    codes = sorted({code for pair in pairs for code in pair} | set(resources.atc3_smiles()))
    quiet = [c for c in codes if c not in (a, b)]
    for c, d in combinations(quiet, 2):
        if not resources.ddi_matrix([a, b, c, d])[2:].any():
            return a, b, c, d
    raise AssertionError("no two drugs free of interactions")  # pragma: no cover


def _save(path: Path, picked: list[int], drugs: tuple[str, ...], n_patients: int = 40, flip: int = 0) -> Path:
    """Predictions for ``n_patients`` one-visit patients: ``picked`` drugs at 0.9, the rest 0.1; true set {0, 1}.

    The first ``flip`` patients get the other model's drugs (so the two models differ on most, not all)."""
    samples = [Sample(f"p{i}", "v", (), (), (), {}, (0, 1)) for i in range(n_patients)]
    y_prob = np.full((n_patients, len(drugs)), 0.1, dtype=np.float32)
    y_prob[:, picked] = 0.9
    other = [j for j in range(len(drugs)) if j not in picked]
    y_prob[:flip] = 0.1
    y_prob[:flip, other] = 0.9
    save_predictions(path, samples, y_prob, drugs, "salt")
    return path


def test_pvalues_follow_the_metric_direction(tmp_path) -> None:
    drugs = _ddi_drugs()
    files = {"interacting": (_save(tmp_path / "i.parquet", [0, 1], drugs, flip=3), 0.5),
             "quiet": (_save(tmp_path / "q.parquet", [2, 3], drugs, flip=3), 0.5)}
    by_ddi = pvalues_vs_best(files, metric="ddi_rate", n_boot=200)
    assert list(by_ddi) == ["interacting"]  # the lower DDI rate is the best
    assert by_ddi["interacting"] < 0.05
    by_jaccard = pvalues_vs_best(files, metric="jaccard", n_boot=200)
    assert list(by_jaccard) == ["quiet"]  # "interacting" predicts the true drugs 0, 1: the higher Jaccard is best
    assert by_jaccard["quiet"] < 0.05
    with pytest.raises(ValueError, match="no better direction"):
        pvalues_vs_best(files, metric="n_drugs")


# --- the run summary --------------------------------------------------------------------------------------------------


def test_run_summary_pools_exactly_the_configurations_just_run(store, tmp_path) -> None:
    drugs = _ddi_drugs()
    ids = []
    for model, picked, jac in (("good", [0, 1], 0.6), ("bad", [2, 3], 0.2)):
        for seed in (0, 1):
            path = _save(tmp_path / f"{model}{seed}.parquet", picked, drugs, flip=3)
            run = make_run(f"{model}{seed}", seed=seed, model=model, protocol="last_visit",
                           uncertainty="bootstrap", code_hash="c" * 16, train_seconds=2.0 + seed,
                           predictions_path=str(path), params='{"dim": 64}')
            ids.append(store.record_run(run, make_metrics(jaccard=jac + seed / 10)))
    # an earlier configuration of "good" (other params) and another protocol stay out of the summary
    store.record_run(make_run("stale", model="good", protocol="last_visit", params='{"dim": 8}'), make_metrics(0.9))
    store.record_run(make_run("visit", model="good", protocol="visit"), make_metrics(0.9))

    summary = run_summary(store, ids, n_boot=200)
    assert summary.title == ("synthetic / last_visit / overall / sample averaging / 2 seed(s); "
                             "mean over seeds ± half the mean per-seed 95% bootstrap CI; best marked **; "
                             "DDI rate: lower is better")
    jaccard = {r["model"]: r["mean"] for r in summary.records if r["metric"] == "jaccard"}
    assert jaccard == pytest.approx({"good": 0.65, "bad": 0.25})
    assert summary.train_seconds == {"good": 2.5, "bad": 2.5}
    assert list(summary.pvalues) == ["bad"] and summary.pvalues["bad"] < 0.05
    table = summary.render()
    assert "| good" in table and "| bad" in table and "p vs best (Jaccard)" in table and "2.5" in table

    with pytest.raises(ValueError, match="no stored runs"):
        run_summary(store, [None, 999])


# --- results as a frame -----------------------------------------------------------------------------------------------


def test_results_to_pandas_is_a_tidy_frame(store) -> None:
    pytest.importorskip("pandas")
    store.record_run(make_run("s0", seed=0), make_metrics(jaccard=0.4))
    store.record_run(make_run("s1", seed=1), make_metrics(jaccard=0.6))
    frame = medrec_bench.results(store).to_pandas()
    assert list(frame.columns) == list(RECORD_KEYS) and len(frame) == 3
    row = frame[(frame["group"] == "overall") & (frame["metric"] == "jaccard")].iloc[0]
    assert row["mean"] == pytest.approx(0.5) and row["n_seeds"] == 2
    by_path = results(store.path, metric="f1").to_pandas()
    assert by_path["metric"].tolist() == ["f1"]


def test_results_without_pandas_names_the_extra(store, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # what `import pandas` meets when it is not installed
    with pytest.raises(ImportError) as info:
        results(store).to_pandas()
    assert "\n" not in str(info.value) and 'pip install -e ".[pandas]"' in str(info.value)


def test_report_does_not_import_torch() -> None:
    code = "import sys, medrec_bench.report; print('torch' in sys.modules, 'medrec_bench.runner' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
