"""The leaderboard: one board per cohort x protocol, its rows, cost, reference row, marker, note and text formats."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medrec_bench.leaderboard import build_boards, parse_groups, render
from medrec_bench.leaderboard.board import MAIN_COLUMNS
from medrec_bench.records import MetricResult
from medrec_bench.store import ResultStore
from tests.test_report import _ddi_drugs, _save
from tests.test_store import REPO_ROOT, make_run

#: model -> (overall Jaccard of seed 0, predicted drugs in its prediction files, patients flipped, DDI rate)
MODELS = {"good": (0.60, [0, 1], 3, 0.08), "close": (0.58, [0, 1], 4, 0.06), "bad": (0.20, [2, 3], 3, 0.01)}
GROUPS = ("overall", "single_visit", "multi_visit", "visits_1", "visits_2")


def board_metrics(jaccard: float, ddi: float, averaging: str = "sample") -> list[MetricResult]:
    """Every metric the board shows, for every group: Jaccard ``jaccard`` overall (single-visit +0.01, multi-visit
    -0.01), PRAUC Jaccard + 0.2, F1 Jaccard + 0.1, intervals mean ± 0.05."""
    out = []
    for group in GROUPS:
        shift = {"single_visit": 0.01, "multi_visit": -0.01}.get(group, 0.0)
        for metric, mean in (("jaccard", jaccard + shift), ("prauc", jaccard + 0.2 + shift), ("f1", jaccard + 0.1),
                             ("ddi_rate", ddi), ("n_drugs", 3.0), ("ddi_rate_true", 0.07)):
            out.append(MetricResult(group, averaging, metric, mean, mean - 0.05, mean + 0.05, 40, 40, 0.02))
    return out


def fill_store(store: ResultStore, folder: Path, models: dict = MODELS, data: str = "cohortA",
               protocol: str = "last_visit") -> None:
    """Two seeds of every model on ``data``/``protocol``; seed 1 scores 0.02 higher and trains 2 s longer."""
    drugs = _ddi_drugs()
    for model, (jaccard, picked, flip, ddi) in models.items():
        for seed in (0, 1):
            path = _save(folder / f"{data}-{protocol}-{model}{seed}.parquet", picked, drugs, flip=flip)
            run = make_run(f"{data}{protocol}{model}{seed}", seed=seed, model=model, data=data, protocol=protocol,
                           uncertainty="bootstrap", code_hash="c" * 16, train_seconds=2.0 + 2 * seed,
                           predict_ms_per_sample=0.5, n_parameters=1000, predictions_path=str(path))
            store.record_run(run, board_metrics(jaccard + seed * 0.02, ddi))


@pytest.fixture
def store(tmp_path: Path):
    with ResultStore(tmp_path / "r.db") as db:
        fill_store(db, tmp_path)
        yield db


def test_one_board_per_cohort_and_protocol_sorted_by_jaccard(store, tmp_path) -> None:
    fill_store(store, tmp_path, data="cohortA", protocol="visit")
    boards = build_boards(store)
    # before: one table per cohort x protocol x group x averaging (here 2 x 5 x 1 = 10 tables)
    assert [b.title for b in boards] == ["cohortA / last_visit", "cohortA / visit"]
    board = boards[0]
    assert [r.model for r in board.rows] == ["good", "close", "bad"]
    good = board.rows[0]
    assert good.n_seeds == 2
    assert good.cells["overall.jaccard"].mean == pytest.approx(0.61)
    assert good.cells["overall.jaccard"].low == pytest.approx(0.56)
    assert good.cells["multi_visit.prauc"].mean == pytest.approx(0.80)
    cost = good.cells["cost.train_seconds"]
    assert (cost.mean, cost.low, cost.high, cost.n_seeds) == (3.0, 2.0, 4.0, 2)
    assert good.cells["cost.n_parameters"].mean == 1000


def test_reference_row_pvalues_and_best_marks(store) -> None:
    board = build_boards(store)[0]
    assert board.reference == pytest.approx({"overall.ddi_rate": 0.07, "overall.n_drugs": 2.0})  # true set {0, 1}
    assert board.pvalue_seed == 0
    good, close, bad = board.rows
    assert good.pvalue is None and not board.not_worse(good)
    assert close.pvalue >= 0.05 and board.not_worse(close)  # one patient apart from the best
    assert bad.pvalue < 0.05 and not board.not_worse(bad)
    best = board.best_values(MAIN_COLUMNS)
    assert best["overall.jaccard"] == pytest.approx(0.61)
    assert best["overall.ddi_rate"] == pytest.approx(0.01)  # lower is better
    assert "overall.n_drugs" not in best  # no better direction


def test_markdown_table_columns_marks_reference_and_note(store) -> None:
    text = render(build_boards(store), "md")
    lines = text.splitlines()
    assert lines[0] == "## cohortA / last_visit"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["model", "Jaccard", "F1", "PRAUC", "DDI rate", "#drugs", "single-visit Jaccard",
                      "single-visit PRAUC", "multi-visit Jaccard", "multi-visit PRAUC", "parameters", "train s",
                      "predict ms/sample", "n"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[4:8]}
    assert rows["good"][1] == "**0.6100 ± 0.0500**"
    assert rows["close"][1] == "0.5900 ± 0.0500 ≈"
    assert rows["bad"][1] == "0.2100 ± 0.0500" and rows["bad"][4] == "**0.0100 ± 0.0500**"
    assert rows["good"][10:14] == ["1000", "**3**", "**0.5**", "2"]  # equal times: every row is best
    assert rows["ground truth"][4:6] == ["0.0700", "2.00"]
    note = lines[9]
    assert note.startswith("sample averaging; decision threshold 0.5 on every run; metrics: mean over seeds ± half "
                           "the mean per-seed 95% bootstrap CI;")
    assert "seed 0, 1000 resamples, p ≥ 0.05" in note
    assert "by number of visits" not in text


def test_group_breakdown_table(store) -> None:
    text = render(build_boards(store), "md", parse_groups("visits_1,visits_2"))
    part = text.split("### cohortA / last_visit: by number of visits")[1]
    header = [c.strip() for c in part.strip().splitlines()[0].strip("|").split("|")]
    assert header == ["model", "visits_1 Jaccard", "visits_1 PRAUC", "visits_2 Jaccard", "visits_2 PRAUC", "n"]
    with pytest.raises(ValueError, match="unknown group 'visits_9'"):
        parse_groups("visits_1,visits_9")


def test_filters_models_averaging_and_configurations(store, tmp_path) -> None:
    assert [r.model for r in build_boards(store, models=["bad", "good"])[0].rows] == ["good", "bad"]
    assert build_boards(store, averaging="patient") == []
    store.record_run(make_run("patient", model="good", data="cohortA", protocol="last_visit", uncertainty="bootstrap",
                              code_hash="c" * 16), board_metrics(0.3, 0.05, averaging="patient"))
    assert [b.averaging for b in build_boards(store, averaging=None)] == ["patient", "sample"]
    other = make_run("dim8", model="good", params='{"dim": 8}', data="cohortA", protocol="last_visit",
                     uncertainty="bootstrap", code_hash="c" * 16)
    store.record_run(other, board_metrics(0.9, 0.05))
    labels = [r.model for r in build_boards(store)[0].rows]
    assert labels[0].startswith("good[") and sum(label.startswith("good[") for label in labels) == 2


def test_csv_and_json_exports(store) -> None:
    boards = build_boards(store)
    rows = list(csv.DictReader(io.StringIO(render(boards, "csv"))))
    assert [r["model"] for r in rows] == ["good", "close", "bad", "ground truth"]
    assert float(rows[0]["overall.jaccard.mean"]) == pytest.approx(0.61)
    assert float(rows[0]["cost.train_seconds.high"]) == 4.0 and rows[0]["pvalue_vs_best"] == ""
    assert float(rows[3]["overall.n_drugs.mean"]) == 2.0
    data = json.loads(render(boards, "json"))
    assert len(data) == 1 and data[0]["reference"]["overall.ddi_rate"] == pytest.approx(0.07)
    close = data[0]["rows"][1]
    assert close["model"] == "close" and close["not_worse_than_best"] is True
    assert close["cells"]["visits_2.jaccard"]["n_seeds"] == 2 and "overall.recall" not in close["cells"]
    assert not any(math.isnan(v) for r in data[0]["rows"] for c in r["cells"].values() for v in c.values()
                   if isinstance(v, float))


def test_cli_leaderboard_formats_filters_and_out(store, tmp_path) -> None:
    from click.testing import CliRunner

    from medrec_bench.cli import main

    runner = CliRunner()
    db = str(store.path)
    md = runner.invoke(main, ["leaderboard", "--store", db, "--models", "good,bad"])
    assert md.exit_code == 0, md.output
    assert re.findall(r"^## .*$", md.output, flags=re.M) == ["## cohortA / last_visit"]
    assert "| close" not in md.output and "| bad" in md.output
    out = runner.invoke(main, ["leaderboard", "--store", db, "--format", "json", "--out", str(tmp_path / "o")])
    assert out.exit_code == 0 and "leaderboard.json" in out.output
    assert json.loads((tmp_path / "o" / "leaderboard.json").read_text())[0]["protocol"] == "last_visit"
    page = runner.invoke(main, ["leaderboard", "--store", db, "--format", "html", "--out", str(tmp_path / "o")])
    assert page.exit_code == 0 and "leaderboard.html (1 table(s))" in page.output
    html = (tmp_path / "o" / "leaderboard.html").read_text()
    assert all(f'<tr data-model="{name}">' in html for name in MODELS)
    bad = runner.invoke(main, ["leaderboard", "--store", db, "--group", "visits_9"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: unknown group 'visits_9'")


def test_text_formats_do_not_import_matplotlib() -> None:
    code = ("import sys; from medrec_bench.leaderboard import render; render([], 'md'); render([], 'csv'); "
            "print('matplotlib' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


@pytest.mark.parametrize("value, text", [(0, "0"), (9999, "9999"), (10_000, "10k"), (22_336, "22.3k"),
                                         (237_120, "237k"), (999_999, "1M"), (1_234_567, "1.23M"),
                                         (134_515_008, "135M"), (7e9, "7G")])
def test_parameter_counts_are_printed_in_their_own_unit(value, text):
    from medrec_bench.leaderboard.text import compact_count

    assert compact_count(value) == text
