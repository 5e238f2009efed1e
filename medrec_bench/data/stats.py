"""Cohort statistics: sizes, codes per visit, the single/multi-visit split, data-quality counters (the loaders' and
the preprocessing's, one ``meta["counts"]``; see :mod:`.raw` for the bad-row classes)."""

from __future__ import annotations

from typing import Any

import polars as pl

from .cohort import Cohort
from .raw import bad_row_total


def cohort_stats(cohort: Cohort) -> dict[str, Any]:
    """A flat dict of statistics (JSON-serialisable). Per-visit averages are means over visits."""
    v = cohort.visits
    per_patient = v.group_by("patient_id").len()
    lens = v.select(
        pl.col("diagnoses").list.len().alias("dx"),
        pl.col("procedures").list.len().alias("px"),
        pl.col("drugs").list.len().alias("rx"),
    )
    single = int((per_patient["len"] == 1).sum())
    out: dict[str, Any] = {
        "source": cohort.meta.get("source", cohort.name),
        "patients": per_patient.height,
        "visits": v.height,
        "diagnoses": len(cohort.vocab.diagnoses),
        "procedures": len(cohort.vocab.procedures),
        "drugs": len(cohort.vocab.drugs),
        "single_visit_patients": single,
        "multi_visit_patients": per_patient.height - single,
        "visits_per_patient_mean": round(float(per_patient["len"].mean()), 3),
        "visits_per_patient_max": int(per_patient["len"].max()),
        "diagnoses_per_visit_mean": round(float(lens["dx"].mean()), 3),
        "procedures_per_visit_mean": round(float(lens["px"].mean()), 3),
        "drugs_per_visit_mean": round(float(lens["rx"].mean()), 3),
        "drugs_per_visit_max": int(lens["rx"].max()),
        "ddi_pairs": int(cohort.ddi.sum() // 2),
        "ddi_rate_ground_truth": round(cohort.ddi_pairs_rate(), 4),
        "drugs_with_smiles": sum(1 for s in cohort.smiles if s),
        "fingerprint": cohort.fingerprint[:16],
    }
    counts = cohort.meta.get("counts", {})
    out["bad_rows"] = bad_row_total(counts)  # each class of bad rows is one bad_rows_* line of the counts below
    out.update(counts)
    return out
