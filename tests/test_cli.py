"""The CLI is a thin face over the library: check its outputs, formats and one-line errors."""

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from medrec_bench.cli import main
from medrec_bench.registry import load_registry
from tests.conftest import REPO
from tests.test_data_rows import COUNTED, ERRORS, broken


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
    assert "2 seed(s); mean over seeds ± half the mean per-seed 95% bootstrap CI;" in out
    again = cli("run", "--models", "popular,lr", *cli.data, "--store", store, "--n-boot", "50", "--seeds", "0,1",
                "--set", "logistic.epochs=2").output
    assert again.count("[done]") == 4
    (board,) = json.loads(cli("leaderboard", "--store", store, "--format", "json").output)
    assert (board["protocol"], board["averaging"], board["uncertainty"]) == ("last_visit", "sample", "bootstrap")
    assert {r["name"] for r in board["rows"]} == {"popular", "logistic"}
    assert {r["n_seeds"] for r in board["rows"]} == {2}
    text = cli("leaderboard", "--store", store).output
    assert re.findall(r"^## .*$", text, flags=re.M) == [f"## {board['data']} / last_visit"]
    assert re.fullmatch(r"mimic3-[0-9a-f]{8}", board["data"])  # the cohort's name: source + fingerprint
    assert "mean over seeds ± half the mean per-seed 95% bootstrap CI" in text
    assert cli("leaderboard", "--store", store, "--format", "csv").output.startswith("data,protocol,averaging,")
    assert "jaccard" in cli("show", "1", "--store", store).output
    shown = cli("show", "3", "--store", store).output  # logistic, seed 0
    assert re.search(r"\| epochs_run\s+\| 2\s+\|", shown) and "best_epoch" in shown
    assert "Jaccard" in cli("rescore", "1", "--store", store, "--threshold", "0.3", "--n-boot", "20").output
    forced = cli("run", "--models", "popular", *cli.data, "--store", store, "--n-boot", "50", "--force").output
    assert forced.count("[complete]") == 1
    rounds = cli("run", "--models", "popular", *cli.data, "--store", store, "--uncertainty",
                 "rounds_without_replacement").output
    assert "1 seed(s); mean ± std over rounds (without replacement);" in rounds


def test_run_help_example_names_registered_models(cli):
    text = " ".join(cli("run", "--help").output.split())
    example = re.search(r"e\.g\. ([\w,]+)\.", text).group(1)
    registry = load_registry()
    for name in example.split(","):
        assert name in registry, f"run --help names {name!r}, which is not registered"


def test_cli_import_leaves_torch_out():
    code = "import sys, medrec_bench.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_list_shows_models(cli):
    out = cli("list").output
    assert "popular" in out and "registry.yaml" in out


def test_list_params_shows_each_layer(cli, tmp_path, monkeypatch):
    registry = tmp_path / "mine.yaml"
    registry.write_text("models:\n  logistic:\n    class: baselines.bag_models:Logistic\n    aliases: [lr]\n"
                        "    params: {lr: 5e-3, patience: 2}\n")
    monkeypatch.setenv("MEDREC_BENCH_REGISTRY", str(registry))
    out = cli("list", "--params", "LR", "--set", "logistic.lr=2e-3", "--set", "lr.epochs=3").output
    assert out.startswith("logistic (baselines.bag_models:Logistic, mine.yaml)")
    rows = {cells[0]: cells[1:] for line in out.splitlines()[3:]
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    assert rows["lr"] == ["0.002", "--set"] and rows["epochs"] == ["3", "--set"]
    assert rows["patience"] == ["2", "registry"]
    assert rows["batch_size"] == ["64", "class"] and rows["seed"] == ["None", "class"]


@pytest.mark.parametrize("args, message", [
    (["run", "--models", "nope"], "unknown model 'nope'"),
    (["run", "--models", "popular", "--set", "popular"], "expected MODEL.PARAM=VALUE"),
    (["run", "--models", "logistic", "--set", "logistic.epoch=2"], "no parameter 'epoch'"),
    (["data", "stats", "--data", "mimic3"], "--path is required"),
    (["show", "99"], "no results store at"),  # a missing store is not created by a read
    (["list", "--params", "logistic", "--set", "logistic.epochs=2.5"], "parameter 'epochs' must be an int, not 2.5"),
    (["list", "--params", "logistic", "--set", "mlp.epochs=2"], "--set for 'mlp', but --params lists 'logistic'"),
    (["list", "--set", "mlp.epochs=2"], "--set needs --params MODEL"),
    (["run", "--models", "popular", "--protocol", "visits"], "'visits' is not one of 'visit', 'last_visit'"),
])
def test_errors_are_one_line(cli, tmp_path, args, message):
    extra = ["--store", tmp_path / "x.db"] if args[0] in ("run", "show") else []
    extra += ["--cache", tmp_path / "cache"] if args[0] in ("run", "data") else []
    result = cli(*args, *extra, ok=False)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


# Odd command lines of `run`: each is a one-line error before any data is loaded (no cohort cache, no store).
@pytest.mark.parametrize("args, message", [
    (["--set", "logistic.epochs=-5"],
     "model 'logistic': parameter 'epochs' = -5 is out of range (allowed: epochs >= 1)"),
    (["--set", "logistic.epochs=0"], "parameter 'epochs' = 0 is out of range"),
    (["--set", "logistic.epochs=true"], "parameter 'epochs' must be an int, not True"),
    (["--set", "logistic.epochs=abc"], "parameter 'epochs' must be an int, not 'abc'"),
    (["--set", "logistic.epochs=1.5"], "parameter 'epochs' must be an int, not 1.5"),
    (["--set", "logistic.epochs=[1,2]"], "parameter 'epochs' must be an int, not [1, 2]"),
    (["--set", "logistic.batch_size=0"], "parameter 'batch_size' = 0 is out of range (allowed: batch_size >= 1)"),
    (["--set", "logistic.lr=.nan"], "parameter 'lr' must be a finite float, not nan"),
    (["--set", "logistic.lr=-5e-3"], "parameter 'lr' = '-5e-3' is out of range (allowed: lr > 0)"),
    (["--seeds", "-1"], "--seeds: -1 is out of range (allowed: 0 <= seed < 4294967296)"),
    (["--seeds", "99999999999999999999"], "--seeds: 99999999999999999999 is out of range"),
    (["--seeds", "1,x"], "expected comma-separated integers"),
    (["--n-boot", "0"], "'--n-boot': 0 is not in the range x>=1"),
    (["--device", "cuda:99"], "--device cuda:99:"),
    (["--device", "gpu0"], "--device 'gpu0' is not a torch device"),
    (["--min-visits", "0"], "'--min-visits': 0 is not in the range x>=1"),
    (["--top-k-drugs", "-1"], "'--top-k-drugs': -1 is not in the range x>=0"),
    (["--threads", "-2"], "'--threads': -2 is not in the range x>=0"),
])
def test_run_checks_every_option_before_loading_data(cli, tmp_path, args, message):
    cache, store = tmp_path / "fresh-cache", tmp_path / "x.db"
    result = cli("run", "--models", "logistic", "--data", "mimic3", "--path", cli.data[3], "--cache", cache,
                 "--store", store, *args, ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert message in result.output
    assert not cache.exists() and not store.exists()


def test_run_on_a_cohort_too_small_for_the_protocol_is_one_line(cli, tmp_path):
    store = tmp_path / "x.db"
    result = cli("run", "--models", "popular", "--patients", "1", "--cache", tmp_path / "cache", "--store", store,
                 ok=False)
    assert "cohort synthetic-1 has 1 patient(s): the train split of the last_visit protocol (seed 0) is empty" \
        in result.output
    from medrec_bench.store import ResultStore

    with ResultStore(store) as db:
        assert db.runs() == []


# Odd --store paths: one line naming the file and what was expected, for every command that opens a store.
@pytest.mark.parametrize("kind, message", [
    ("text file", "is not a medrec-bench SQLite database (file is not a database)"),
    ("directory", "is a directory; expected a database file"),
    ("under a file", "is a file, not a folder"),
    ("newer schema", "schema version 99, this code supports up to"),
    ("missing folder", "does not exist (create it, or pass --create-dirs)"),
])
@pytest.mark.parametrize("command", [["run", "--models", "popular", "--patients", "40", "--n-boot", "5"],
                                     ["leaderboard"], ["show", "1"], ["rescore", "1"]], ids=lambda c: c[0])
def test_odd_store_paths_are_one_line_errors(cli, tmp_path, kind, message, command):
    import sqlite3

    path = tmp_path / "store"
    if kind == "text file":
        path.write_text("not a database")
    elif kind == "directory":
        path.mkdir()
    elif kind == "under a file":
        path.write_text("x")
        path = path / "x.db"
    elif kind == "newer schema":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
            conn.execute("PRAGMA user_version = 99")
    else:
        path = path / "deeper" / "x.db"
    if command[0] != "run" and kind in ("under a file", "missing folder"):
        message = "no results store at"
    cache = ["--cache", tmp_path / "cache"] if command[0] == "run" else []
    result = cli(*command, "--store", path, *cache, ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "store" / "deeper").exists()


def test_run_creates_missing_store_folders_only_with_create_dirs(cli, tmp_path):
    path = tmp_path / "a" / "b" / "r.db"
    cli("run", "--models", "popular", "--patients", "40", "--n-boot", "5", "--cache", tmp_path / "cache",
        "--store", path, "--create-dirs")
    assert path.is_file()


# Odd MIMIC tables (tests/test_data_rows.py builds them): each is one line from `data stats`, with no cohort cached.
@pytest.mark.parametrize("case", list(ERRORS))
def test_odd_mimic_tables_are_one_line_errors(cli, tmp_path, case):
    source, breaker, fragments = ERRORS[case]
    folder, cache = broken(source, breaker, tmp_path), tmp_path / "cache"
    result = cli("data", "stats", "--data", source, "--path", folder, "--cache", cache, "--format", "json", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and fragments[0] in result.output, result.output
    assert not (cache / "cohorts").exists() or not any((cache / "cohorts").iterdir())


def test_bad_rows_warn_once_per_class_at_build_and_show_in_stats(tmp_path):
    """Each class of bad rows is one `warning:` line when the cohort is built, and one line of `data stats`."""
    folder = broken("mimic3", COUNTED["empty ICD9_CODE"][1], tmp_path)
    command = [sys.executable, "-m", "medrec_bench.cli", "data", "stats", "--data", "mimic3", "--path", str(folder),
               "--cache", str(tmp_path / "cache"), "--format", "json"]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    warned = [line for line in out.stderr.splitlines() if line.startswith("warning: ")]
    assert warned == [
        "warning: DIAGNOSES_ICD.csv column icd9_code: 1 row(s) are empty; dropped "
        "(counted as bad_rows_diagnoses_icd_icd9_code_empty)",
        "warning: PROCEDURES_ICD.csv column icd9_code: 1 row(s) are empty; dropped "
        "(counted as bad_rows_procedures_icd_icd9_code_empty)",
    ]
    stats = json.loads(out.stdout)
    assert (stats["bad_rows"], stats["bad_rows_diagnoses_icd_icd9_code_empty"]) == (2, 1)
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    assert "warning:" not in again.stderr and json.loads(again.stdout) == stats  # cached: counted, not re-warned
