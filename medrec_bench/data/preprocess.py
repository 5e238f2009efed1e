"""Raw tables -> cohort: map NDC -> ATC3, apply the literature's filters, build vocabularies and per-visit code lists.

Steps, in order (each counted in ``Cohort.meta["steps"]`` so an empty result names the filter that emptied it):

1. prescriptions without an NDC (empty or ``0``) are dropped; NDCs map to RXCUI -> ATC4 -> ATC3 through the vendored
   tables; NDCs that map to nothing are dropped and counted;
2. drugs: keep the ``top_k_drugs`` most prescribed ATC3 classes (by visits; SafeDrug lineage: 300), then, with
   ``require_smiles``, only classes with SMILES (SafeDrug/MoleRec need molecules);
3. diagnoses: keep the ``top_k_diagnoses`` most frequent (by visits; literature: 2000); procedures: all or top-K;
4. visits: with ``require_all_code_types`` a visit needs >= 1 diagnosis, procedure and drug (literature default);
5. patients: keep those with >= ``min_visits`` visits (default 1, so single-visit patients exist; SafeDrug used 2).

Ties in top-K are broken by code so the result is deterministic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import polars as pl

from .. import resources
from .errors import DataError
from .raw import RawTables, age_group
from .schema import Vocabularies, Vocabulary, split_code_id

UNKNOWN = "UNKNOWN"
#: bump when the recipe changes: part of the cache fingerprint
RECIPE_VERSION = 1


@dataclass(frozen=True)
class PreprocessOptions:
    """Cohort-building options (literature defaults). Unknown keys are errors (see :meth:`from_dict`)."""

    min_visits: int = 1
    top_k_diagnoses: int | None = 2000
    top_k_procedures: int | None = None
    top_k_drugs: int | None = 300
    require_smiles: bool = True
    require_all_code_types: bool = True

    def __post_init__(self) -> None:
        if self.min_visits < 1:
            raise ValueError(f"min_visits must be >= 1, got {self.min_visits}")
        for name in ("top_k_diagnoses", "top_k_procedures", "top_k_drugs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ndc_table() -> pl.DataFrame:
    mapping = resources.ndc_to_atc3()
    return pl.DataFrame({"ndc": list(mapping), "atc3": list(mapping.values())})


def _top_k(frame: pl.DataFrame, column: str, k: int | None) -> pl.DataFrame:
    """Keep rows whose ``column`` value is among the ``k`` most frequent (ties by value)."""
    if k is None:
        return frame
    counts = frame.group_by(column).len().sort(["len", column], descending=[True, False]).head(k)
    return frame.join(counts.select(column), on=column, how="semi")


def _vocab(codes: list[str], titles: dict[str, str], unknown_label: str) -> tuple[Vocabulary, int]:
    names, unknown = [], 0
    for code in codes:
        title = titles.get(code)
        if title is None:
            unknown += 1
            title = f"{unknown_label} ({code.partition(':')[2] or code})"
        names.append(title)
    return Vocabulary(tuple(codes), tuple(names)), unknown


def _drug_names(codes: list[str]) -> dict[str, str]:
    who = resources.atc_names()
    return {c: who[c] for c in codes if c in who}


def _index_lists(frame: pl.DataFrame, vocab: Vocabulary, name: str, order: list[str]) -> pl.DataFrame:
    index = pl.DataFrame({"code": list(vocab.codes), "idx": np.arange(len(vocab), dtype=np.uint32)})
    return (
        frame.join(index, on="code", how="inner")
        .sort(["visit_id", *order])
        .group_by("visit_id", maintain_order=True)
        .agg(pl.col("idx").alias(name))
    )


def build_visits(raw: RawTables, options: PreprocessOptions) -> tuple[pl.DataFrame, Vocabularies, dict[str, Any]]:
    """Run the steps above. Returns the visits frame, the vocabularies and statistics (counts per step)."""
    steps: list[dict[str, Any]] = []
    counts: dict[str, int] = dict(raw.counts)

    def step(name: str, n_visits: int) -> None:
        steps.append({"step": name, "visits": n_visits})
        if n_visits == 0:
            raise DataError(f"the cohort is empty after step {name!r} ({_describe(steps)})")

    admissions = raw.admissions
    step("admissions", admissions.height)

    rx = raw.prescriptions
    counts["prescription_ndcs_missing"] = rx.filter(pl.col("ndc").is_null()).height
    rx = rx.drop_nulls("ndc")
    mapped = rx.join(_ndc_table(), on="ndc", how="left")
    unmapped = mapped.filter(pl.col("atc3").is_null())
    counts["prescription_ndcs_unmapped"] = unmapped.select("ndc").n_unique()
    drugs = mapped.drop_nulls("atc3").select("visit_id", "atc3").unique().rename({"atc3": "code"})
    step("ndc_to_atc3", drugs.select("visit_id").n_unique())
    drugs = _top_k(drugs, "code", options.top_k_drugs)
    if options.require_smiles:
        with_smiles = set(resources.atc3_smiles())
        counts["drug_classes_without_smiles"] = drugs.filter(~pl.col("code").is_in(with_smiles))["code"].n_unique()
        drugs = drugs.filter(pl.col("code").is_in(with_smiles))
        step("require_smiles", drugs.select("visit_id").n_unique())

    diagnoses = raw.diagnoses.sort(["visit_id", "seq"]).unique(["visit_id", "code"], keep="first", maintain_order=True)
    diagnoses = _top_k(diagnoses, "code", options.top_k_diagnoses)
    procedures = raw.procedures.sort(["visit_id", "seq"]).unique(["visit_id", "code"], keep="first", maintain_order=True)
    procedures = _top_k(procedures, "code", options.top_k_procedures)

    visits = admissions.join(drugs.select("visit_id").unique(), on="visit_id", how="semi")
    step("visit_has_drug", visits.height)
    if options.require_all_code_types:
        visits = visits.join(diagnoses.select("visit_id").unique(), on="visit_id", how="semi")
        step("visit_has_diagnosis", visits.height)
        visits = visits.join(procedures.select("visit_id").unique(), on="visit_id", how="semi")
        step("visit_has_procedure", visits.height)
    per_patient = visits.group_by("patient_id").len()
    keep = per_patient.filter(pl.col("len") >= options.min_visits).select("patient_id")
    visits = visits.join(keep, on="patient_id", how="semi")
    step(f"min_visits>={options.min_visits}", visits.height)

    kept = visits.select("visit_id")
    diagnoses = diagnoses.join(kept, on="visit_id", how="semi")
    procedures = procedures.join(kept, on="visit_id", how="semi")
    drugs = drugs.join(kept, on="visit_id", how="semi")

    dx_vocab, counts["unknown_diagnosis_codes"] = _vocab(
        sorted(diagnoses["code"].unique().to_list()), raw.titles, "unknown diagnosis code"
    )
    px_vocab, counts["unknown_procedure_codes"] = _vocab(
        sorted(procedures["code"].unique().to_list()), raw.titles, "unknown procedure code"
    )
    drug_codes = sorted(drugs["code"].unique().to_list())
    drug_vocab, counts["unknown_drug_classes"] = _vocab(drug_codes, _drug_names(drug_codes), "unknown ATC class")

    visits = visits.with_columns(age_group(pl.col("age")).alias("age_group"))
    profile_fields = (*raw.profile_fields, "age_group", "gender")
    profile_vocab: dict[str, Vocabulary] = {}
    profile_cols = []
    for name in profile_fields:
        col = pl.col(name).cast(pl.Utf8).str.strip_chars()
        visits = visits.with_columns(pl.when(col.is_null() | (col == "")).then(pl.lit(UNKNOWN)).otherwise(col).alias(name))
        values = sorted(set(visits[name].unique().to_list()) | {UNKNOWN})
        profile_vocab[name] = Vocabulary(tuple(values), tuple(values))
        mapping = pl.DataFrame({name: values, f"profile_{name}": np.arange(len(values), dtype=np.uint32)})
        visits = visits.join(mapping, on=name, how="left")
        profile_cols.append(f"profile_{name}")

    frame = (
        visits.select("patient_id", "visit_id", "admittime", *profile_cols)
        .join(_index_lists(diagnoses, dx_vocab, "diagnoses", ["seq", "code"]), on="visit_id", how="left")
        .join(_index_lists(procedures, px_vocab, "procedures", ["seq", "code"]), on="visit_id", how="left")
        .join(_index_lists(drugs, drug_vocab, "drugs", ["code"]), on="visit_id", how="left")
        .with_columns(pl.col(c).fill_null(pl.lit([], dtype=pl.List(pl.UInt32))) for c in ("diagnoses", "procedures"))
        .sort(["patient_id", "admittime", "visit_id"])
        .with_columns(pl.int_range(pl.len()).over("patient_id").cast(pl.UInt32).alias("visit_index"))
    )
    ordered = ["patient_id", "visit_id", "visit_index", "admittime", "diagnoses", "procedures", "drugs", *profile_cols]
    vocab = Vocabularies(dx_vocab, px_vocab, drug_vocab, profile_vocab)
    return frame.select(ordered), vocab, {"steps": steps, "counts": counts}


def _describe(steps: list[dict[str, Any]]) -> str:
    return " -> ".join(f"{s['step']}: {s['visits']} visits" for s in steps)


def diagnosis_kinds(vocab: Vocabulary) -> dict[str, int]:
    """Count codes per namespace (``dx9``, ``dx10`` ...) in a vocabulary."""
    out: dict[str, int] = {}
    for code in vocab.codes:
        prefix, version, _ = split_code_id(code)
        key = f"{prefix}{version}"
        out[key] = out.get(key, 0) + 1
    return out
