"""The source-independent raw form every loader produces and the preprocessing consumes, and the row checks both
MIMIC loaders share.

All frames are polars; ids are strings (canonical integers: ``12``, never `` 12`` or ``12.0``). ``admissions``:
patient_id, visit_id, admittime (Datetime), gender, age (years at admission, float, null when unknown) and one string
column per profile field. ``diagnoses`` and ``procedures``: visit_id, code (namespaced id, see :mod:`.schema`), seq
(int). ``prescriptions``: visit_id, ndc (normalised 11-digit string or null). ``titles``: namespaced code id ->
human-readable title.

Bad rows are counted or refused, never absorbed. Counted (``counts``, shown by ``medrec-bench data stats``; each
class also warns once at build time, :class:`~.errors.BadRowsWarning`): rows whose ``subject_id`` / ``hadm_id`` is
empty or not an integer (dropped); rows of a code table without a code or (MIMIC-IV) an ``icd_version`` (dropped);
admissions whose subject has no patients row (kept, gender and age UNKNOWN); code and prescription rows of an
admission not in the admissions table (ignored by the cohort); exact duplicate rows (dropped; counted under
``duplicate_rows_<table>`` without a warning: the cohort is the same). Refused (a :class:`~.errors.DataError`):
rows that share an ``hadm_id`` (admissions) or a ``subject_id`` (patients) but differ, e.g. one admission under two
subjects: which row is right cannot be known.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import polars as pl

from .errors import BadRowsWarning, DataError
from .tables import integer_values, normalize_ndc, parse_integer


@dataclass
class RawTables:
    source: str
    admissions: pl.DataFrame
    diagnoses: pl.DataFrame
    procedures: pl.DataFrame
    prescriptions: pl.DataFrame
    titles: dict[str, str]
    profile_fields: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)  # data-quality counters (see the module docstring)


AGE_GROUPS = ("<18", "18-44", "45-64", "65-79", "80+")


def age_group(age: pl.Expr) -> pl.Expr:
    """Bin age in years into :data:`AGE_GROUPS` (null stays null)."""
    return (
        pl.when(age.is_null())
        .then(None)
        .when(age < 18)
        .then(pl.lit("<18"))
        .when(age < 45)
        .then(pl.lit("18-44"))
        .when(age < 65)
        .then(pl.lit("45-64"))
        .when(age < 80)
        .then(pl.lit("65-79"))
        .otherwise(pl.lit("80+"))
    )


class Problem(NamedTuple):
    """A class of bad rows: ``tag`` ends its counter's name; the warning says the rows ``what``, then ``then``."""

    tag: str
    what: str
    then: str


BAD_ROWS = "bad_rows"  # prefix of the counters of bad rows (``bad_rows_<table>_<column>_<tag>``)
NOT_AN_ID = Problem("not_an_id", "are empty or not an integer", "dropped")
EMPTY = Problem("empty", "are empty", "dropped")
NO_PATIENT = Problem("not_in_patients", "have no row in the patients table", "kept with gender and age UNKNOWN")
NO_ADMISSION = Problem("not_in_admissions", "have no row in the admissions table", "ignored")


def table_key(file: str) -> str:
    """``ADMISSIONS.csv.gz`` -> ``admissions``: the table's part of counter names."""
    return file.split(".", 1)[0].lower()


def blank(column: str) -> pl.Expr:
    """Whether string ``column`` is null or only whitespace."""
    return pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")


def count_bad_rows(rows: pl.DataFrame, file: str, column: str, problem: Problem, counts: dict[str, int]) -> None:
    """Count ``rows`` (bad rows of ``file``) under ``bad_rows_<table>_<column>_<tag>`` and warn once with the
    count and an example value; nothing when there are none."""
    if rows.height == 0:
        return
    key = f"{BAD_ROWS}_{table_key(file)}_{column}_{problem.tag}"
    counts[key] = counts.get(key, 0) + rows.height
    values = rows[column].drop_nulls().str.strip_chars()
    example = f", e.g. {values[0]!r}" if len(values) and values[0] else ""
    warnings.warn(f"{file} column {column}: {rows.height} row(s) {problem.what}{example}; {problem.then} "
                  f"(counted as {key})", BadRowsWarning, stacklevel=2)


def bad_row_total(counts: dict[str, int]) -> int:
    """All bad rows counted by :func:`count_bad_rows`."""
    return sum(n for key, n in counts.items() if key.startswith(f"{BAD_ROWS}_"))


def drop_bad_rows(frame: pl.DataFrame, bad: pl.Expr, file: str, column: str, problem: Problem,
                  counts: dict[str, int]) -> pl.DataFrame:
    """``frame`` without the rows where ``bad`` holds, which are counted (:func:`count_bad_rows`)."""
    count_bad_rows(frame.filter(bad), file, column, problem, counts)
    return frame.filter(~bad)


def clean_ids(frame: pl.DataFrame, file: str, columns: list[str], counts: dict[str, int]) -> pl.DataFrame:
    """Id ``columns`` as canonical integer strings (`` 12`` and ``12.0`` are ``12``); rows whose id is empty or not
    an integer are dropped and counted."""
    for column in columns:
        ids = integer_values(pl.col(column))
        frame = drop_bad_rows(frame, ids.is_null(), file, column, NOT_AN_ID, counts)
        frame = frame.with_columns(ids.cast(pl.Utf8).alias(column))
    return frame


def drop_duplicates(frame: pl.DataFrame, file: str, counts: dict[str, int]) -> pl.DataFrame:
    """Drop exact duplicate rows, counting them under ``duplicate_rows_<table>``."""
    out = frame.unique(maintain_order=True)
    counts[f"duplicate_rows_{table_key(file)}"] = frame.height - out.height
    return out


def one_row_per(frame: pl.DataFrame, key: str, file: str, counts: dict[str, int]) -> pl.DataFrame:
    """``frame`` with one row per ``key``: exact duplicates are dropped (counted); rows that share ``key`` but
    differ are a DataError naming the key, the first column where they differ and both values."""
    frame = drop_duplicates(frame, file, counts)
    shared = frame.filter(pl.col(key).is_duplicated())
    if shared.height == 0:
        return frame
    value = shared[key][0]
    rows = shared.filter(pl.col(key) == value)
    column = next(c for c in rows.columns if rows[c].n_unique() > 1)
    first, second = (str(v) for v in rows[column].unique(maintain_order=True)[:2])
    raise DataError(f"{file}: {key} {value!r} is on {rows.height} rows that differ in {column} ({first!r} vs "
                    f"{second!r}; {shared[key].n_unique()} {key}(s) like this); a {key} must be on one row")


def join_patients(admissions: pl.DataFrame, file: str, patients: pl.DataFrame,
                  counts: dict[str, int]) -> pl.DataFrame:
    """``admissions`` with their patient's columns; admissions whose subject has no patients row are counted."""
    count_bad_rows(admissions.join(patients, on="subject_id", how="anti"), file, "subject_id", NO_PATIENT, counts)
    return admissions.join(patients, on="subject_id", how="left")


def _count_orphans(frame: pl.DataFrame, file: str, admissions: pl.DataFrame, counts: dict[str, int]) -> None:
    """Count the rows of ``frame`` whose ``hadm_id`` is not in ``admissions``."""
    count_bad_rows(frame.join(admissions.select("hadm_id"), on="hadm_id", how="anti"), file, "hadm_id",
                   NO_ADMISSION, counts)


def code_rows(frame: pl.DataFrame, file: str, code: str, admissions: pl.DataFrame,
              counts: dict[str, int]) -> pl.DataFrame:
    """The usable rows of a diagnoses / procedures table: ids cleaned and rows without a ``code`` dropped (both
    counted), ``seq_num`` parsed (Int64), exact duplicates dropped, rows of unknown admissions counted."""
    frame = clean_ids(frame, file, ["hadm_id"], counts)
    frame = drop_bad_rows(frame, blank(code), file, code, EMPTY, counts)
    frame = drop_duplicates(parse_integer(frame, "seq_num", file), file, counts)
    _count_orphans(frame, file, admissions, counts)
    return frame


def prescription_facts(rx: pl.DataFrame, file: str, admissions: pl.DataFrame,
                       counts: dict[str, int]) -> pl.DataFrame:
    """(hadm_id, ndc) rows -> unique (visit_id, normalised ndc): a drug given on several days is one fact. Ids are
    cleaned and rows of unknown admissions counted."""
    rx = clean_ids(rx, file, ["hadm_id"], counts)
    _count_orphans(rx, file, admissions, counts)
    return rx.select(pl.col("hadm_id").alias("visit_id"), normalize_ndc(pl.col("ndc")).alias("ndc")).unique()
