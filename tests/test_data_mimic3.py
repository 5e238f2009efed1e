"""The MIMIC-III loader on the real demo in ../shared, checked against an independent plain-Python count."""

import csv
import json
import os
import shutil
import warnings
from collections import Counter, defaultdict

import numpy as np

from medrec_bench import resources
from medrec_bench.data import Cohort, load_cohort
from medrec_bench.data.cache import CacheRebuiltWarning, write_checksums
from medrec_bench.data.cohort import META_FILE
from medrec_bench.data.stats import cohort_stats


def _rows(folder, name):
    with open(folder / f"{name}.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _expected(folder):
    """The default recipe by hand: mapped drugs with SMILES, top-2000 diagnoses (all, in the demo), all procedures,
    a visit needs all three."""
    ndc_atc = resources.ndc_to_atc3()
    smiles = set(resources.atc3_smiles())
    drugs = defaultdict(set)
    for r in _rows(folder, "PRESCRIPTIONS"):
        atc = ndc_atc.get(r["ndc"])
        if r["ndc"] not in ("", "0") and atc in smiles:
            drugs[r["hadm_id"]].add(atc)
    dx = defaultdict(set)
    for r in _rows(folder, "DIAGNOSES_ICD"):
        if r["icd9_code"]:
            dx[r["hadm_id"]].add(r["icd9_code"])
    px = defaultdict(set)
    for r in _rows(folder, "PROCEDURES_ICD"):
        px[r["hadm_id"]].add(r["icd9_code"])
    adm = {r["hadm_id"]: r["subject_id"] for r in _rows(folder, "ADMISSIONS")}
    keep = [h for h in adm if drugs[h] and dx[h] and px[h]]
    return keep, adm, drugs, dx, px


def test_counts_match_a_hand_count(demo_dir, demo_cohort):
    keep, adm, drugs, dx, px = _expected(demo_dir)
    assert len(adm) == 129  # PROVENANCE.md: 129 admissions
    stats = cohort_stats(demo_cohort)
    assert stats["visits"] == len(keep)
    assert stats["patients"] == len({adm[h] for h in keep})
    per_patient = Counter(adm[h] for h in keep)
    assert stats["single_visit_patients"] == sum(1 for n in per_patient.values() if n == 1)
    assert stats["multi_visit_patients"] == sum(1 for n in per_patient.values() if n > 1)
    assert stats["drugs"] == len(set().union(*(drugs[h] for h in keep)))
    assert stats["diagnoses"] == len(set().union(*(dx[h] for h in keep)))
    assert stats["procedures"] == len(set().union(*(px[h] for h in keep)))


def test_visits_hold_the_right_codes(demo_dir, demo_cohort):
    keep, adm, drugs, dx, px = _expected(demo_dir)
    vocab = demo_cohort.vocab
    for row in demo_cohort.visits.iter_rows(named=True):
        h = row["visit_id"]
        assert {vocab.drugs.codes[i] for i in row["drugs"]} == drugs[h]
        assert {vocab.diagnoses.codes[i] for i in row["diagnoses"]} == {f"dx9:{c}" for c in dx[h]}
        assert {vocab.procedures.codes[i] for i in row["procedures"]} == {f"px9:{c}" for c in px[h]}


def test_diagnoses_keep_sequence_order(demo_dir, demo_cohort):
    first = {}
    for r in _rows(demo_dir, "DIAGNOSES_ICD"):
        if r["seq_num"] == "1":
            first[r["hadm_id"]] = f"dx9:{r['icd9_code']}"
    vocab = demo_cohort.vocab.diagnoses
    for row in demo_cohort.visits.iter_rows(named=True):
        if row["visit_id"] in first:
            assert vocab.codes[row["diagnoses"][0]] == first[row["visit_id"]]


def test_vocabularies_names_ddi_and_smiles(demo_cohort):
    vocab = demo_cohort.vocab
    assert vocab.diagnoses.name(vocab.diagnoses.index("dx9:4019")) == "Unspecified essential hypertension"
    assert all(code.startswith("dx9:") for code in vocab.diagnoses.codes)
    assert all(code.startswith("px9:") for code in vocab.procedures.codes)
    n = len(vocab.drugs)
    assert demo_cohort.ddi.shape == (n, n) and demo_cohort.ddi.dtype == bool
    assert np.array_equal(demo_cohort.ddi, resources.ddi_matrix(vocab.drugs.codes))
    assert all(demo_cohort.smiles)  # require_smiles is on by default
    assert set(vocab.profile) == {"insurance", "language", "religion", "marital_status", "ethnicity", "age_group",
                                  "gender"}
    # ground-truth DDI rate of real MIMIC-III visits is in the literature's range
    assert 0.04 < demo_cohort.ddi_pairs_rate() < 0.12


def test_visits_ordered_in_time_per_patient(demo_cohort):
    for patient in demo_cohort.patients:
        times = [v.admittime for v in patient.visits]
        assert times == sorted(times)


def test_save_load_round_trip(demo_cohort, tmp_path):
    demo_cohort.save(tmp_path / "c")
    again = Cohort.load(tmp_path / "c")
    assert again.visits.equals(demo_cohort.visits)
    assert again.vocab == demo_cohort.vocab
    assert np.array_equal(again.ddi, demo_cohort.ddi)
    assert again.smiles == demo_cohort.smiles and again.meta == demo_cohort.meta


def test_cache_hit_and_fingerprint(demo_dir, cache_root, demo_cohort):
    again = load_cohort("mimic3", demo_dir, cache=cache_root)
    assert again.fingerprint == demo_cohort.fingerprint
    other = load_cohort("mimic3", demo_dir, cache=cache_root, options={"min_visits": 2})
    assert other.fingerprint != demo_cohort.fingerprint
    assert cohort_stats(other)["single_visit_patients"] == 0
    folders = list((cache_root / "cohorts").iterdir())
    assert all(not f.name.startswith(".") for f in folders)  # no temporary folders left behind


def test_min_visits_and_top_k(demo_dir, cache_root):
    small = load_cohort("mimic3", demo_dir, cache=cache_root, options={"top_k_diagnoses": 50, "top_k_drugs": 20})
    assert len(small.vocab.diagnoses) <= 50
    assert len(small.vocab.drugs) <= 20


def test_fingerprint_and_name_follow_content_not_file_times(demo_dir, demo_cohort, tmp_path):
    """The same tables with new modification times (a copy on another machine): a new cache entry, but the same
    content fingerprint and name, so runs and trained models keep their keys; a changed table changes both."""
    copy = tmp_path / "demo"
    shutil.copytree(demo_dir, copy)
    for path in copy.iterdir():
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    moved = load_cohort("mimic3", copy, cache=tmp_path / "cache")
    assert moved.source_fingerprint != demo_cohort.source_fingerprint  # mtimes key the cache
    assert moved.fingerprint == demo_cohort.fingerprint and moved.name == demo_cohort.name
    assert moved.visits.equals(demo_cohort.visits)

    lines = (copy / "PRESCRIPTIONS.csv").read_text().splitlines(keepends=True)
    (copy / "PRESCRIPTIONS.csv").write_text("".join(lines[:-200]))
    changed = load_cohort("mimic3", copy, cache=tmp_path / "cache")
    assert changed.fingerprint != demo_cohort.fingerprint and changed.name != demo_cohort.name

    # a cache written before cohorts recorded their source fingerprint (its fingerprint was the inputs') is rebuilt
    (folder,) = [p for p in (tmp_path / "cache" / "cohorts").iterdir() if p.name.endswith(moved.source_fingerprint[:16])]
    meta = json.loads((folder / META_FILE).read_text())
    del meta["source_fingerprint"]
    meta["fingerprint"] = moved.source_fingerprint
    (folder / META_FILE).write_text(json.dumps(meta))
    write_checksums(folder)
    for path in copy.iterdir():  # the inputs of that cache entry again
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    shutil.copy(demo_dir / "PRESCRIPTIONS.csv", copy / "PRESCRIPTIONS.csv")
    os.utime(copy / "PRESCRIPTIONS.csv", ns=(1_000_000_000, 1_000_000_000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rebuilt = load_cohort("mimic3", copy, cache=tmp_path / "cache")
    assert any(issubclass(w.category, CacheRebuiltWarning) for w in caught)
    assert rebuilt.fingerprint == demo_cohort.fingerprint
