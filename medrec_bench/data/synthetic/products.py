"""The drug product table shared by every seed: per NDC a name, strength, route ... in three dose variants."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl

from ... import resources
from .catalogue import DRUG_FAMILIES, FAMILY_BY_PREFIX

#: dose multipliers of the three variants of a product
DOSE_MULT = (1.0, 2.0, 0.5)
#: prescription DRUG_TYPE values (index 1, BASE, only for IV solutions)
DRUG_TYPES = ("MAIN", "BASE", "ADDITIVE")
_IV_SOLUTIONS = ("B05C", "B05X", "B05A")


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class DrugCatalog:
    """The products of every ATC3 class that has NDCs (A classes, N mapped NDCs)."""

    atc: tuple[str, ...]           # [A] ATC3 classes that have NDCs (sorted)
    ndc: tuple[str, ...]           # [N] mapped NDCs, grouped by class (class order), popular first within a class
    offset: np.ndarray             # [A] int, first NDC of each class
    count: np.ndarray              # [A] int, NDCs per class
    unmapped: tuple[str, ...]      # valid 11-digit NDCs that map to no ATC class
    variants: pl.DataFrame         # [3N] rows: NDC i dose variant j at row 3i+j
    base_type: np.ndarray          # [A] int, 1 when the class is an IV solution (BASE rows possible)


@lru_cache(maxsize=1)
def drug_catalog() -> DrugCatalog:
    """The NDC table shared by all seeds (fixed random stream): names, strengths, routes, dose variants."""
    by_class = resources.atc3_to_ndcs()
    names = resources.atc_names()
    rx_atc4 = resources.rxcui_to_atc4()
    ndc_rx = resources.ndc_to_rxcui()
    rng = np.random.default_rng(20_240_917)
    atc = tuple(sorted(by_class))
    ndcs: list[str] = []
    offset, count = np.zeros(len(atc), np.int64), np.zeros(len(atc), np.int64)
    cols: dict[str, list[Any]] = {k: [] for k in ("drug", "poe", "generic", "formulary_drug_cd", "gsn",
                                                    "prod_strength", "dose_val_rx", "dose_unit_rx", "form_val_disp",
                                                    "form_unit_disp", "route", "form_rx", "doses_per_24_hrs")}
    for a, code in enumerate(atc):
        members = list(by_class[code])
        rng.shuffle(members)  # popularity order within the class
        offset[a], count[a] = len(ndcs), len(members)
        spec = next(fams for prefix, fams in FAMILY_BY_PREFIX if code.startswith(prefix))
        fam_names = [f for f, _ in spec]
        fam_p = np.array([w for _, w in spec]) / sum(w for _, w in spec)
        for ndc in members:
            ndcs.append(ndc)
            atc4 = rx_atc4.get(ndc_rx.get(ndc, ""), "")
            name = names.get(atc4) or names.get(code, code).capitalize()
            fam = fam_names[int(rng.choice(len(fam_names), p=fam_p))]
            route, word, unit_disp, dose_unit, strengths = DRUG_FAMILIES[fam]
            strength = float(strengths[int(rng.integers(len(strengths)))])
            if fam in ("bag", "meq_bag") and code.startswith("B05"):
                prod = f"{_num(strength)}mL Bag"
            else:
                prod = f"{_num(strength)}{dose_unit} {word}"
            display = name if route in ("PO", "PO/NG") else f"{name} ({route})"
            letters = "".join(ch for ch in name.upper() if ch.isalpha())[:4]
            fdc = f"{letters}{_num(strength).replace('.', '')}{'I' if route.startswith('IV') else ''}"
            gsn = None if rng.random() < 0.08 else f"{int(rng.integers(1, 80_000)):06d}"
            per_day = None if rng.random() < 0.3 else _num(float(rng.choice([1.0, 2.0, 3.0, 4.0, 6.0])))
            form_rx = None if rng.random() < 0.9 else ("TABLET" if route == "PO" else "SOLUTION")
            for mult in DOSE_MULT:
                cols["drug"].append(display)
                cols["poe"].append(display)
                cols["generic"].append(name)
                cols["formulary_drug_cd"].append(fdc)
                cols["gsn"].append(gsn)
                cols["prod_strength"].append(prod)
                cols["dose_val_rx"].append(_num(strength * mult))
                cols["dose_unit_rx"].append(dose_unit)
                cols["form_val_disp"].append(_num(mult))
                cols["form_unit_disp"].append(unit_disp if unit_disp != "BAG" or not code.startswith("B05")
                                              else "mL")
                cols["route"].append(route)
                cols["form_rx"].append(form_rx)
                cols["doses_per_24_hrs"].append(per_day)
    mapped = resources.ndc_to_atc3()
    unmapped = sorted(n for n in ndc_rx if n not in mapped and len(n) == 11 and n.isdigit())
    if not unmapped:  # fall back to synthetic 11-digit codes outside the mapping
        unmapped = [f"99{i:09d}" for i in range(200) if f"99{i:09d}" not in mapped]
    pick = rng.choice(len(unmapped), size=min(200, len(unmapped)), replace=False)
    base_type = np.array([1 if c in _IV_SOLUTIONS else 0 for c in atc], np.int8)
    return DrugCatalog(atc, tuple(ndcs), offset, count,
                       tuple(unmapped[i] for i in sorted(pick)), pl.DataFrame(cols), base_type)
