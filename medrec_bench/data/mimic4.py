"""MIMIC-IV v2.x loader: the ``hosp/`` module (give the folder itself or its parent) -> RawTables.

Tables read: admissions, patients, diagnoses_icd, procedures_icd, prescriptions, d_icd_diagnoses, d_icd_procedures.
ICD-9 and ICD-10 codes are kept apart by their version (``dx9:4019`` vs ``dx10:I10``). Age at admission is
``anchor_age + year(admittime) - anchor_year``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .errors import DataError
from .raw import RawTables, drop_duplicates, prescription_facts
from .tables import parse_datetime, read_table

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
    version = pl.col("icd_version").str.strip_chars()
    return pl.lit(kind) + version + pl.lit(":")


def _codes(folder: Path, table: str, kind: str, counts: dict[str, int]) -> pl.DataFrame:
    frame = read_table(folder, table, ["hadm_id", "seq_num", "icd_code", "icd_version"])
    frame = drop_duplicates(frame, table, counts)
    bad = frame.filter(~pl.col("icd_version").str.strip_chars().is_in(["9", "10"]))
    if bad.height:
        raise DataError(f"{table}.icd_version must be 9 or 10, found {bad['icd_version'][0]!r}")
    return frame.filter(pl.col("icd_code").is_not_null() & pl.col("hadm_id").is_not_null()).select(
        pl.col("hadm_id").alias("visit_id"),
        (_version_prefix(kind) + pl.col("icd_code").str.strip_chars()).alias("code"),
        pl.col("seq_num").cast(pl.Int64, strict=False).fill_null(10_000).alias("seq"),
    )


def _titles(folder: Path, table: str, kind: str) -> dict[str, str]:
    frame = read_table(folder, table, ["icd_code", "icd_version", "long_title"]).drop_nulls()
    ids = frame.select((_version_prefix(kind) + pl.col("icd_code").str.strip_chars()).alias("id"), "long_title")
    return dict(ids.iter_rows())


def load_mimic4(path: str | Path) -> RawTables:
    """Read a MIMIC-IV ``hosp/`` folder into :class:`RawTables` (see :mod:`.raw` for the columns)."""
    folder = hosp_folder(path)
    counts: dict[str, int] = {}
    adm = read_table(folder, "admissions", ["subject_id", "hadm_id", "admittime", *PROFILE_FIELDS])
    adm = parse_datetime(drop_duplicates(adm, "admissions", counts), "admittime", "admissions")
    pat = read_table(folder, "patients", ["subject_id", "gender", "anchor_age", "anchor_year"])
    pat = drop_duplicates(pat, "patients", counts).unique("subject_id", keep="first", maintain_order=True)
    adm = adm.join(pat, on="subject_id", how="left")
    age = pl.col("anchor_age").cast(pl.Float64, strict=False) + (
        pl.col("admittime").dt.year() - pl.col("anchor_year").cast(pl.Int64, strict=False)
    )
    admissions = adm.select(
        pl.col("subject_id").alias("patient_id"),
        pl.col("hadm_id").alias("visit_id"),
        "admittime",
        "gender",
        age.cast(pl.Float64).alias("age"),
        *PROFILE_FIELDS,
    )
    prescriptions = prescription_facts(read_table(folder, "prescriptions", ["hadm_id", "ndc"]))
    titles = _titles(folder, "d_icd_diagnoses", "dx") | _titles(folder, "d_icd_procedures", "px")
    return RawTables(
        source="mimic4",
        admissions=admissions,
        diagnoses=_codes(folder, "diagnoses_icd", "dx", counts),
        procedures=_codes(folder, "procedures_icd", "px", counts),
        prescriptions=prescriptions,
        titles=titles,
        profile_fields=PROFILE_FIELDS,
        counts=counts,
    )
