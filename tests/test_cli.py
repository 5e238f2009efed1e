"""The CLI is a thin face over the library: check its outputs, formats and one-line errors."""

import json
import re

import pytest
from click.testing import CliRunner

from medrec_bench.cli import main


@pytest.fixture
def cli(tmp_path, demo_dir):
    runner = CliRunner()
    data = ["--data", "mimic3", "--path", str(demo_dir), "--cache", str(tmp_path / "cache")]

    def invoke(*args, ok=True):
        result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    invoke.data = data
    return invoke


def test_data_stats_json(cli):
    out = json.loads(cli("data", "stats", *cli.data, "--format", "json").output)
    for key in ("patients", "visits", "drugs", "diagnoses", "procedures", "single_visit_patients",
                "multi_visit_patients"):
        assert isinstance(out[key], int)
    assert out["single_visit_patients"] + out["multi_visit_patients"] == out["patients"]


def test_data_stats_table_and_build(cli):
    table = cli("data", "stats", *cli.data).output
    assert "single_visit_patients" in table and "visit_has_procedure" in table
    assert "patients" in cli("data", "build", *cli.data, "--min-visits", "2").output


def test_run_leaderboard_show_rescore(cli, tmp_path):
    store = tmp_path / "r.db"
    out = cli("run", "--models", "popular,lr", *cli.data, "--store", store, "--n-boot", "50", "--seeds", "0,1",
              "--set", "logistic.epochs=2").output
    assert "| popular" in out and "| logistic" in out and "Jaccard" in out and "p vs best" in out
    assert out.count("[complete]") == 4
    again = cli("run", "--models", "popular,lr", *cli.data, "--store", store, "--n-boot", "50", "--seeds", "0,1",
                "--set", "logistic.epochs=2").output
    assert again.count("[done]") == 4
    records = json.loads(cli("leaderboard", "--store", store, "--format", "json").output)
    keys = {"model", "data", "protocol", "group", "averaging", "metric", "mean", "ci_low", "ci_high", "n_seeds"}
    assert records and all(keys <= set(r) for r in records)
    assert {r["n_seeds"] for r in records if r["group"] == "overall"} == {2}
    heading = r"## mimic3-[0-9a-f]{8} / last_visit / overall / sample"  # the cohort's name: source + fingerprint
    assert re.search(heading, cli("leaderboard", "--store", store).output)
    assert cli("leaderboard", "--store", store, "--format", "csv").output.startswith("model,")
    assert "jaccard" in cli("show", "1", "--store", store).output
    assert "Jaccard" in cli("rescore", "1", "--store", store, "--threshold", "0.3", "--n-boot", "20").output


def test_list_shows_models(cli):
    out = cli("list").output
    assert "popular" in out and "registry.yaml" in out


@pytest.mark.parametrize("args, message", [
    (["run", "--models", "nope"], "unknown model 'nope'"),
    (["run", "--models", "popular", "--set", "popular"], "expected MODEL.PARAM=VALUE"),
    (["run", "--models", "logistic", "--set", "logistic.epoch=2"], "no parameter 'epoch'"),
    (["data", "stats", "--data", "mimic3"], "--path is required"),
    (["show", "99"], "no run 99"),
])
def test_errors_are_one_line(cli, tmp_path, args, message):
    extra = ["--store", tmp_path / "x.db"] if args[0] in ("run", "show") else []
    extra += ["--cache", tmp_path / "cache"] if args[0] in ("run", "data") else []
    result = cli(*args, *extra, ok=False)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
