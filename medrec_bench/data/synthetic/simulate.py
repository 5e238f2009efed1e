"""The simulation: ``(n_patients, seed)`` -> patients, admissions, codes and prescription rows as index arrays.

:func:`simulate` runs one function per step: profiles, conditions and admissions, diagnosis / procedure codes, drug
sets, prescription rows, then times and admission fields. Each step draws from its own random streams (spawned from
the seed), in a fixed order, so the same arguments give the same cohort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ... import resources
from .catalogue import (ADMISSION_LOCATION, ANCHOR_YEAR_GROUPS, CONDITIONS, DISCHARGE_LOCATION, ETHNIC_GROUP,
                        ETHNICITY, GROUPS, INSURANCE, LANGUAGE_BY_GROUP, LANGUAGES, MARITAL, RELIGION_WEIGHTS,
                        ROUTINE_DRUGS, ROW_FACTOR, Condition, Spec)
from .products import DrugCatalog, drug_catalog

DAY = 86_400  # seconds
_YEAR = 365.2425 * DAY
_T2100 = int(np.datetime64("2100-01-01T00:00:00", "s").astype(np.int64))
_T2200 = int(np.datetime64("2200-01-01T00:00:00", "s").astype(np.int64))
_MAX_DX_PER_VISIT = 39
_MAX_PX_PER_VISIT = 12
_N_BACKGROUND = 80  # weak seed-specific conditions added to the catalogue's
_DDI_AVOID = 0.05  # share of co-prescribed interacting pairs of needed/routine drugs resolved by dropping one
_DDI_AVOID_OPTIONAL = 0.8  # ... of pairs where one drug is an optional random extra


@dataclass
class SimulatedCohort:
    """The simulated cohort as index arrays; the writers turn it into MIMIC-shaped tables."""

    # patients [P]
    subject_id: np.ndarray
    male: np.ndarray
    dob: np.ndarray            # epoch seconds (shifted by ~300 years for ages > 89, like MIMIC-III)
    age0: np.ndarray           # true age at the first admission, years
    dod: np.ndarray            # epoch seconds, valid where died
    died: np.ndarray
    died_hosp: np.ndarray
    eth: np.ndarray            # index into ETHNICITY
    language: np.ndarray       # index into LANGUAGES, -1 = null
    religion: np.ndarray       # index into RELIGIONS, -1 = null
    marital: np.ndarray        # index into MARITAL, -1 = null
    insurance: np.ndarray      # index into INSURANCE
    anchor_group: np.ndarray   # index into ANCHOR_YEAR_GROUPS
    # admissions [V], sorted by patient then time
    v_pat: np.ndarray
    hadm_id: np.ndarray
    admit: np.ndarray          # epoch seconds
    disch: np.ndarray
    expire: np.ndarray
    adm_type: np.ndarray       # index into ADMISSION_TYPES
    adm_loc: np.ndarray        # index into ADMISSION_LOCATION
    disch_loc: np.ndarray      # index into DISCHARGE_LOCATION
    ed: np.ndarray
    ed_reg: np.ndarray
    ed_out: np.ndarray
    label: np.ndarray          # index into labels
    labels: tuple[str, ...]
    icu: np.ndarray
    icustay_id: np.ndarray
    chartevents: np.ndarray
    provider: np.ndarray       # index into providers
    providers: tuple[str, ...]
    # diagnoses / procedures: code indices into dx_codes / px_codes
    dx_visit: np.ndarray
    dx_code: np.ndarray
    dx_seq: np.ndarray
    dx_codes: tuple[str, ...]
    px_visit: np.ndarray
    px_code: np.ndarray
    px_seq: np.ndarray
    px_day: np.ndarray
    px_codes: tuple[str, ...]
    # prescriptions [R]
    rx_visit: np.ndarray
    rx_attr: np.ndarray        # row of DrugCatalog.variants
    rx_ndc: np.ndarray         # index into ndc strings: mapped, unmapped pool, "0", null
    rx_start: np.ndarray       # day offset from the admission day
    rx_dur: np.ndarray         # days
    rx_icu: np.ndarray
    rx_type: np.ndarray        # index into DRUG_TYPES
    rx_hour: np.ndarray        # hour of the start time (MIMIC-IV)
    rx_hours: np.ndarray       # duration in hours added to stop time (MIMIC-IV)
    rx_uid: np.ndarray         # order id (equal for exact duplicates)
    rx_poe_seq: np.ndarray     # order number within the patient (MIMIC-IV poe_seq)


class _Streams(NamedTuple):
    """Independent random streams, one per concern (spawned from the seed in this order)."""

    profile: np.random.Generator
    chronic: np.random.Generator
    visits: np.random.Generator
    acute: np.random.Generator
    codes: np.random.Generator
    drugs: np.random.Generator
    rows: np.random.Generator
    background: np.random.Generator
    noise: np.random.Generator
    admission: np.random.Generator


@dataclass(frozen=True)
class _Codes:
    """The ICD-9 code lists and their index maps."""

    dx: list[str]
    px: list[str]
    dx_index: dict[str, int]
    px_index: dict[str, int]


@dataclass(frozen=True)
class _Profiles:
    """Patient profiles [P]; values are indices into the catalogue's tables."""

    male: np.ndarray
    old: np.ndarray            # age > 89 at the first admission
    age0: np.ndarray           # years
    eth: np.ndarray
    language: np.ndarray
    religion: np.ndarray
    marital: np.ndarray
    insurance: np.ndarray
    tags: dict[str, np.ndarray]  # profile tag -> bool [P]


@dataclass(frozen=True)
class _ConditionSet:
    """This seed's conditions: the catalogue's plus background ones, with their indices by kind and name."""

    conds: list[Condition]
    index: dict[str, int]
    chronic: list[int]
    principal: list[int]
    secondary: list[int]
    dx_pool: np.ndarray        # diagnosis codes free for background conditions and the long tail
    px_pool: np.ndarray


@dataclass(frozen=True)
class _Admissions:
    """Admissions [V] (sorted by patient, then time) and the conditions active in each."""

    n_vis: np.ndarray          # [P] admissions per patient
    v_pat: np.ndarray          # patient of each admission
    first: np.ndarray          # [P] first admission of each patient
    rank: np.ndarray           # admission number within its patient, from 0
    gap: np.ndarray            # days between the previous discharge and this admission (0 for the first)
    age_v: np.ndarray          # years
    act: np.ndarray            # bool [V, C]: condition active in the admission
    main: np.ndarray           # principal condition index
    los: np.ndarray            # length of stay, days
    n_sec: np.ndarray          # number of active secondary conditions
    adm_type: np.ndarray       # index into ADMISSION_TYPES
    icu: np.ndarray
    severity: np.ndarray       # scales the hospital-routine drug priors


def _age_factor(shape: str, age: np.ndarray) -> np.ndarray:
    """Prevalence multiplier over age in years [n] (mean about 1 in an ICU-like population)."""
    if shape == "old":
        return np.clip(np.exp((age - 62.0) / 14.0), 0.12, 2.6)
    if shape == "elderly":
        return np.clip(np.exp((age - 72.0) / 9.0), 0.03, 3.5)
    if shape == "young":
        return np.clip(np.exp((50.0 - age) / 18.0), 0.25, 3.0)
    return np.ones_like(age)


def _sex_factor(cond: Condition, is_male: np.ndarray) -> np.ndarray:
    return np.where(is_male, cond.male, cond.female)


def _categorical(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One draw per row of ``weights`` [n, k] (non-negative, rows need not sum to 1) -> int [n]."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _zipf_cdf(n: int, exponent: float, shift: float) -> np.ndarray:
    w = 1.0 / (np.arange(n) + shift) ** exponent
    cdf = np.cumsum(w)
    return cdf / cdf[-1]


def _draws(cond: Condition, spec: Spec, rows: np.ndarray, rng: np.random.Generator, v_pat: np.ndarray,
           n_patients: int) -> np.ndarray:
    """bool [len(rows), len(spec)]: which of ``spec``'s items the admissions ``rows`` with ``cond`` get.

    A chronic condition draws per patient (88% of the time), so it keeps its codes and drugs across admissions.
    """
    probs = np.array([p for _, p in spec])
    u = rng.random((len(rows), len(spec)))
    if cond.kind == "chronic":
        u_pat = rng.random((n_patients, len(spec)))[v_pat[rows]]
        keep = rng.random(len(rows)) < 0.88
        u = np.where(keep[:, None], u_pat, u)
    return u < probs


# ---- profiles -------------------------------------------------------------------------------------------------


def _profiles(rng: np.random.Generator, P: int) -> _Profiles:
    male = rng.random(P) < 0.56
    old = rng.random(P) < 0.025
    age0 = np.where(old, rng.uniform(90, 101, P), np.clip(rng.normal(63.5, 16.5, P), 18, 89.9))
    eth_w = np.array(ETHNICITY.weights[0])
    eth = rng.choice(len(eth_w), P, p=eth_w / eth_w.sum())
    group = np.array([GROUPS.index(g) for g in ETHNIC_GROUP])[eth]
    language = np.full(P, -1, np.int64)
    for g, name in enumerate(GROUPS):
        idx = np.nonzero(group == g)[0]
        weights = LANGUAGE_BY_GROUP[name]
        langs = np.array([LANGUAGES.index(k) for k in weights])
        pw = np.array(list(weights.values()))
        language[idx] = langs[rng.choice(len(langs), len(idx), p=pw / pw.sum())]
    language[rng.random(P) < 0.33] = -1
    rel_w = np.array(RELIGION_WEIGHTS)
    religion = rng.choice(len(rel_w), P, p=rel_w / rel_w.sum())
    religion[rng.random(P) < 0.007] = -1
    marital = np.zeros(P, np.int64)
    lo = 0.0
    for hi, weights in zip((40, 70, 200), MARITAL.weights):
        idx = np.nonzero((age0 >= lo) & (age0 < hi))[0]
        w = np.array(weights)
        marital[idx] = rng.choice(len(w), len(idx), p=w / w.sum())
        lo = hi
    marital[rng.random(P) < 0.05] = -1
    senior, younger = INSURANCE.weights
    insurance = np.where(age0 >= 65, rng.choice(len(senior), P, p=senior), rng.choice(len(younger), P, p=younger))
    tags = {"male": male, "female": ~male, **{name: group == g for g, name in enumerate(GROUPS)},
            "medicare": insurance == 0, "private": insurance == 1, "medicaid": insurance == 2}
    return _Profiles(male, old, age0, eth, language, religion, marital, insurance, tags)


# ---- conditions and admissions ----------------------------------------------------------------------------------


def _background(rng: np.random.Generator, n: int, dx_pool: np.ndarray, px_pool: np.ndarray,
                atc: tuple[str, ...], dx_codes: list[str], px_codes: list[str]) -> list[Condition]:
    """``n`` weak seed-specific conditions over random real codes and drug classes."""
    out = []
    shapes = ("flat", "old", "young", "elderly")
    for i in range(n):
        chronic = rng.random() < 0.4
        p = float(np.clip(np.exp(rng.normal(np.log(0.008 if chronic else 0.012), 0.8)), 0.001, 0.06))
        k = int(rng.integers(1, 4))
        dx = tuple((dx_codes[j], 0.9 if m == 0 else 0.4) for m, j in enumerate(rng.choice(dx_pool, k, False)))
        px: Spec = ()
        if rng.random() < 0.35:
            px = ((px_codes[int(rng.choice(px_pool))], 0.5),)
        n_rx = int(rng.choice([0, 1, 1, 2, 2, 3]))
        rx = tuple((atc[j], float(rng.uniform(0.3, 0.8))) for j in rng.choice(len(atc), n_rx, False))
        out.append(Condition(f"background_{i:03d}", "chronic" if chronic else "secondary", p, dx, px, rx,
                             age=shapes[int(rng.integers(4))]))
    return out


def _condition_set(rng: np.random.Generator, codes: _Codes, atc: tuple[str, ...]) -> _ConditionSet:
    dx_used = {c for cond in CONDITIONS for c, _ in cond.dx}
    bad_prefix = ("V3", "76", "77", "63", "64", "65", "66", "67")
    dx_pool = np.array([i for i, c in enumerate(codes.dx) if c not in dx_used and not c.startswith(bad_prefix)])
    px_pool = np.arange(len(codes.px))
    conds = list(CONDITIONS) + _background(rng, _N_BACKGROUND, dx_pool, px_pool, atc, codes.dx, codes.px)
    return _ConditionSet(conds, {c.name: i for i, c in enumerate(conds)},
                         [i for i, c in enumerate(conds) if c.kind == "chronic"],
                         [i for i, c in enumerate(conds) if c.kind == "principal"],
                         [i for i, c in enumerate(conds) if c.kind == "secondary"], dx_pool, px_pool)


def _chronic_presence(rng: np.random.Generator, prof: _Profiles, cs: _ConditionSet) -> np.ndarray:
    """bool [P, C]: the patient has the chronic condition, decided in catalogue order (one may boost later ones)."""
    P = len(prof.age0)
    has = np.zeros((P, len(cs.conds)), bool)
    for i in cs.chronic:
        cond = cs.conds[i]
        p = cond.p * _age_factor(cond.age, prof.age0) * _sex_factor(cond, prof.male)
        for key, mult in cond.boost:
            flag = prof.tags[key] if key in prof.tags else has[:, cs.index[key]]
            p = np.where(flag, p * mult, p)
        has[:, i] = rng.random(P) < np.clip(p, 0, 0.95)
    return has


def _admissions(streams: _Streams, prof: _Profiles, cs: _ConditionSet, bar: Any) -> _Admissions:
    """Admissions per patient, the conditions active in each and the stay's length, type, ICU and severity."""
    P = len(prof.age0)
    has = _chronic_presence(streams.chronic, prof, cs)
    # number of admissions: readmission propensity grows with chronic burden
    r_vis = streams.visits
    readmit_w = np.array([cs.conds[i].readmit for i in cs.chronic])
    burden = has[:, cs.chronic].astype(np.float64) @ readmit_w
    p_multi = np.clip(0.05 + 0.04 * burden, 0.03, 0.6)
    multi = r_vis.random(P) < p_multi
    n_vis = np.where(multi, 1 + np.minimum(r_vis.geometric(0.64, P), 19), 1)
    V = int(n_vis.sum())
    v_pat = np.repeat(np.arange(P), n_vis)
    first = np.cumsum(n_vis) - n_vis
    rank = np.arange(V) - first[v_pat]
    # gaps (days) between a discharge and the next admission
    gap = np.where(r_vis.random(V) < 0.2, r_vis.uniform(2, 30, V),
                   np.clip(np.exp(r_vis.normal(np.log(300), 1.0, V)), 31, 3000))
    gap[rank == 0] = 0.0
    cum_gap = np.cumsum(gap)
    cum_gap -= cum_gap[first][v_pat]
    age_v = prof.age0[v_pat] + cum_gap / 365.2425

    # chronic activity per admission: onset at the first admission mostly, then coded with prob 0.88
    r_chron = streams.chronic
    act = np.zeros((V, len(cs.conds)), bool)
    for i in cs.chronic:
        onset = np.where(r_chron.random(P) < 0.75, 0, (r_chron.random(P) * n_vis).astype(np.int64))
        on = onset[v_pat]
        act[:, i] = has[v_pat, i] & (rank >= on) & ((rank == on) | (r_chron.random(V) < 0.88))
    bar.update()
    main = _acute_conditions(streams.acute, act, v_pat, age_v, prof, cs)

    # admission logistics that depend on the conditions
    r_adm = streams.admission
    los_mult = np.array([c.los for c in cs.conds])[main]
    n_sec = act[:, cs.secondary].sum(axis=1)
    los = np.exp(r_adm.normal(np.log(4.3), 0.7, V)) * los_mult * (1 + 0.07 * n_sec) + 0.3
    los = np.clip(los, 0.2, 150.0)
    elective = r_adm.random(V) < np.array([c.elective for c in cs.conds])[main]
    adm_type = np.where(elective, 2, np.where(r_adm.random(V) < 0.07, 1, 0))
    icu = (r_adm.random(V) < np.clip(0.55 + 0.1 * n_sec, 0, 0.97)) | act[:, cs.index["icu_care"]]
    severity = np.clip(0.75 + 0.06 * n_sec + 0.15 * icu + 0.02 * np.minimum(los, 20), 0.7, 1.35)
    return _Admissions(n_vis, v_pat, first, rank, gap, age_v, act, main, los, n_sec, adm_type, icu, severity)


def _acute_conditions(rng: np.random.Generator, act: np.ndarray, v_pat: np.ndarray, age_v: np.ndarray,
                      prof: _Profiles, cs: _ConditionSet) -> np.ndarray:
    """Mark each admission's principal reason (returned, int [V]) and its secondary conditions in ``act``."""
    V = len(v_pat)
    male_v = prof.male[v_pat]
    tags_v = {k: v[v_pat] for k, v in prof.tags.items()}

    def boosted(cond: Condition, base: np.ndarray) -> np.ndarray:
        for key, mult in cond.boost:
            flag = tags_v[key] if key in tags_v else act[:, cs.index[key]]
            base = np.where(flag, base * mult, base)
        return base

    weights = np.empty((V, len(cs.principal)))
    for j, i in enumerate(cs.principal):
        cond = cs.conds[i]
        weights[:, j] = boosted(cond, cond.p * _age_factor(cond.age, age_v) * _sex_factor(cond, male_v))
    main = np.array(cs.principal)[_categorical(rng, weights)]
    act[np.arange(V), main] = True
    for i in cs.secondary:
        cond = cs.conds[i]
        p = boosted(cond, cond.p * _age_factor(cond.age, age_v) * _sex_factor(cond, male_v))
        act[:, i] = rng.random(V) < np.clip(p, 0, 0.95)
    return main


# ---- diagnosis / procedure codes ------------------------------------------------------------------------------


def _ordered(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], cap: int, V: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(visit, code, priority) parts -> (visit, code, seq_num): per visit by priority, distinct, at most ``cap``."""
    visit = np.concatenate([p[0] for p in parts]).astype(np.int64)
    code = np.concatenate([p[1] for p in parts]).astype(np.int64)
    prio = np.concatenate([p[2] for p in parts])
    order = np.lexsort((prio, visit))
    visit, code = visit[order], code[order]
    _, first_pos = np.unique(visit * (1 << 20) + code, return_index=True)  # first = most important
    keep = np.sort(first_pos)
    visit, code = visit[keep], code[keep]
    starts = np.searchsorted(visit, np.arange(V))
    seq = np.arange(len(visit)) - starts[visit] + 1
    ok = seq <= cap
    return visit[ok], code[ok], seq[ok]


def _diagnoses_procedures(streams: _Streams, adm: _Admissions, cs: _ConditionSet, codes: _Codes
                          ) -> dict[str, np.ndarray]:
    """The coded diagnoses and procedures: the active conditions' codes plus a long tail of rare ones."""
    r_codes, r_noise = streams.codes, streams.noise
    V, P = len(adm.v_pat), len(adm.n_vis)
    prio_of = {"principal": 0, "secondary": 1, "chronic": 2}
    dx_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    px_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, cond in enumerate(cs.conds):
        rows = np.nonzero(adm.act[:, i])[0]
        if not len(rows):
            continue
        background = cond.name.startswith("background_")
        prio = 3 if background else prio_of[cond.kind]
        if cond.dx:
            hit = _draws(cond, cond.dx, rows, r_codes, adm.v_pat, P)
            none = ~hit.any(axis=1)
            hit[none, int(np.argmax([p for _, p in cond.dx]))] = True
            r, k = np.nonzero(hit)
            idx = np.array([codes.dx_index[c] for c, _ in cond.dx])
            dx_parts.append((rows[r], idx[k], prio + 0.5 * r_codes.random(len(r))))
        if cond.px:
            hit = _draws(cond, cond.px, rows, r_codes, adm.v_pat, P)
            r, k = np.nonzero(hit)
            idx = np.array([codes.px_index[c] for c, _ in cond.px])
            px_parts.append((rows[r], idx[k], prio + 0.5 * r_codes.random(len(r))))
    # long tail of rare codes
    dx_perm = r_noise.permutation(cs.dx_pool)
    n_noise = r_noise.poisson(0.95, V)
    rows = np.repeat(np.arange(V), n_noise)
    picks = np.searchsorted(_zipf_cdf(len(dx_perm), 1.2, 8.0), r_noise.random(len(rows)))
    dx_parts.append((rows, dx_perm[picks], 4 + r_noise.random(len(rows))))
    px_perm = r_noise.permutation(cs.px_pool)
    n_noise = r_noise.poisson(0.55, V)
    rows = np.repeat(np.arange(V), n_noise)
    picks = np.searchsorted(_zipf_cdf(len(px_perm), 1.6, 5.0), r_noise.random(len(rows)))
    px_parts.append((rows, px_perm[picks], 4 + r_noise.random(len(rows))))

    dx_visit, dx_code, dx_seq = _ordered(dx_parts, _MAX_DX_PER_VISIT, V)
    px_visit, px_code, px_seq = _ordered(px_parts, _MAX_PX_PER_VISIT, V)
    n_days = np.floor(adm.los).astype(np.int64)
    px_day = (r_codes.random(len(px_visit)) * (n_days[px_visit] + 1)).astype(np.int64)
    return dict(dx_visit=dx_visit, dx_code=dx_code, dx_seq=dx_seq, px_visit=px_visit, px_code=px_code,
                px_seq=px_seq, px_day=px_day)


# ---- drugs: visit x ATC3 sets -----------------------------------------------------------------------------------


def _drug_sets(rng: np.random.Generator, adm: _Admissions, cs: _ConditionSet, cat: DrugCatalog) -> np.ndarray:
    """bool [A, V]: ATC3 class ``a`` given in admission ``v`` (conditions' drugs, hospital routine, random extras,
    then interacting pairs thinned)."""
    V, P = len(adm.v_pat), len(adm.n_vis)
    n_atc = len(cat.atc)
    atc_index = {c: i for i, c in enumerate(cat.atc)}
    smiles = resources.atc3_smiles()
    D = np.zeros((n_atc, V), bool)      # class a given in admission v
    need = np.zeros((n_atc, V), np.int8)  # why: 2 a condition needs it, 1 hospital routine, 0 random extra
    for i, cond in enumerate(cs.conds):
        rows = np.nonzero(adm.act[:, i])[0]
        if not cond.rx or not len(rows):
            continue
        hit = _draws(cond, cond.rx, rows, rng, adm.v_pat, P)
        for k, (code, _) in enumerate(cond.rx):
            a = atc_index[code]
            D[a, rows[hit[:, k]]] = True
            need[a, rows[hit[:, k]]] = 2
    for code, p in ROUTINE_DRUGS:
        a = atc_index[code]
        hit = rng.random(V) < np.clip(p * adm.severity, 0, 0.97)
        D[a] |= hit
        need[a] = np.maximum(need[a], hit)
    # a few random classes per admission (long tail, classes without SMILES ...)
    atc_perm = rng.permutation(n_atc)
    weights = np.diff(_zipf_cdf(n_atc, 0.9, 3.0), prepend=0.0)
    weights *= np.where([cat.atc[a] in smiles for a in atc_perm], 1.0, 0.3)  # fewer classes without SMILES
    n_rand = rng.poisson(1.5, V)
    rows = np.repeat(np.arange(V), n_rand)
    cdf = np.cumsum(weights)
    picks = atc_perm[np.searchsorted(cdf / cdf[-1], rng.random(len(rows)))]
    D[picks, rows] = True
    # interacting pairs: an optional (random) drug that interacts is usually left out; standard combinations of
    # needed / routine drugs are kept most of the time (like real data, where they make the DDI rate ~0.07)
    pairs = sorted((atc_index[a], atc_index[b]) for a, b in resources.ddi_pairs()
                   if a in atc_index and b in atc_index and a != b)
    for j in rng.permutation(len(pairs)):
        a, b = pairs[j]
        both = np.nonzero(D[a] & D[b])[0]
        if not len(both):
            continue
        na, nb = need[a, both], need[b, both]
        p_avoid = np.where((na == 0) | (nb == 0), _DDI_AVOID_OPTIONAL, _DDI_AVOID)
        hit = rng.random(len(both)) < p_avoid
        resolve, na, nb = both[hit], na[hit], nb[hit]
        drop_a = np.where(na == nb, rng.random(len(resolve)) < 0.5, na < nb)
        D[a, resolve[drop_a]] = False
        D[b, resolve[~drop_a]] = False
    return D


# ---- prescription rows ------------------------------------------------------------------------------------------


def _prescriptions(rng: np.random.Generator, D: np.ndarray, adm: _Admissions, cat: DrugCatalog,
                   zero_ndc_share: float) -> dict[str, np.ndarray]:
    """One (admission, class) pair -> 1..N prescription rows, plus messy rows (NDC ``0``/empty, unmapped NDCs) and
    exact duplicates; row arrays are int32/float32 to stay lean at MIMIC scale."""
    f32 = np.float32
    los, icu, v_pat = adm.los, adm.icu, adm.v_pat
    n_days = np.floor(los).astype(np.int64)
    pv, pa = (x.astype(np.int32) for x in np.nonzero(D.T))  # admission-major, so rows come grouped by admission
    row_fac = np.array([next(f for k, f in ROW_FACTOR.items() if c.startswith(k)) for c in cat.atc])
    n_rows = 1 + np.minimum(rng.poisson(row_fac[pa] * 0.22 * np.minimum(los[pv], 40)), 60)
    R = int(n_rows.sum())
    pair = np.repeat(np.arange(len(pa), dtype=np.int32), n_rows)
    first_row = np.zeros(R, bool)
    first_row[np.cumsum(n_rows) - n_rows] = True
    ra = pa[pair]
    rv = pv[pair]
    # NDC: mostly the pair's main product (popular products first), sometimes another one of the class
    u = rng.random(R, dtype=f32)
    fresh = ~first_row & (rng.random(R, dtype=f32) >= 0.7)
    u = np.where(fresh, u, rng.random(len(pa), dtype=f32)[pair])
    count = cat.count.astype(np.int32)[ra]
    ndc = cat.offset.astype(np.int32)[ra] + np.minimum((u ** 2.2 * count).astype(np.int32), count - 1)
    del u, fresh, count, pair
    nd = n_days.astype(np.int32)[rv]
    u = rng.random(R, dtype=f32)
    start = np.where(first_row, u ** 1.8, u) * (nd + 1)
    start = np.minimum(start.astype(np.int32), nd)
    dur = np.minimum(rng.geometric(0.45, R).astype(np.int32) - 1, nd - start)
    del nd, u, first_row
    attr = ndc * 3 + np.searchsorted(np.array([0.72, 0.90], f32), rng.random(R, dtype=f32)).astype(np.int32)
    rx_icu = icu[rv] & (rng.random(R, dtype=f32) < 0.8)
    u = rng.random(R, dtype=f32)
    rtype = np.where((cat.base_type[ra] == 1) & (u < 0.6), 1, np.where(u > 0.985, 2, 0)).astype(np.int8)
    hour = rng.integers(0, 24, R, dtype=np.int8)
    hours = rng.integers(0, 24, R, dtype=np.int8)
    del ra, u
    # messy rows: NDC "0" / empty and NDCs without ATC class (copies of existing rows with another NDC)
    n_map, n_unm = len(cat.ndc), len(cat.unmapped)
    u = rng.random(R, dtype=f32)
    zero = np.nonzero(u < zero_ndc_share)[0]
    unm = np.nonzero((u >= zero_ndc_share) & (u < zero_ndc_share + 0.02))[0]
    clones = np.concatenate([zero, unm])
    clone_ndc = np.concatenate([n_map + n_unm + (rng.random(len(zero)) < 0.5),
                                n_map + rng.integers(0, n_unm, len(unm))]).astype(np.int32)
    key = np.concatenate([rv, rv[clones]]).astype(np.int64) * 256 + np.concatenate([start, start[clones]])
    order = np.argsort(key, kind="stable")  # by admission, then start day (start <= 150 days)
    del key
    del u
    # exact duplicates: ~0.2% of rows repeated right after themselves (same pharmacy_id / poe in MIMIC-IV too)
    n_all = len(order)
    dup = np.nonzero(rng.random(n_all, dtype=f32) < 0.002)[0]
    take = np.sort(np.concatenate([np.arange(n_all), dup]))
    pos = order[take]                      # position in [original rows, clones]
    is_clone = pos >= R
    src = pos.copy()
    src[is_clone] = clones[pos[is_clone] - R]
    rx_ndc = ndc[src]
    rx_ndc[is_clone] = clone_ndc[pos[is_clone] - R]
    out = dict(rx_visit=rv[src], rx_attr=attr[src], rx_ndc=rx_ndc, rx_start=start[src], rx_dur=dur[src],
               rx_icu=rx_icu[src], rx_type=rtype[src], rx_hour=hour[src], rx_hours=hours[src])
    del pos, src, is_clone, ndc, attr, start, dur, rtype, hour, hours
    pat_sorted = v_pat[out["rx_visit"]]  # patients are contiguous: order number of each (non-duplicate) row
    uid = take  # equal for a row and its duplicate
    out["rx_uid"] = uid
    out["rx_poe_seq"] = (uid - uid[np.searchsorted(pat_sorted, pat_sorted)] + 1).astype(np.int32)
    return out


# ---- times, deaths, admission fields ----------------------------------------------------------------------------


def _times_and_fields(rng: np.random.Generator, prof: _Profiles, adm: _Admissions, cs: _ConditionSet
                      ) -> dict[str, Any]:
    """Admission / discharge / death times, birth dates, locations, ED times, ids and providers."""
    P, V = len(prof.age0), len(adm.v_pat)
    v_pat, first, n_vis, gap, los = adm.v_pat, adm.first, adm.n_vis, adm.gap, adm.los
    span_days = np.zeros(P)
    np.add.at(span_days, v_pat, gap + los)
    latest = np.maximum(_T2200 - span_days * DAY - 30 * DAY, _T2100 + 1)
    t0 = _T2100 + rng.random(P) * (latest - _T2100)
    step = gap + los  # gap before admission k (0 for the first) + its stay
    cum = np.cumsum(step)
    elapsed = cum - (cum[first] - step[first])[v_pat] - los  # days from the first admission to admission k
    tod = np.where(adm.adm_type == 2, rng.uniform(6.5, 10, V), rng.uniform(0, 24, V)) * 3600
    admit_day = np.floor((t0[v_pat] + elapsed * DAY) / DAY) * DAY
    admit = (admit_day + tod) // 60 * 60
    disch = (admit + los * DAY) // 60 * 60
    last = adm.rank == n_vis[v_pat] - 1
    death_p = np.array([c.death for c in cs.conds])[adm.main] * np.clip(np.exp((adm.age_v - 65) / 25), 0.4, 2.5)
    expire = last & (rng.random(V) < np.clip(death_p * (1 + 0.25 * adm.n_sec), 0, 0.9))
    died_hosp = np.zeros(P, bool)
    died_hosp[v_pat[expire]] = True
    last_disch = disch[first + n_vis - 1]
    later = ~died_hosp & (rng.random(P) < np.clip(0.12 + 0.006 * (prof.age0 - 50), 0.05, 0.6))
    dod = np.where(died_hosp, last_disch, last_disch + rng.uniform(20, 1500, P) * DAY)
    died = died_hosp | later
    dod = np.floor(dod / DAY) * DAY
    age_shift = np.where(prof.old, 210.0, 0.0)  # MIMIC-III: ages > 89 appear as ~300
    dob = np.floor((t0 - (prof.age0 + age_shift) * _YEAR) / DAY) * DAY
    adm_loc = np.zeros(V, np.int64)
    for t, weights in enumerate(ADMISSION_LOCATION.weights):
        idx = np.nonzero(adm.adm_type == t)[0]
        w = np.array(weights)
        adm_loc[idx] = rng.choice(len(w), len(idx), p=w / w.sum())
    young, old = DISCHARGE_LOCATION.weights
    disch_loc = np.where(adm.age_v >= 70, rng.choice(len(old), V, p=np.array(old) / sum(old)),
                         rng.choice(len(young), V, p=np.array(young) / sum(young)))
    disch_loc[expire] = len(DISCHARGE_LOCATION.mimic3) - 1
    ed = (adm_loc == 0) & (rng.random(V) < 0.95)
    ed_reg = (admit - rng.uniform(1, 9, V) * 3600) // 60 * 60
    ed_out = (admit + rng.uniform(-0.5, 2, V) * 3600) // 60 * 60
    hadm = 100_000 + rng.choice(max(100_000, 2 * V), V, replace=False)
    subject = np.sort(rng.choice(max(100_000, 3 * P), P, replace=False)) + 2
    icustay = 200_000 + rng.choice(max(100_000, 2 * V), V, replace=False)
    providers = tuple(f"P{''.join(rng.choice(list('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ'), 5))}"
                      for _ in range(max(50, min(2000, V // 30))))
    provider = rng.integers(0, len(providers), V)
    anchor_group = rng.integers(0, len(ANCHOR_YEAR_GROUPS), P)
    chartevents = rng.random(V) < 0.97
    return dict(
        subject_id=subject, dob=dob.astype(np.int64), dod=dod.astype(np.int64), died=died, died_hosp=died_hosp,
        anchor_group=anchor_group, hadm_id=hadm, admit=admit.astype(np.int64), disch=disch.astype(np.int64),
        expire=expire, adm_loc=adm_loc, disch_loc=disch_loc, ed=ed, ed_reg=ed_reg.astype(np.int64),
        ed_out=ed_out.astype(np.int64), icustay_id=icustay, chartevents=chartevents, provider=provider,
        providers=providers,
    )


def simulate(n_patients: int, seed: int, zero_ndc_share: float, bar: Any) -> SimulatedCohort:
    """Simulate ``n_patients`` patients from ``seed``; ``zero_ndc_share``: share of extra rows with NDC ``0``/empty.

    ``bar`` (a tqdm bar) advances by 6 steps.
    """
    streams = _Streams(*(np.random.default_rng(s) for s in np.random.SeedSequence([seed, 0x5EED]).spawn(10)))
    cat = drug_catalog()
    dx_codes = sorted(resources.icd9_titles("diagnoses"))
    px_codes = sorted(resources.icd9_titles("procedures"))
    codes = _Codes(dx_codes, px_codes, {c: i for i, c in enumerate(dx_codes)},
                   {c: i for i, c in enumerate(px_codes)})

    prof = _profiles(streams.profile, n_patients)
    bar.update()
    cs = _condition_set(streams.background, codes, cat.atc)
    adm = _admissions(streams, prof, cs, bar)
    coded = _diagnoses_procedures(streams, adm, cs, codes)
    bar.update()
    D = _drug_sets(streams.drugs, adm, cs, cat)
    bar.update()
    rx = _prescriptions(streams.rows, D, adm, cat, zero_ndc_share)
    del D
    bar.update()
    fields = _times_and_fields(streams.admission, prof, adm, cs)
    bar.update()
    return SimulatedCohort(
        male=prof.male, age0=prof.age0, eth=prof.eth, language=prof.language, religion=prof.religion,
        marital=prof.marital, insurance=prof.insurance, v_pat=adm.v_pat, adm_type=adm.adm_type, label=adm.main,
        labels=tuple(c.label or c.name.upper() for c in cs.conds), icu=adm.icu,
        dx_codes=tuple(dx_codes), px_codes=tuple(px_codes), **coded, **rx, **fields,
    )
