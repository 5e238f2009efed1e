"""The source-independent raw form every loader produces and the preprocessing consumes.

All frames are polars; ids are strings. ``admissions``: patient_id, visit_id, admittime (Datetime), gender,
age (years at admission, float, null when unknown) and one string column per profile field. ``diagnoses`` and
``procedures``: visit_id, code (namespaced id, see :mod:`.schema`), seq (int). ``prescriptions``: visit_id, ndc
(normalised 11-digit string or null). ``titles``: namespaced code id -> human-readable title.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from .tables import normalize_ndc


@dataclass
class RawTables:
    source: str
    admissions: pl.DataFrame
    diagnoses: pl.DataFrame
    procedures: pl.DataFrame
    prescriptions: pl.DataFrame
    titles: dict[str, str]
    profile_fields: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)  # data-quality counters (duplicates dropped ...)


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


def prescription_facts(rx: pl.DataFrame) -> pl.DataFrame:
    """(hadm_id, ndc) rows -> unique (visit_id, normalised ndc): a drug given on several days is one fact."""
    return rx.filter(pl.col("hadm_id").is_not_null()).select(
        pl.col("hadm_id").alias("visit_id"), normalize_ndc(pl.col("ndc")).alias("ndc")
    ).unique()


def drop_duplicates(frame: pl.DataFrame, name: str, counts: dict[str, int]) -> pl.DataFrame:
    """Drop exact duplicate rows, counting them under ``duplicate_rows_<name>``."""
    out = frame.unique(maintain_order=True)
    counts[f"duplicate_rows_{name}"] = frame.height - out.height
    return out
