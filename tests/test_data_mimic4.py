"""The MIMIC-IV loader on a hand-written fixture in the exact hosp/ layout (tests/fixtures/mimic4)."""

from pathlib import Path

import pytest

from medrec_bench.data import DataError, load_cohort
from medrec_bench.data.stats import cohort_stats

FIXTURE = Path(__file__).parent / "fixtures" / "mimic4"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return load_cohort("mimic4", FIXTURE, cache=tmp_path_factory.mktemp("m4"))


def _visit(cohort, hadm):
    return next(r for r in cohort.visits.iter_rows(named=True) if r["visit_id"] == hadm)


def test_counts(cohort):
    stats = cohort_stats(cohort)
    assert (stats["patients"], stats["visits"]) == (4, 6)
    assert (stats["single_visit_patients"], stats["multi_visit_patients"]) == (3, 1)
    assert stats["prescription_ndcs_missing"] == 2  # one "0", one empty
    assert stats["prescription_ndcs_unmapped"] == 0  # the dashed NDC maps once normalised
    assert stats["unknown_diagnosis_codes"] == 1  # dx9:99999 is not in the dictionary


def test_icd9_and_icd10_never_collide(cohort):
    vocab = cohort.vocab.diagnoses
    assert "dx9:4019" in vocab and "dx10:I10" in vocab
    assert vocab.index("dx9:4019") != vocab.index("dx10:I10")
    assert vocab.name(vocab.index("dx10:I10")) == "Essential (primary) hypertension"
    assert vocab.name(vocab.index("dx9:99999")) == "unknown diagnosis code (99999)"
    assert set(cohort.vocab.procedures.codes) == {"px9:3893", "px10:02HV33Z", "px10:0DJ08ZZ"}


def test_visit_contents_and_order(cohort):
    drugs = cohort.vocab.drugs.codes
    assert {drugs[i] for i in _visit(cohort, "20000011")["drugs"]} == {"N02B", "C07A"}
    assert {drugs[i] for i in _visit(cohort, "20000013")["drugs"]} == {"B01A", "C07A"}  # dashed NDC -> C07A
    patient = next(p for p in cohort.patients if p.patient_id == "10000001")
    assert [v.visit_id for v in patient.visits] == ["20000011", "20000012", "20000013"]


def test_profile_fields(cohort):
    assert set(cohort.vocab.profile) == {"insurance", "language", "admission_type", "marital_status", "race",
                                         "age_group", "gender"}
    row = _visit(cohort, "20000031")
    assert cohort.vocab.profile["marital_status"].codes[row["profile_marital_status"]] == "UNKNOWN"
    assert cohort.vocab.profile["age_group"].codes[row["profile_age_group"]] == "45-64"
    row = _visit(cohort, "20000041")
    assert cohort.vocab.profile["age_group"].codes[row["profile_age_group"]] == "80+"


def test_hosp_folder_or_its_parent(cohort, tmp_path):
    again = load_cohort("mimic4", FIXTURE / "hosp", cache=tmp_path)
    assert again.visits.equals(cohort.visits)


def test_bad_icd_version(tmp_path):
    import shutil

    hosp = tmp_path / "hosp"
    shutil.copytree(FIXTURE / "hosp", hosp)
    path = hosp / "diagnoses_icd.csv"
    path.write_text(path.read_text().replace("I10,10", "I10,11", 1))
    with pytest.raises(DataError, match="icd_version must be 9 or 10"):
        load_cohort("mimic4", tmp_path, cache=tmp_path / "cache")
