"""Protocols (tasks): how a cohort becomes prediction samples, and the patient-level train/val/test split.

- ``visit`` (GAMENet/SafeDrug lineage): every visit of a patient is a sample whose history is the earlier visits
  (the first visit has none); patients split 2/3 train, 1/6 val, 1/6 test.
- ``last_visit`` (LEADER): one sample per patient, the target is the last visit's drugs and the history the earlier
  visits; patients split 80/10/10.

Split order: ``shuffle`` (default) permutes patients with ``numpy.random.default_rng(seed)``; ``original`` keeps the
literature's file order (patients by numeric id) and, as in the GAMENet/SafeDrug code, takes the *test* block before
the *validation* block for the ``visit`` protocol. No patient is in two splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..data.cohort import Cohort
from ..data.schema import Patient, Visit

PROTOCOLS = ("visit", "last_visit")
SPLIT_ORDERS = ("shuffle", "original")
FRACTIONS = {"visit": (2 / 3, 1 / 6, 1 / 6), "last_visit": (0.8, 0.1, 0.1)}


@dataclass(frozen=True)
class Sample:
    """One prediction: given ``history`` (earlier visits, with drugs) and the current visit's codes, predict
    ``target`` (drug indices). ``profile`` maps profile field -> index in ``cohort.vocab.profile[field]``."""

    patient_id: str
    visit_id: str
    history: tuple[Visit, ...]
    diagnoses: tuple[int, ...]
    procedures: tuple[int, ...]
    profile: dict[str, int]
    target: tuple[int, ...]

    @property
    def n_visits(self) -> int:
        """Visits of the patient up to and including the current one."""
        return len(self.history) + 1

    @property
    def single_visit(self) -> bool:
        """True when the patient has no earlier visit (a first-time patient)."""
        return not self.history


@dataclass(frozen=True)
class Splits:
    """The samples of one protocol, split by patient."""

    protocol: str
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def __getitem__(self, name: str) -> tuple[Sample, ...]:
        if name not in ("train", "val", "test"):
            raise KeyError(f"no split {name!r} (train, val, test)")
        return getattr(self, name)


def sample_at(patient: Patient, k: int) -> Sample:
    """The sample predicting visit ``k`` of ``patient`` from visits ``0..k-1``."""
    visit = patient.visits[k]
    return Sample(patient.patient_id, visit.visit_id, patient.visits[:k], visit.diagnoses, visit.procedures,
                  visit.profile, visit.drugs)


def patient_samples(patient: Patient, protocol: str) -> list[Sample]:
    if protocol == "visit":
        return [sample_at(patient, k) for k in range(len(patient.visits))]
    return [sample_at(patient, len(patient.visits) - 1)]


def _id_key(pid: str) -> tuple[int, int | str]:
    return (0, int(pid)) if pid.isdigit() else (1, pid)


def split_patients(patients: tuple[Patient, ...], protocol: str, seed: int,
                   split_order: str) -> tuple[list[Patient], list[Patient], list[Patient]]:
    if split_order == "shuffle":
        order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    elif split_order == "original":
        order = sorted(patients, key=lambda p: _id_key(p.patient_id))
    else:
        raise ValueError(f"unknown split order {split_order!r} (choose from {', '.join(SPLIT_ORDERS)})")
    n = len(order)
    n_train = int(n * FRACTIONS[protocol][0])
    n_rest = n - n_train
    if protocol == "visit":
        n_first = n_rest // 2  # the literature's int(len(rest) / 2)
    else:
        n_first = int(round(n * FRACTIONS[protocol][1]))
    train, first, second = order[:n_train], order[n_train:n_train + n_first], order[n_train + n_first:]
    if protocol == "visit" and split_order == "original":
        return train, second, first  # GAMENet/SafeDrug: test = first block, eval = second block
    return train, first, second


def make_splits(cohort: Cohort, protocol: Literal["visit", "last_visit"] = "last_visit", seed: int = 0,
                split_order: Literal["shuffle", "original"] = "shuffle") -> Splits:
    """Samples of ``protocol`` for the train/val/test patients of ``cohort``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    parts = split_patients(cohort.patients, protocol, seed, split_order)
    train, val, test = (tuple(s for p in part for s in patient_samples(p, protocol)) for part in parts)
    return Splits(protocol, train, val, test)
