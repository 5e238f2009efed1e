"""Source-specific data options: an option the source would ignore is an error naming it; cohort names say what
distinguishes a cohort; ``Cohort.to_pandas()``."""

from __future__ import annotations

import json
import re
import sys

import pytest
from click.testing import CliRunner

from medrec_bench.cli import main
from medrec_bench.data import DataError, PreprocessOptions, load_cohort
from medrec_bench.data.build import cohort_name
from medrec_bench.data.cohort import META_FILE

FP = "0123456789abcdef" * 4
DEFAULT_SYNTHETIC = {"patients": 2000, "seed": 0, "format": "mimic3"}


# ---- library ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["mimic3", "mimic4"])
@pytest.mark.parametrize("kw, option", [({"patients": 500}, "--patients"), ({"seed": 3}, "--data-seed"),
                                        ({"synthetic_format": "mimic4"}, "--synthetic-format"),
                                        ({"seed": 0}, "--data-seed")])
def test_synthetic_options_with_mimic_are_errors(demo_dir, tmp_path, source, kw, option):
    with pytest.raises(DataError, match=f"^{option} .* only for --data synthetic, not {source}$"):
        load_cohort(source, demo_dir, cache=tmp_path, **kw)
    assert not (tmp_path / "cohorts").exists()


def test_path_with_synthetic_is_an_error(demo_dir, tmp_path):
    with pytest.raises(DataError, match="^--path .* only for --data mimic3 / mimic4"):
        load_cohort("synthetic", demo_dir, cache=tmp_path)


@pytest.mark.parametrize("kw, option", [({"patients": 0}, "--patients"), ({"patients": -5}, "--patients"),
                                        ({"patients": 2.5}, "--patients"), ({"seed": -1}, "--data-seed"),
                                        ({"synthetic_format": "mimic5"}, "--synthetic-format")])
def test_bad_synthetic_arguments_are_errors(tmp_path, kw, option):
    with pytest.raises(DataError, match=f"^{option} "):
        load_cohort("synthetic", cache=tmp_path, **kw)
    assert not (tmp_path / "cohorts").exists()


@pytest.mark.parametrize("synthetic, options, name", [
    (DEFAULT_SYNTHETIC, PreprocessOptions(), "synthetic-2000"),
    ({**DEFAULT_SYNTHETIC, "patients": 500}, PreprocessOptions(), "synthetic-500"),
    ({**DEFAULT_SYNTHETIC, "patients": 500, "seed": 3}, PreprocessOptions(), "synthetic-500-seed3"),
    ({**DEFAULT_SYNTHETIC, "format": "mimic4"}, PreprocessOptions(), "synthetic-2000-mimic4"),
    (DEFAULT_SYNTHETIC, PreprocessOptions(min_visits=2), "synthetic-2000-01234567"),
    ({"patients": 80, "seed": 1, "format": "mimic4"}, PreprocessOptions(top_k_drugs=50),
     "synthetic-80-seed1-mimic4-01234567"),
])
def test_synthetic_cohort_names(synthetic, options, name):
    assert cohort_name("synthetic", FP, options, synthetic) == name


def test_mimic_cohort_name_is_source_and_fingerprint(demo_cohort):
    assert demo_cohort.name == f"mimic3-{demo_cohort.fingerprint[:8]}"
    assert cohort_name("mimic4", FP, PreprocessOptions(), {}) == "mimic4-01234567"


def test_built_and_cached_cohort_carry_the_name(tmp_path):
    built = load_cohort("synthetic", patients=60, seed=3, cache=tmp_path)
    assert built.name == "synthetic-60-seed3"
    other = load_cohort("synthetic", patients=60, cache=tmp_path)
    assert other.name == "synthetic-60" and other.fingerprint != built.fingerprint
    (folder,) = [p for p in (tmp_path / "cohorts").iterdir() if p.name.endswith(built.fingerprint[:16])]
    meta = json.loads((folder / META_FILE).read_text())
    meta["name"] = "synthetic"  # a cache written when cohorts were named by their source only
    (folder / META_FILE).write_text(json.dumps(meta))
    assert load_cohort("synthetic", patients=60, seed=3, cache=tmp_path).name == "synthetic-60-seed3"


# ---- CLI --------------------------------------------------------------------------------------------------------


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("args, option", [
    (["--data", "mimic3", "--patients", "500"], "--patients"),
    (["--data", "mimic3", "--data-seed", "0"], "--data-seed"),
    (["--data", "mimic3", "--synthetic-format", "mimic3"], "--synthetic-format"),
    (["--data", "mimic4", "--data-seed", "2"], "--data-seed"),
    (["--data", "synthetic", "--path", "PATH"], "--path"),
    (["--patients", "0"], "--patients"),
    (["--data-seed", "-1"], "--data-seed"),
])
def test_cli_ignored_or_bad_data_options_are_one_line_errors(demo_dir, tmp_path, args, option):
    args = [demo_dir if a == "PATH" else a for a in args]
    path = ["--path", demo_dir] if "mimic" in " ".join(map(str, args)) else []
    result = _invoke("data", "build", *args, *path, "--cache", tmp_path)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {option} ") and result.output.count("\n") == 1
    assert not (tmp_path / "cohorts").exists()


def test_cli_names_the_cohort_by_its_options(tmp_path):
    out = _invoke("data", "build", "--patients", "60", "--data-seed", "3", "--synthetic-format", "mimic4",
                  "--cache", tmp_path)
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith("synthetic-60-seed3-mimic4: ")  # stderr holds the progress bar
    out = _invoke("data", "build", "--patients", "60", "--min-visits", "2", "--cache", tmp_path)
    assert re.match(r"synthetic-60-[0-9a-f]{8}: ", out.stdout), out.output


@pytest.mark.parametrize("option, value", [("--patients", "0"), ("--seed", "-1")])
def test_cli_synth_rejects_bad_values_naming_the_option(tmp_path, option, value):
    result = _invoke("data", "synth", "--out", tmp_path / "raw", option, value)
    assert result.exit_code == 2 and f"'{option}'" in result.output
    assert not (tmp_path / "raw").exists()


# ---- pandas -----------------------------------------------------------------------------------------------------


def test_cohort_to_pandas(demo_cohort):
    pd = pytest.importorskip("pandas")
    frame = demo_cohort.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == demo_cohort.visits.columns and len(frame) == demo_cohort.visits.height
    first = demo_cohort.visits.row(0, named=True)
    assert frame["visit_id"].iloc[0] == first["visit_id"]
    assert list(frame["drugs"].iloc[0]) == first["drugs"]


def test_to_pandas_without_pandas_names_the_extra(demo_cohort, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an install without the extra sees
    with pytest.raises(ImportError) as info:
        demo_cohort.to_pandas()
    message = str(info.value)
    assert 'pip install -e ".[pandas]"' in message and "Cohort.to_pandas()" in message and "\n" not in message
