"""MIMIC-IV v2.x loader: the ``hosp/`` module (give the folder itself or its parent) -> RawTables.

Tables read: admissions, patients, diagnoses_icd, procedures_icd, prescriptions, d_icd_diagnoses, d_icd_procedures.
ICD-9 and ICD-10 codes are kept apart by their version (``dx9:4019`` vs ``dx10:I10``). Age at admission is
``anchor_age + year(admittime) - anchor_year``. Integer columns may be written as integral floats (``2125.0``); any
other non-integer ``anchor_age`` / ``anchor_year`` / ``icd_version`` is an error. A code row with an empty
``icd_version`` is dropped and counted; other bad rows are counted or refused as :mod:`.raw` says.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .errors import DataError
from .raw import (EMPTY, RawTables, blank, clean_ids, code_rows, drop_bad_rows, join_patients, one_row_per,
                  prescription_facts)
from .tables import integer_values, parse_datetime, parse_integer, read_table

PROFILE_FIELDS = ("insurance", "language", "admission_type", "marital_status", "race")


def hosp_folder(path: str | Path) -> Path:
    """``path`` itself if it holds the tables, else ``path/hosp``."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"MIMIC-IV folder {path} does not exist")
    if (path / "hosp").is_dir():
        return path / "hosp"
    return path


def _version_prefix(kind: str) -> pl.Expr:
    return pl.lit(kind) + integer_values(pl.col("icd_version")).cast(pl.Utf8) + pl.lit(":")


def _check_versions(frame: pl.DataFrame, file: str) -> None:
    """A DataError naming an example when an ``icd_version`` is not 9 or 10 (``9.0`` is 9)."""
    version = integer_values(pl.col("icd_version"))
    bad = frame.filter(version.is_null() | ~version.is_in([9, 10]))
    if bad.height:
        raise DataError(f"{file} column icd_version must be 9 or 10, found {bad['icd_version'][0]!r} "
                        f"({bad.height} row(s))")


def _codes(folder: Path, table: str, kind: str, admissions: pl.DataFrame, counts: dict[str, int]) -> pl.DataFrame:
    file, frame = read_table(folder, table, ["hadm_id", "seq_num", "icd_code", "icd_version"])
    frame = drop_bad_rows(frame, blank("icd_version"), file, "icd_version", EMPTY, counts)
    _check_versions(frame, file)
    frame = code_rows(frame, file, "icd_code", admissions, counts)
    return frame.select(
        pl.col("hadm_id").alias("visit_id"),
        (_version_prefix(kind) + pl.col("icd_code").str.strip_chars()).alias("code"),
        pl.col("seq_num").fill_null(10_000).alias("seq"),
    )


def _titles(folder: Path, table: str, kind: str) -> dict[str, str]:
    frame = read_table(folder, table, ["icd_code", "icd_version", "long_title"]).frame
    ids = frame.select((_version_prefix(kind) + pl.col("icd_code").str.strip_chars()).alias("id"), "long_title")
    return dict(ids.drop_nulls().iter_rows())


def _admissions(folder: Path, counts: dict[str, int]) -> pl.DataFrame:
    """admissions (one row per hadm_id) joined with patients (one row per subject_id, ages as integers)."""
    file, adm = read_table(folder, "admissions", ["subject_id", "hadm_id", "admittime", *PROFILE_FIELDS])
    adm = parse_datetime(clean_ids(adm, file, ["subject_id", "hadm_id"], counts), "admittime", file)
    adm = one_row_per(adm, "hadm_id", file, counts)
    pat_file, pat = read_table(folder, "patients", ["subject_id", "gender", "anchor_age", "anchor_year"])
    pat = clean_ids(pat, pat_file, ["subject_id"], counts)
    pat = parse_integer(parse_integer(pat, "anchor_age", pat_file), "anchor_year", pat_file)
    return join_patients(adm, file, one_row_per(pat, "subject_id", pat_file, counts), counts)


def load_mimic4(path: str | Path) -> RawTables:
    """Read a MIMIC-IV ``hosp/`` folder into :class:`RawTables` (see :mod:`.raw` for the columns)."""
    folder = hosp_folder(path)
    counts: dict[str, int] = {}
    adm = _admissions(folder, counts)
    age = pl.col("anchor_age") + (pl.col("admittime").dt.year() - pl.col("anchor_year"))
    admissions = adm.select(
        pl.col("subject_id").alias("patient_id"),
        pl.col("hadm_id").alias("visit_id"),
        "admittime",
        "gender",
        age.cast(pl.Float64).alias("age"),
        *PROFILE_FIELDS,
    )
    rx_file, rx = read_table(folder, "prescriptions", ["hadm_id", "ndc"])
    prescriptions = prescription_facts(rx, rx_file, adm, counts)
    titles = _titles(folder, "d_icd_diagnoses", "dx") | _titles(folder, "d_icd_procedures", "px")
    return RawTables(
        source="mimic4",
        admissions=admissions,
        diagnoses=_codes(folder, "diagnoses_icd", "dx", adm, counts),
        procedures=_codes(folder, "procedures_icd", "px", adm, counts),
        prescriptions=prescriptions,
        titles=titles,
        profile_fields=PROFILE_FIELDS,
        counts=counts,
    )
