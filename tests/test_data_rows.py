"""Bad MIMIC rows are counted or refused, never absorbed (issue S, section 5).

Each case breaks a writable copy of the MIMIC-III demo (``mimic3``) or of the MIMIC-IV fixture (``mimic4``) in one
way. ERRORS end in a one-line DataError naming the file and what is wrong; COUNTED build, with each class of bad
rows counted in the cohort's statistics and warned once; ACCEPTED build the same cohort as the clean tables.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from medrec_bench.data import load_cohort
from medrec_bench.data.errors import BadRowsWarning
from medrec_bench.data.stats import cohort_stats
from tests.test_data_errors import _build, _error, copy_tables


def _path(folder: Path, table: str) -> Path:
    return next(p for p in folder.iterdir() if p.name.lower() == f"{table.lower()}.csv")


def _lines(table: str, edit: Callable[[list[str]], None]) -> Callable[[Path], None]:
    """A breaker that edits the text lines (header = index 0) of ``table``."""
    def breaker(folder: Path) -> None:
        path = _path(folder, table)
        lines = path.read_text().split("\n")
        edit(lines)
        path.write_text("\n".join(lines))
    return breaker


def _field(table: str, line: int, column: int, value: str | Callable[[str], str]) -> Callable[[Path], None]:
    """A breaker setting field ``column`` of line ``line`` (simple unquoted rows) to ``value`` (or value(old))."""
    def edit(lines: list[str]) -> None:
        fields = lines[line].split(",")
        fields[column] = value(fields[column]) if callable(value) else value
        lines[line] = ",".join(fields)
    return _lines(table, edit)


def _column(table: str, column: str, expr: pl.Expr) -> Callable[[Path], None]:
    """A breaker rewriting one whole column of ``table`` (read and written as strings)."""
    def breaker(folder: Path) -> None:
        path = _path(folder, table)
        pl.read_csv(path, infer_schema=False).with_columns(expr.alias(column)).write_csv(path)
    return breaker


def _both(*breakers: Callable[[Path], None]) -> Callable[[Path], None]:
    def breaker(folder: Path) -> None:
        for b in breakers:
            b(folder)
    return breaker


def _unquoted_comma(lines: list[str]) -> None:
    for i in (2, 9, 19):  # the drug name gains ", 5 mg" without quotes: one field more
        fields = lines[i].split(",")
        fields[7] += ", 5 mg"
        lines[i] = ",".join(fields)


def _cut_line(lines: list[str]) -> None:
    lines[4] = ",".join(lines[4].split(",")[:3])


def _blank_lines(lines: list[str]) -> None:
    lines[7:7] = ["", "\r"]  # two blank lines inside (one of a CRLF file), two at the end
    lines.extend(["", ""])


def _same_hadm(lines: list[str]) -> None:
    fields = lines[2].split(",")
    fields[2] = lines[1].split(",")[2]  # the second admission takes the first one's hadm_id (another subject)
    lines[2] = ",".join(fields)


def _hadm_twice(lines: list[str]) -> None:
    fields = lines[1].split(",")
    fields[3] = "2100-01-01 00:00:00"  # same subject and hadm_id, another admittime
    lines.insert(2, ",".join(fields))


def _conflicting_patient(column: int, value: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        fields = lines[1].split(",")
        fields[column] = value
        lines.insert(2, ",".join(fields))
    return edit


def _gzip_beside(table: str, drop_row: bool) -> Callable[[Path], None]:
    """``TABLE.csv.gz`` beside ``TABLE.csv``: the same bytes, or without the first data row."""
    def breaker(folder: Path) -> None:
        lines = _path(folder, table).read_text().split("\n")
        if drop_row:
            del lines[1]
        (folder / f"{table}.csv.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    return breaker


def _gzip_named_csv(table: str) -> Callable[[Path], None]:
    def breaker(folder: Path) -> None:
        path = _path(folder, table)
        path.write_bytes(gzip.compress(path.read_bytes()))
    return breaker


def _plain_named_gz(table: str) -> Callable[[Path], None]:
    def breaker(folder: Path) -> None:
        path = _path(folder, table)
        path.rename(path.with_name(path.name + ".gz"))
    return breaker


def _utf16(table: str, encoding: str) -> Callable[[Path], None]:
    def breaker(folder: Path) -> None:
        path = _path(folder, table)
        path.write_bytes(path.read_text().encode(encoding))
    return breaker


def _rename_header(table: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(lines: list[str]) -> None:
        lines[0] = ",".join(new if f == old else f for f in lines[0].split(","))
    return _lines(table, edit)


# name: (source, breaker, fragments of the one-line error)
ERRORS: dict[str, tuple[str, Callable[[Path], None], list[str]]] = {
    "unquoted comma in a drug name": ("mimic3", _lines("PRESCRIPTIONS", _unquoted_comma), [
        "PRESCRIPTIONS.csv: 3 row(s) do not have the header's 19 fields; the first, on line 3, has 20"]),
    "cut line": ("mimic3", _lines("DIAGNOSES_ICD", _cut_line), [
        "DIAGNOSES_ICD.csv: 1 row(s) do not have the header's 5 fields; the first, on line 5, has 3"]),
    "unquoted comma (mimic4)": ("mimic4", _field("prescriptions", 1, 9, "Acetaminophen, 325 mg"), [
        "prescriptions.csv: 1 row(s) do not have the header's 21 fields; the first, on line 2, has 22"]),
    "unbalanced quote": ("mimic3", _field("PRESCRIPTIONS", 2, 7, '"Bisacodyl'), [  # swallows lines to the next quote
        "PRESCRIPTIONS.csv: 1 row(s) do not have the header's 19 fields; the first, on line 3"]),
    "hadm_id under two subject_ids": ("mimic3", _lines("ADMISSIONS", _same_hadm), [
        "ADMISSIONS.csv: hadm_id '142345' is on 2 rows that differ in subject_id ('10006' vs '10011'"]),
    "hadm_id on two rows of one subject": ("mimic3", _lines("ADMISSIONS", _hadm_twice), [
        "ADMISSIONS.csv: hadm_id '142345' is on 2 rows that differ in admittime"]),
    "conflicting PATIENTS rows": ("mimic3", _lines("PATIENTS", _conflicting_patient(2, "M")), [
        "PATIENTS.csv: subject_id '10006' is on 2 rows that differ in gender ('F' vs 'M'"]),
    "conflicting patients rows (mimic4)": ("mimic4", _lines("patients", _conflicting_patient(2, "71")), [
        "patients.csv: subject_id '10000001' is on 2 rows that differ in anchor_age ('70' vs '71'"]),
    ".csv and .csv.gz differ": ("mimic3", _gzip_beside("PATIENTS", drop_row=True), [
        "table PATIENTS has two files with different contents", "PATIENTS.csv and PATIENTS.csv.gz; keep one"]),
    "anchor_age as text": ("mimic4", _field("patients", 2, 2, "thirty-five"), [
        "patients.csv column anchor_age: 1 value(s) do not parse as integers, e.g. 'thirty-five'"]),
    "anchor_year not integral": ("mimic4", _field("patients", 1, 3, "2150.5"), [
        "patients.csv column anchor_year: 1 value(s) do not parse as integers, e.g. '2150.5'"]),
    "gzip data named .csv": ("mimic3", _gzip_named_csv("ADMISSIONS"), [
        "ADMISSIONS.csv is gzip-compressed; rename it to ADMISSIONS.csv.gz"]),
    "plain text named .csv.gz": ("mimic3", _plain_named_gz("PATIENTS"), [
        "PATIENTS.csv.gz is not gzip-compressed; rename it to PATIENTS.csv"]),
    "UTF-16 with a byte-order mark": ("mimic3", _utf16("DIAGNOSES_ICD", "utf-16"), [
        "DIAGNOSES_ICD.csv: encoding UTF-16 detected, expected UTF-8"]),
    "UTF-16 without a byte-order mark": ("mimic4", _utf16("admissions", "utf-16-le"), [
        "admissions.csv: encoding UTF-16 detected, expected UTF-8"]),
    "duplicated header name": ("mimic3", _rename_header("PRESCRIPTIONS", "gsn", "ndc"), [
        "PRESCRIPTIONS.csv: column 'ndc' appears 2 times in the header"]),
}

# name: (source, breaker, {counter: count}); each counter must also be one BadRowsWarning naming it and its count
COUNTED: dict[str, tuple[str, Callable[[Path], None], dict[str, int]]] = {
    "empty SUBJECT_ID": ("mimic3", _field("ADMISSIONS", 1, 1, ""), {
        "bad_rows_admissions_subject_id_not_an_id": 1}),
    "non-numeric SUBJECT_ID": ("mimic3", _field("ADMISSIONS", 1, 1, "abc"), {
        "bad_rows_admissions_subject_id_not_an_id": 1}),
    "empty SUBJECT_ID in PATIENTS": ("mimic3", _field("PATIENTS", 1, 1, ""), {
        "bad_rows_patients_subject_id_not_an_id": 1, "bad_rows_admissions_subject_id_not_in_patients": 1}),
    "subject without a PATIENTS row": ("mimic3", _field("ADMISSIONS", 1, 1, "99999999"), {
        "bad_rows_admissions_subject_id_not_in_patients": 1}),
    "empty HADM_ID in DIAGNOSES_ICD": ("mimic3", _field("DIAGNOSES_ICD", 3, 2, " "), {
        "bad_rows_diagnoses_icd_hadm_id_not_an_id": 1}),
    "empty ICD9_CODE": ("mimic3", _both(_field("DIAGNOSES_ICD", 3, 4, ""), _field("PROCEDURES_ICD", 2, 4, "")), {
        "bad_rows_diagnoses_icd_icd9_code_empty": 1, "bad_rows_procedures_icd_icd9_code_empty": 1}),
    "prescription of an unknown admission": ("mimic3", _field("PRESCRIPTIONS", 5, 2, "99999999"), {
        "bad_rows_prescriptions_hadm_id_not_in_admissions": 1}),
    "empty icd_version": ("mimic4", _both(_field("diagnoses_icd", 2, 4, ""), _field("procedures_icd", 1, 5, "")), {
        "bad_rows_diagnoses_icd_icd_version_empty": 1, "bad_rows_procedures_icd_icd_version_empty": 1}),
}

# name: (source, breaker): the cohort is that of the clean tables
ACCEPTED: dict[str, tuple[str, Callable[[Path], None]]] = {
    "ids written as integral floats": ("mimic3", _both(
        _column("ADMISSIONS", "subject_id", pl.col("subject_id") + ".0"),
        _column("ADMISSIONS", "hadm_id", pl.col("hadm_id") + ".0"),
        _column("DIAGNOSES_ICD", "hadm_id", " " + pl.col("hadm_id") + ".0"))),
    ".csv and an identical .csv.gz": ("mimic3", _gzip_beside("PRESCRIPTIONS", drop_row=False)),
    "blank lines": ("mimic3", _lines("DIAGNOSES_ICD", _blank_lines)),
    "anchor_year and anchor_age as floats": ("mimic4", _both(
        _column("patients", "anchor_year", pl.col("anchor_year") + ".0"),
        _column("patients", "anchor_age", pl.col("anchor_age") + ".0"))),
    "icd_version as a float": ("mimic4", _column("diagnoses_icd", "icd_version", pl.col("icd_version") + ".0")),
}


def broken(source: str, breaker: Callable[[Path], None], tmp_path: Path) -> Path:
    """A copy of ``source``'s tables broken by ``breaker``; the folder to load."""
    folder = copy_tables(source, tmp_path)
    breaker(folder)
    return folder


@pytest.fixture(scope="module")
def clean(demo_cohort, tmp_path_factory):
    """The cohorts of the clean tables, by source."""
    hosp = copy_tables("mimic4", tmp_path_factory.mktemp("m4"))
    return {"mimic3": demo_cohort, "mimic4": load_cohort("mimic4", hosp, cache=hosp.parent / "cache")}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_tables_are_one_line_errors(case, tmp_path):
    source, breaker, fragments = ERRORS[case]
    message = _error(broken(source, breaker, tmp_path), tmp_path, source)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("case", list(COUNTED))
def test_bad_rows_are_counted_and_warned_once(case, tmp_path, clean):
    source, breaker, expected = COUNTED[case]
    with pytest.warns(BadRowsWarning) as caught:
        cohort = _build(broken(source, breaker, tmp_path), tmp_path, source)
    stats = cohort_stats(cohort)
    messages = [str(w.message) for w in caught if w.category is BadRowsWarning]
    for key, n in expected.items():
        assert stats[key] == n
        (line,) = [m for m in messages if f"(counted as {key})" in m]
        assert f": {n} row(s) " in line and "\n" not in line
    counted = {k: v for k, v in stats.items() if k.startswith("bad_rows_")}
    assert len(messages) == len(counted) and stats["bad_rows"] == sum(counted.values())
    assert cohort_stats(clean[source])["bad_rows"] == 0


def test_a_dropped_admission_takes_its_codes_along(tmp_path, demo_cohort):
    """The admission of an empty SUBJECT_ID is gone, and its code rows are counted as rows of no admission."""
    folder = broken("mimic3", _field("ADMISSIONS", 1, 1, ""), tmp_path)
    hadm = (folder / "ADMISSIONS.csv").read_text().split("\n")[1].split(",")[2]
    with pytest.warns(BadRowsWarning):
        cohort = _build(folder, tmp_path)
    assert hadm in demo_cohort.visits["visit_id"].to_list() and hadm not in cohort.visits["visit_id"].to_list()
    n_dx = pl.read_csv(folder / "DIAGNOSES_ICD.csv", infer_schema=False).filter(pl.col("hadm_id") == hadm).height
    assert cohort.meta["counts"]["bad_rows_diagnoses_icd_hadm_id_not_in_admissions"] == n_dx


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_harmless_oddities_give_the_clean_cohort(case, tmp_path, clean, recwarn):
    source, breaker = ACCEPTED[case]
    cohort = _build(broken(source, breaker, tmp_path), tmp_path, source)
    assert cohort.visits.equals(clean[source].visits)
    assert cohort_stats(cohort)["bad_rows"] == 0
    assert not [w for w in recwarn if w.category is BadRowsWarning]
