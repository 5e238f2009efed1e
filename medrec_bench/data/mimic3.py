"""MIMIC-III v1.4 loader: a folder of CSV tables (``.csv`` or ``.csv.gz``, upper- or lower-case headers) -> RawTables.

Tables read: ADMISSIONS, PATIENTS, DIAGNOSES_ICD, PROCEDURES_ICD, PRESCRIPTIONS, D_ICD_DIAGNOSES, D_ICD_PROCEDURES.
All ICD codes are ICD-9 (``dx9:`` / ``px9:``). Ages over 89 are shifted by about 300 years in MIMIC-III; they are
mapped to 90. Bad rows are counted or refused as :mod:`.raw` says.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .errors import DataError
from .raw import RawTables, clean_ids, code_rows, join_patients, one_row_per, prescription_facts
from .schema import diagnosis_id, procedure_id
from .tables import parse_datetime, read_table

PROFILE_FIELDS = ("insurance", "language", "religion", "marital_status", "ethnicity")


def _codes(folder: Path, table: str, kind: str, admissions: pl.DataFrame, counts: dict[str, int]) -> pl.DataFrame:
    file, frame = read_table(folder, table, ["hadm_id", "seq_num", "icd9_code"])
    frame = code_rows(frame, file, "icd9_code", admissions, counts)
    make = diagnosis_id if kind == "dx" else procedure_id
    prefix = make("", 9)
    return frame.select(
        pl.col("hadm_id").alias("visit_id"),
        (pl.lit(prefix) + pl.col("icd9_code").str.strip_chars()).alias("code"),
        pl.col("seq_num").fill_null(10_000).alias("seq"),
    )


def _titles(folder: Path, table: str, kind: str) -> dict[str, str]:
    frame = read_table(folder, table, ["icd9_code", "long_title"]).frame
    make = diagnosis_id if kind == "dx" else procedure_id
    return {make(c.strip(), 9): t for c, t in frame.iter_rows() if c is not None and t is not None}


def _admissions(folder: Path, counts: dict[str, int]) -> pl.DataFrame:
    """ADMISSIONS (one row per hadm_id) joined with PATIENTS (one row per subject_id)."""
    file, adm = read_table(folder, "ADMISSIONS", ["subject_id", "hadm_id", "admittime", *PROFILE_FIELDS])
    adm = parse_datetime(clean_ids(adm, file, ["subject_id", "hadm_id"], counts), "admittime", file)
    adm = one_row_per(adm, "hadm_id", file, counts)
    pat_file, pat = read_table(folder, "PATIENTS", ["subject_id", "gender", "dob"])
    pat = parse_datetime(clean_ids(pat, pat_file, ["subject_id"], counts), "dob", pat_file, required=False)
    return join_patients(adm, file, one_row_per(pat, "subject_id", pat_file, counts), counts)


def load_mimic3(folder: str | Path) -> RawTables:
    """Read a MIMIC-III v1.4 CSV folder into :class:`RawTables` (see :mod:`.raw` for the columns)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"MIMIC-III folder {folder} does not exist")
    counts: dict[str, int] = {}
    adm = _admissions(folder, counts)
    age = (pl.col("admittime") - pl.col("dob")).dt.total_days() / 365.25
    admissions = adm.select(
        pl.col("subject_id").alias("patient_id"),
        pl.col("hadm_id").alias("visit_id"),
        "admittime",
        pl.col("gender"),
        pl.when(age >= 200).then(90.0).otherwise(age).alias("age"),
        *PROFILE_FIELDS,
    )
    rx_file, rx = read_table(folder, "PRESCRIPTIONS", ["hadm_id", "ndc"])
    prescriptions = prescription_facts(rx, rx_file, adm, counts)
    titles = _titles(folder, "D_ICD_DIAGNOSES", "dx") | _titles(folder, "D_ICD_PROCEDURES", "px")
    return RawTables(
        source="mimic3",
        admissions=admissions,
        diagnoses=_codes(folder, "DIAGNOSES_ICD", "dx", adm, counts),
        procedures=_codes(folder, "PROCEDURES_ICD", "px", adm, counts),
        prescriptions=prescriptions,
        titles=titles,
        profile_fields=PROFILE_FIELDS,
        counts=counts,
    )
