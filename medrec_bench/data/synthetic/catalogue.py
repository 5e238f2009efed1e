"""The synthetic generator's catalogue, read from the packaged ``catalogue.toml``: conditions, hospital-routine drugs,
drug product families and the profile / admission value tables (see the file's header for what each field means)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from importlib import resources as importlib_resources
from typing import Any, NamedTuple

#: ``(code, probability)`` pairs, e.g. ICD-9 codes or ATC3 classes of a condition
Spec = tuple[tuple[str, float], ...]

KINDS = ("chronic", "principal", "secondary")


def parse_spec(text: str) -> Spec:
    """``"4019:.9 4011:.05"`` -> ``(("4019", 0.9), ("4011", 0.05))`` (probability 1 when omitted)."""
    out = []
    for item in text.split():
        code, _, prob = item.partition(":")
        out.append((code, float(prob) if prob else 1.0))
    return tuple(out)


@dataclass(frozen=True)
class Condition:
    """A latent clinical condition.

    ``kind``: ``chronic`` (``p`` = probability a patient has it), ``principal`` (``p`` = relative weight of being an
    admission's main reason) or ``secondary`` (``p`` = per-admission probability). ``dx``/``px``/``rx``: ICD-9
    diagnosis codes, ICD-9 procedure codes and ATC3 classes with their probabilities given the condition.
    ``age``: prevalence shape over age (``flat``, ``old``, ``elderly``, ``young``); ``male``/``female``: multipliers;
    ``boost``: multipliers when a profile tag (``black``, ``hispanic``, ``asian``, ``medicaid``) or another condition
    (by name) is present. ``los``: length-of-stay multiplier, ``death``: in-hospital mortality, ``elective``: share
    of elective admissions, ``readmit``: weight in the patient's readmission propensity (chronic only).
    """

    name: str
    kind: str
    p: float
    dx: Spec = ()
    px: Spec = ()
    rx: Spec = ()
    age: str = "flat"
    male: float = 1.0
    female: float = 1.0
    boost: Spec = ()
    label: str = ""
    los: float = 1.0
    death: float = 0.03
    elective: float = 0.0
    readmit: float = 1.0


class DrugFamily(NamedTuple):
    """A product family: route, form word (in PROD_STRENGTH), FORM_UNIT_DISP, dose unit and possible strengths."""

    route: str
    form: str
    unit_disp: str
    dose_unit: str
    strengths: tuple[float, ...]


@dataclass(frozen=True)
class ValueTable:
    """A categorical field as MIMIC-III and MIMIC-IV write it (``None`` = null) with weight columns.

    ``weights[j][i]``: weight of value ``i`` in column ``j`` (which column is which is said where the table is
    defined in ``catalogue.toml``).
    """

    mimic3: tuple[str | None, ...]
    mimic4: tuple[str | None, ...]
    weights: tuple[tuple[float, ...], ...]


_SPEC_FIELDS = ("dx", "px", "rx", "boost")
_FLOAT_FIELDS = ("p", "male", "female", "los", "death", "elective", "readmit")


def _condition(name: str, kind: str, entry: dict[str, Any]) -> Condition:
    known = {f.name for f in fields(Condition)} - {"name", "kind"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"catalogue.toml: condition {name!r} has unknown field {unknown[0]!r}")
    values = {k: parse_spec(v) if k in _SPEC_FIELDS else float(v) if k in _FLOAT_FIELDS else v
              for k, v in entry.items()}
    return Condition(name, kind, **values)


def _conditions(table: dict[str, dict[str, dict[str, Any]]]) -> tuple[Condition, ...]:
    if set(table) - set(KINDS):
        raise ValueError(f"catalogue.toml: unknown condition kind {sorted(set(table) - set(KINDS))[0]!r}")
    out = tuple(_condition(name, kind, entry) for kind, entries in table.items() for name, entry in entries.items())
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError("catalogue.toml: a condition name appears under two kinds")
    return out


def _values(rows: list[list[Any]]) -> ValueTable:
    """Rows of ``[MIMIC-III value, MIMIC-IV value ("" = null), weight ...]`` -> a :class:`ValueTable`."""
    columns = list(zip(*rows))
    return ValueTable(tuple(columns[0]), tuple(v or None for v in columns[1]),
                      tuple(tuple(float(w) for w in col) for col in columns[2:]))


def _discharge() -> ValueTable:
    """Survivors' discharge locations (with weights), then the one of an in-hospital death."""
    alive = _values(_PROFILE["discharge_location"])
    dead3, dead4 = _PROFILE["discharge_death"]
    return ValueTable(alive.mimic3 + (dead3,), alive.mimic4 + (dead4,), alive.weights)


def _load() -> dict[str, Any]:
    return tomllib.loads((importlib_resources.files(__package__) / "catalogue.toml").read_text(encoding="utf-8"))


_DATA = _load()
_PROFILE = _DATA["profile"]

#: the hand-written conditions, in the order they are decided (chronic, then principal, then secondary)
CONDITIONS: tuple[Condition, ...] = _conditions(_DATA["conditions"])
#: always-on "hospital routine" drug classes with their per-admission prior (scaled by the admission's severity)
ROUTINE_DRUGS: Spec = parse_spec(_DATA["routine_drugs"])
#: ATC3 prefix -> extra prescription rows per day of stay (relative); the first matching prefix wins, "" matches all
ROW_FACTOR: dict[str, float] = {k: float(v) for k, v in _DATA["row_factor"].items()}
#: product families by name
DRUG_FAMILIES: dict[str, DrugFamily] = {
    name: DrugFamily(route, form, unit_disp, dose_unit, tuple(float(s) for s in strengths))
    for name, (route, form, unit_disp, dose_unit, strengths) in _DATA["drug_families"].items()
}
#: ATC3 prefix -> product families with weights; the first matching prefix wins, "" matches all
FAMILY_BY_PREFIX: tuple[tuple[str, Spec], ...] = tuple((k, parse_spec(v))
                                                       for k, v in _DATA["family_by_prefix"].items())

#: ethnicity (MIMIC-IV race); one weight column
ETHNICITY: ValueTable = _values([[m3, m4, w] for m3, m4, _, w in _PROFILE["ethnicity"]])
#: the group (a profile tag) of each ethnicity value
ETHNIC_GROUP: tuple[str, ...] = tuple(row[2] for row in _PROFILE["ethnicity"])
#: the groups in order of first appearance
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(ETHNIC_GROUP))
#: MIMIC-III LANGUAGE codes
LANGUAGES: tuple[str, ...] = tuple(_PROFILE["languages"])
#: group -> {LANGUAGE code: weight}
LANGUAGE_BY_GROUP: dict[str, dict[str, float]] = {g: {k: float(w) for k, w in ws.items()}
                                                  for g, ws in _PROFILE["language_by_group"].items()}
#: MIMIC-III RELIGION values and their weights
RELIGIONS: tuple[str, ...] = tuple(_PROFILE["religion"])
RELIGION_WEIGHTS: tuple[float, ...] = tuple(float(w) for w in _PROFILE["religion"].values())
#: weight columns: age < 40, 40-70, >= 70
MARITAL: ValueTable = _values(_PROFILE["marital"])
#: weight columns: age >= 65, < 65
INSURANCE: ValueTable = _values(_PROFILE["insurance"])
#: MIMIC-III ADMISSION_TYPE; index 1 is urgent, 2 elective, 0 emergency
ADMISSION_TYPES: tuple[str, ...] = tuple(_PROFILE["admission_types"])
#: weight columns: one per admission type
ADMISSION_LOCATION: ValueTable = _values(_PROFILE["admission_location"])
#: weight columns: age < 70, >= 70, over every value but the last one (in-hospital death)
DISCHARGE_LOCATION: ValueTable = _discharge()
#: MIMIC-IV anchor_year_group
ANCHOR_YEAR_GROUPS: tuple[str, ...] = tuple(_PROFILE["anchor_year_groups"])

if set(LANGUAGE_BY_GROUP) != set(GROUPS) or any(k not in LANGUAGES for ws in LANGUAGE_BY_GROUP.values() for k in ws):
    raise ValueError("catalogue.toml: language_by_group must cover every ethnicity group with known languages")
