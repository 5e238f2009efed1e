"""The Cohort: patients -> ordered visits, vocabularies, the DDI matrix and SMILES per drug; saved as parquet + JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from .. import resources
from ..extras import require_extra
from .schema import Patient, Visit, Vocabularies

VISITS_FILE = "visits.parquet"
META_FILE = "cohort.json"


@dataclass
class Cohort:
    """A built cohort.

    ``visits``: one row per visit (patient_id, visit_id, visit_index, admittime, diagnoses/procedures/drugs as
    lists of vocabulary indices, ``profile_<field>`` indices). ``ddi``: bool [|M|, |M|] aligned with
    ``vocab.drugs``. ``smiles[i]``: SMILES strings of drug ``i`` (empty when none are known).

    ``fingerprint`` identifies the cohort's content (it keys runs and trained models; see
    :func:`medrec_bench.data.build.content_fingerprint`); ``source_fingerprint`` identifies the inputs it was built
    from (it keys the cohort cache). For the synthetic source the two are the same.
    """

    name: str
    fingerprint: str
    visits: pl.DataFrame
    vocab: Vocabularies
    ddi: np.ndarray
    smiles: tuple[tuple[str, ...], ...]
    meta: dict[str, Any] = field(default_factory=dict)
    source_fingerprint: str = ""

    @classmethod
    def from_visits(cls, name: str, fingerprint: str, visits: pl.DataFrame, vocab: Vocabularies,
                    meta: dict[str, Any], source_fingerprint: str = "") -> "Cohort":
        """Attach the DDI matrix and SMILES (from the vendored tables) to a visits frame and its vocabularies."""
        drugs = vocab.drugs.codes
        table = resources.atc3_smiles()
        return cls(name, fingerprint, visits, vocab, resources.ddi_matrix(drugs),
                   tuple(table.get(d, ()) for d in drugs), meta, source_fingerprint)

    @property
    def profile_fields(self) -> tuple[str, ...]:
        return tuple(self.vocab.profile)

    @cached_property
    def patients(self) -> tuple[Patient, ...]:
        """All patients (sorted by id) with their visits in admission order."""
        cols = ["patient_id", "visit_id", "admittime", "diagnoses", "procedures", "drugs"]
        profile_cols = [f"profile_{f}" for f in self.profile_fields]
        out: list[Patient] = []
        current: list[Visit] = []
        current_id = None
        for row in self.visits.select(cols + profile_cols).iter_rows():
            pid = row[0]
            if pid != current_id and current_id is not None:
                out.append(Patient(current_id, tuple(current)))
                current = []
            current_id = pid
            profile = dict(zip(self.profile_fields, row[6:]))
            current.append(Visit(row[1], row[2], tuple(row[3]), tuple(row[4]), tuple(row[5]), profile))
        if current_id is not None:
            out.append(Patient(current_id, tuple(current)))
        return tuple(out)

    def to_pandas(self) -> Any:
        """The visits frame as a pandas DataFrame (one row per visit, code lists as arrays of vocabulary indices).

        Needs the optional ``pandas`` extra (``pip install -e ".[pandas]"``).
        """
        require_extra("pandas", "pandas", "Cohort.to_pandas()")
        return self.visits.to_pandas()

    def ddi_pairs_rate(self) -> float:
        """Ground-truth DDI rate: interacting drug pairs / all drug pairs (i < j) within visits, pooled."""
        pairs = interacting = 0
        for drugs in self.visits["drugs"].to_list():
            idx = np.asarray(drugs, dtype=np.int64)
            sub = self.ddi[np.ix_(idx, idx)]
            interacting += int(np.triu(sub, 1).sum())
            pairs += len(idx) * (len(idx) - 1) // 2
        return interacting / pairs if pairs else 0.0

    # --- persistence -------------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write ``visits.parquet`` and ``cohort.json`` (vocabularies, DDI pairs, SMILES, meta) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.visits.write_parquet(folder / VISITS_FILE)
        rows, cols = np.nonzero(np.triu(self.ddi, 1))
        meta = {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "source_fingerprint": self.source_fingerprint,
            "vocab": self.vocab.to_json(),
            "ddi_pairs": [[int(a), int(b)] for a, b in zip(rows, cols)],
            "smiles": [list(s) for s in self.smiles],
            "meta": self.meta,
        }
        (folder / META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> "Cohort":
        data = json.loads((folder / META_FILE).read_text())
        vocab = Vocabularies.from_json(data["vocab"])
        n = len(vocab.drugs)
        ddi = np.zeros((n, n), dtype=bool)
        for a, b in data["ddi_pairs"]:
            ddi[a, b] = ddi[b, a] = True
        visits = pl.read_parquet(folder / VISITS_FILE)
        return cls(data["name"], data["fingerprint"], visits, vocab, ddi,
                   tuple(tuple(s) for s in data["smiles"]), data["meta"], data.get("source_fingerprint", ""))
