"""The run archive: complete runs and their metrics survive a round trip between stores, nothing local or per
patient is written, bad lines are one-line errors naming the line, and the runner skips imported runs."""

import json
import math

import pytest
from click.testing import CliRunner

from medrec_bench.archive import ArchiveError, export_runs, import_runs
from medrec_bench.cli import main
from medrec_bench.records import MetricResult
from medrec_bench.runner import EvalSettings, Runner
from medrec_bench.store import ResultStore
from tests.test_store import make_metrics, make_run


def _filled(path):
    store = ResultStore(path)
    store.record_run(make_run("b-key", seed=1), make_metrics(0.4))
    store.record_run(make_run("a-key", seed=0, data="mimic3-x", diagnostics={"epochs_run": 7}),
                     [*make_metrics(0.5), MetricResult("overall", "sample", "ddi_rate", 0.07, 0.06, 0.08, 100, 40)])
    store.record_failure(make_run("failed-key", seed=2), "RuntimeError: boom")
    return store


def _without_local(run):
    return {k: v for k, v in vars(run).items() if k not in ("id", "predictions_path")}


def test_round_trip_keeps_runs_and_metrics_and_drops_local_fields(tmp_path):
    archive = tmp_path / "runs.jsonl"
    with _filled(tmp_path / "a.db") as source:
        assert export_runs(source, archive) == 2
        originals = {r.run_key: (r, source.metrics_for(r.id)) for r in source.runs(status="complete")}
    text = archive.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["run"]["data"] for line in lines] == ["mimic3-x", "synthetic"]  # sorted by cohort first
    assert "predictions_path" not in text and "results/preds" not in text and "boom" not in text
    assert lines[0]["run"]["diagnostics"] == {"epochs_run": 7}  # JSON fields as objects, not strings

    with ResultStore(tmp_path / "b.db") as target:
        assert import_runs(target, archive) == (2, 0)
        for run in target.runs():
            original, metrics = originals[run.run_key]
            assert _without_local(run) == _without_local(original) and run.predictions_path is None
            copied = target.metrics_for(run.id)
            assert [m.metric for m in copied] == [m.metric for m in metrics]
            for m, o in zip(copied, metrics):
                assert m.mean == o.mean and m.ci_low == o.ci_low and m.n_patients == o.n_patients
                assert (math.isnan(m.std) and math.isnan(o.std)) or m.std == o.std  # NaN survives as null
        assert import_runs(target, archive) == (0, 2)
        assert len(target.runs()) == 2


def test_export_filters_by_cohort(tmp_path):
    with _filled(tmp_path / "a.db") as source:
        assert export_runs(source, tmp_path / "x.jsonl", data="synthetic") == 1
    assert json.loads((tmp_path / "x.jsonl").read_text())["run"]["run_key"] == "b-key"


@pytest.mark.parametrize("bad, message", [
    ("not json", "not JSON"),
    ('{"format": "something-else"}', "not a medrec-bench run archive line"),
    ('{"format": "medrec-bench/run", "version": 99, "run": {}, "metrics": []}', "archive version 99"),
])
def test_a_bad_line_is_named_and_nothing_is_written(tmp_path, bad, message):
    archive = tmp_path / "runs.jsonl"
    with _filled(tmp_path / "a.db") as source:
        export_runs(source, archive)
    archive.write_text(archive.read_text() + bad + "\n")
    with ResultStore(tmp_path / "b.db") as target:
        with pytest.raises(ArchiveError, match=rf"runs.jsonl:3: {message}"):
            import_runs(target, archive)
        assert target.runs() == []


def test_an_unknown_run_field_is_refused(tmp_path):
    archive = tmp_path / "runs.jsonl"
    with _filled(tmp_path / "a.db") as source:
        export_runs(source, archive)
    line = json.loads(archive.read_text().splitlines()[0])
    line["run"]["predictions_path"] = "/elsewhere/p.parquet"
    archive.write_text(json.dumps(line) + "\n")
    with ResultStore(tmp_path / "b.db") as target, pytest.raises(ArchiveError, match="unknown run field"):
        import_runs(target, archive)


def test_the_runner_skips_imported_runs_and_the_cli_moves_them(tmp_path, demo_cohort):
    runner_args = dict(cache=tmp_path / "cache", progress=False, echo=lambda *_: None,
                       settings=EvalSettings(n_boot=20))
    with ResultStore(tmp_path / "a.db") as first:
        assert [o.status for o in Runner(demo_cohort, first, **runner_args).run(["popular"], [0])] == ["complete"]
    cli = CliRunner()
    archive = tmp_path / "runs.jsonl"
    out = cli.invoke(main, ["runs", "export", "--store", str(tmp_path / "a.db"), "--out", str(archive)])
    assert out.exit_code == 0 and "1 run(s)" in out.output
    out = cli.invoke(main, ["runs", "import", str(archive), "--store", str(tmp_path / "b.db")])
    assert out.exit_code == 0 and "imported 1 run(s)" in out.output
    with ResultStore(tmp_path / "b.db") as second:
        again = Runner(demo_cohort, second, **runner_args).run(["popular"], [0])
        assert [o.status for o in again] == ["skipped"] and len(second.runs()) == 1
    out = cli.invoke(main, ["runs", "import", str(tmp_path / "missing.jsonl"), "--store", str(tmp_path / "b.db")])
    assert out.exit_code == 1 and "no run archive at" in out.output
