"""Vocabularies and the patient/visit records of a cohort.

Code ids are namespaced strings so that codes of different systems never collide: ``dx9:4019`` (ICD-9 diagnosis),
``dx10:I10`` (ICD-10 diagnosis), ``px9:3605`` / ``px10:0DTJ4ZZ`` (procedures). Drugs are ATC level-3 codes (``N02B``).
Each vocabulary maps code <-> index (0 .. n-1, sorted by code) <-> human-readable name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def diagnosis_id(code: str, version: int) -> str:
    """Namespaced id of an ICD diagnosis code (``dx9:4019``)."""
    return f"dx{version}:{code}"


def procedure_id(code: str, version: int) -> str:
    """Namespaced id of an ICD procedure code (``px9:3605``)."""
    return f"px{version}:{code}"


def split_code_id(code_id: str) -> tuple[str, int, str]:
    """``dx9:4019`` -> (``"dx"``, 9, ``"4019"``)."""
    prefix, _, code = code_id.partition(":")
    return prefix[:2], int(prefix[2:]), code


@dataclass(frozen=True)
class Vocabulary:
    """code <-> index <-> name for one code system. ``codes[i]`` and ``names[i]`` describe index ``i``."""

    codes: tuple[str, ...]
    names: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.codes) != len(self.names):
            raise ValueError(f"{len(self.codes)} codes but {len(self.names)} names")
        index = {c: i for i, c in enumerate(self.codes)}
        if len(index) != len(self.codes):
            raise ValueError("duplicate codes in vocabulary")
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.codes)

    def __contains__(self, code: object) -> bool:
        return code in self._index

    def index(self, code: str) -> int:
        """Index of ``code``; KeyError naming the code if it is not in the vocabulary."""
        try:
            return self._index[code]
        except KeyError:
            raise KeyError(f"code {code!r} is not in the vocabulary ({len(self)} codes)") from None

    def name(self, index: int) -> str:
        return self.names[index]

    def to_json(self) -> dict[str, list[str]]:
        return {"codes": list(self.codes), "names": list(self.names)}

    @classmethod
    def from_json(cls, data: dict[str, list[str]]) -> "Vocabulary":
        return cls(tuple(data["codes"]), tuple(data["names"]))


@dataclass(frozen=True)
class Vocabularies:
    """The cohort's vocabularies: diagnoses, procedures, drugs, and one per profile field (value -> index)."""

    diagnoses: Vocabulary
    procedures: Vocabulary
    drugs: Vocabulary
    profile: dict[str, Vocabulary]

    def to_json(self) -> dict[str, Any]:
        return {
            "diagnoses": self.diagnoses.to_json(),
            "procedures": self.procedures.to_json(),
            "drugs": self.drugs.to_json(),
            "profile": {k: v.to_json() for k, v in self.profile.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Vocabularies":
        return cls(
            Vocabulary.from_json(data["diagnoses"]),
            Vocabulary.from_json(data["procedures"]),
            Vocabulary.from_json(data["drugs"]),
            {k: Vocabulary.from_json(v) for k, v in data["profile"].items()},
        )


@dataclass(frozen=True)
class Visit:
    """One hospital admission. Code tuples hold vocabulary indices; diagnoses keep the source's sequence order."""

    visit_id: str
    admittime: datetime | None
    diagnoses: tuple[int, ...]
    procedures: tuple[int, ...]
    drugs: tuple[int, ...]
    profile: dict[str, int]


@dataclass(frozen=True)
class Patient:
    """A patient and their visits in admission order."""

    patient_id: str
    visits: tuple[Visit, ...]
