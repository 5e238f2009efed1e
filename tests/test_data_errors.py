"""Bad input gets a clear one-line DataError, and nothing half-written is left in the cache."""

import gzip
import shutil
from pathlib import Path

import polars as pl
import pytest

from medrec_bench.data import Cohort, DataError, load_cohort
from medrec_bench.data.tables import normalize_ndc
from tests.conftest import shared_data

TABLES = ["ADMISSIONS", "PATIENTS", "DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS", "D_ICD_DIAGNOSES",
          "D_ICD_PROCEDURES"]
MIMIC4_FIXTURE = Path(__file__).parent / "fixtures" / "mimic4" / "hosp"


def copy_tables(source: str, tmp_path: Path) -> Path:
    """A writable copy of the MIMIC-III demo's tables (``mimic3``) or of the MIMIC-IV fixture's hosp folder."""
    out = tmp_path / "raw"
    if source == "mimic4":
        return Path(shutil.copytree(MIMIC4_FIXTURE, out))
    out.mkdir()
    for name in TABLES:
        shutil.copy(shared_data() / "mimic-iii-demo-1.4" / f"{name}.csv", out / f"{name}.csv")
    return out


@pytest.fixture
def raw(tmp_path):
    """A writable copy of the demo tables."""
    return copy_tables("mimic3", tmp_path)


def _build(folder, tmp_path, source="mimic3", **kw):
    return load_cohort(source, folder, cache=tmp_path / "cache", **kw)


def _error(folder, tmp_path, source="mimic3", **kw) -> str:
    with pytest.raises(DataError) as info:
        _build(folder, tmp_path, source, **kw)
    message = str(info.value)
    assert "\n" not in message
    cache = tmp_path / "cache" / "cohorts"
    assert not cache.exists() or not any(cache.iterdir()), "a failed build must leave no cache folder"
    return message


def _edit(folder, table, fn):
    path = folder / f"{table}.csv"
    frame = pl.read_csv(path, infer_schema=False)
    fn(frame).write_csv(path)


def test_missing_folder(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope", tmp_path)


def test_missing_table(raw, tmp_path):
    (raw / "PROCEDURES_ICD.csv").unlink()
    assert "table PROCEDURES_ICD is missing" in _error(raw, tmp_path)


def test_missing_column_names_column_and_file(raw, tmp_path):
    _edit(raw, "PRESCRIPTIONS", lambda f: f.drop("ndc"))
    message = _error(raw, tmp_path)
    assert "'ndc'" in message and "PRESCRIPTIONS.csv" in message


def test_wrong_delimiter(raw, tmp_path):
    path = raw / "ADMISSIONS.csv"
    pl.read_csv(path, infer_schema=False).write_csv(path, separator=";")
    assert "semicolon-delimited" in _error(raw, tmp_path)


def test_empty_table(raw, tmp_path):
    path = raw / "DIAGNOSES_ICD.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    assert "no rows" in _error(raw, tmp_path)


def test_unreadable_gzip(raw, tmp_path):
    (raw / "PATIENTS.csv").unlink()
    (raw / "PATIENTS.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage that is not deflate")
    message = _error(raw, tmp_path)
    assert "PATIENTS.csv.gz" in message and "cannot read" in message


def test_gzip_and_upper_case_headers_work(raw, tmp_path, demo_cohort):
    for name in TABLES:
        path = raw / f"{name}.csv"
        text = path.read_text().split("\n", 1)
        with gzip.open(raw / f"{name}.csv.gz", "wt") as fh:
            fh.write(text[0].upper() + "\n" + text[1])
        path.unlink()
    cohort = _build(raw, tmp_path)
    assert cohort.visits.drop("admittime").equals(demo_cohort.visits.drop("admittime"))


def test_dates_that_do_not_parse(raw, tmp_path):
    _edit(raw, "ADMISSIONS", lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("23/10/2164")).otherwise(pl.col("admittime"))
        .alias("admittime")))
    message = _error(raw, tmp_path)
    assert "admittime" in message and "23/10/2164" in message


def test_ndc_normalisation():
    values = pl.Series(["00182-8447-89", " 00182844789 ", "0182-8447-89", "182844789", "0", "", None, "00182 8447 89"])
    out = pl.select(normalize_ndc(pl.lit(values))).to_series().to_list()
    assert out == ["00182844789", "00182844789", "00182844789", "00182844789", None, None, None, "00182844789"]


def test_ndcs_with_dashes_and_spaces_map_like_plain_ones(raw, tmp_path, demo_cohort):
    def dash(f):
        ndc = pl.col("ndc")
        dashed = ndc.str.slice(0, 5) + "-" + ndc.str.slice(5, 4) + "-" + ndc.str.slice(9, 2)
        return f.with_columns(pl.when(ndc.str.len_chars() == 11).then(
            pl.when(pl.int_range(pl.len()) % 2 == 0).then(dashed).otherwise(" " + ndc + " ")).otherwise(ndc)
            .alias("ndc"))
    _edit(raw, "PRESCRIPTIONS", dash)
    assert _build(raw, tmp_path).visits.equals(demo_cohort.visits)


def test_duplicate_rows_are_dropped_and_counted(raw, tmp_path, demo_cohort):
    _edit(raw, "DIAGNOSES_ICD", lambda f: pl.concat([f, f.head(25)]))
    cohort = _build(raw, tmp_path)
    assert cohort.meta["counts"]["duplicate_rows_diagnoses_icd"] == 25
    assert cohort.visits.equals(demo_cohort.visits)


def test_codes_absent_from_dictionaries_are_kept_as_unknown(raw, tmp_path, demo_cohort):
    _edit(raw, "D_ICD_DIAGNOSES", lambda f: f.filter(pl.col("icd9_code") != "4019"))
    cohort = _build(raw, tmp_path)
    vocab = cohort.vocab.diagnoses
    assert vocab.name(vocab.index("dx9:4019")) == "unknown diagnosis code (4019)"
    before = demo_cohort.meta["counts"]["unknown_diagnosis_codes"]
    assert cohort.meta["counts"]["unknown_diagnosis_codes"] == before + 1


def test_empty_cohort_names_the_filter(demo_dir, tmp_path):
    message = _error(demo_dir, tmp_path, options={"min_visits": 50})
    assert "min_visits>=50" in message and "empty" in message


def test_unknown_option_is_an_error(demo_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown preprocessing option 'top_k_drug'"):
        _build(demo_dir, tmp_path, options={"top_k_drug": 10})


def test_interrupted_build_leaves_no_cache(demo_dir, tmp_path, monkeypatch):
    real_save = Cohort.save

    def save_then_crash(self, folder):
        real_save(self, folder)
        raise KeyboardInterrupt

    monkeypatch.setattr(Cohort, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        _build(demo_dir, tmp_path)
    assert list((tmp_path / "cache" / "cohorts").iterdir()) == []
    monkeypatch.setattr(Cohort, "save", real_save)
    assert _build(demo_dir, tmp_path).visits.height > 0
