"""Vendored public reference tables: NDC -> RXCUI -> ATC, ATC3 DDI pairs, SMILES per ATC3, ATC and ICD-9 names.

The files live in ``resources/files`` with their licences in ``LICENSES.md`` and checksums in ``SHA256SUMS``; they are
rebuilt from ``../shared/data`` by :mod:`medrec_bench.resources.vendor`. Loaders are cached: each table is read once.
All codes are plain strings: NDC as 11 digits, ATC3 as 4 characters (``N02B``), ICD-9 without dots.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

FILES_DIR = Path(__file__).with_name("files")


def _read_csv(name: str) -> list[dict[str, str]]:
    raw = (FILES_DIR / name).read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))


@lru_cache(maxsize=1)
def ndc_to_rxcui() -> dict[str, str]:
    """11-digit NDC -> RXCUI (GAMENet's ``ndc2rxnorm_mapping``); NDCs whose RXCUI is blank are left out."""
    return {r["ndc"]: r["rxcui"] for r in _read_csv("ndc_rxcui.csv.gz") if r["rxcui"]}


@lru_cache(maxsize=1)
def rxcui_to_atc4() -> dict[str, str]:
    """RXCUI -> 5-character ATC level-4 code (first row per RXCUI of the public NDC->ATC table)."""
    return {r["rxcui"]: r["atc4"] for r in _read_csv("rxcui_atc4.csv.gz")}


@lru_cache(maxsize=1)
def ndc_to_atc3() -> dict[str, str]:
    """11-digit NDC -> ATC3 (4 characters), the composition NDC -> RXCUI -> ATC4 -> first 4 characters."""
    rx_atc = rxcui_to_atc4()
    return {ndc: rx_atc[rx][:4] for ndc, rx in ndc_to_rxcui().items() if rx in rx_atc}


@lru_cache(maxsize=1)
def atc3_to_ndcs() -> dict[str, tuple[str, ...]]:
    """ATC3 -> the sorted NDCs that map to it (the inverse of :func:`ndc_to_atc3`)."""
    out: dict[str, list[str]] = {}
    for ndc, atc3 in ndc_to_atc3().items():
        out.setdefault(atc3, []).append(ndc)
    return {k: tuple(sorted(v)) for k, v in sorted(out.items())}


@lru_cache(maxsize=1)
def ddi_pairs() -> frozenset[tuple[str, str]]:
    """Unordered interacting ATC3 pairs (each stored once, codes sorted within the pair)."""
    return frozenset((r["atc_i"], r["atc_j"]) for r in _read_csv("ddi_atc3_pairs.csv"))


def ddi_matrix(drugs: list[str] | tuple[str, ...]) -> np.ndarray:
    """Symmetric bool DDI matrix [len(drugs), len(drugs)] aligned with ``drugs`` (ATC3 codes); zero diagonal."""
    index = {d: i for i, d in enumerate(drugs)}
    mat = np.zeros((len(drugs), len(drugs)), dtype=bool)
    for a, b in ddi_pairs():
        if a in index and b in index and a != b:
            mat[index[a], index[b]] = mat[index[b], index[a]] = True
    return mat


@lru_cache(maxsize=1)
def atc3_smiles() -> dict[str, tuple[str, ...]]:
    """ATC3 -> SMILES strings of its member drugs (MoleRec/SafeDrug-archived DrugBank crawl, 133 classes)."""
    data = json.loads((FILES_DIR / "atc3_smiles.json").read_text())
    return {k: tuple(v) for k, v in data.items()}


@lru_cache(maxsize=1)
def atc_names() -> dict[str, str]:
    """ATC code (levels 1-4: 1, 3, 4 or 5 characters) -> WHO class name as published (upper case for levels 1-3)."""
    return {r["atc_code"]: r["atc_name"] for r in _read_csv("atc_names.csv")}


@lru_cache(maxsize=2)
def icd9_titles(kind: str) -> dict[str, str]:
    """ICD-9 code (no dot) -> long title, for ``kind`` ``"diagnoses"`` or ``"procedures"`` (MIMIC-III dictionaries)."""
    if kind not in ("diagnoses", "procedures"):
        raise ValueError(f"kind must be 'diagnoses' or 'procedures', not {kind!r}")
    return {r["icd_code"]: r["long_title"] for r in _read_csv(f"icd9_{kind}.csv.gz")}


@lru_cache(maxsize=2)
def icd9_short_titles(kind: str) -> dict[str, str]:
    """ICD-9 code (no dot) -> short title, for ``kind`` ``"diagnoses"`` or ``"procedures"``."""
    icd9_titles(kind)  # validates kind
    return {r["icd_code"]: r["short_title"] for r in _read_csv(f"icd9_{kind}.csv.gz")}
