"""Tests for medrec_bench.data.synthetic: raw-table shape, determinism, integrity and raw-level realism.

Realism numbers are computed from the written CSV files (not from generator internals), with polars and the
vendored resources, the way a loader would see them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from medrec_bench import resources
from medrec_bench.data.synthetic import CONDITIONS, DEFAULT_PATIENTS, ROUTINE_DRUGS, write_synthetic

MIMIC3_COLUMNS = {
    "PATIENTS": "ROW_ID,SUBJECT_ID,GENDER,DOB,DOD,DOD_HOSP,DOD_SSN,EXPIRE_FLAG",
    "ADMISSIONS": "ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME,DEATHTIME,ADMISSION_TYPE,ADMISSION_LOCATION,"
                  "DISCHARGE_LOCATION,INSURANCE,LANGUAGE,RELIGION,MARITAL_STATUS,ETHNICITY,EDREGTIME,EDOUTTIME,"
                  "DIAGNOSIS,HOSPITAL_EXPIRE_FLAG,HAS_CHARTEVENTS_DATA",
    "DIAGNOSES_ICD": "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE",
    "PROCEDURES_ICD": "ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE",
    "PRESCRIPTIONS": "ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,STARTDATE,ENDDATE,DRUG_TYPE,DRUG,DRUG_NAME_POE,"
                     "DRUG_NAME_GENERIC,FORMULARY_DRUG_CD,GSN,NDC,PROD_STRENGTH,DOSE_VAL_RX,DOSE_UNIT_RX,"
                     "FORM_VAL_DISP,FORM_UNIT_DISP,ROUTE",
    "D_ICD_DIAGNOSES": "ROW_ID,ICD9_CODE,SHORT_TITLE,LONG_TITLE",
    "D_ICD_PROCEDURES": "ROW_ID,ICD9_CODE,SHORT_TITLE,LONG_TITLE",
}
MIMIC4_COLUMNS = {
    "admissions": "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,"
                  "admission_location,discharge_location,insurance,language,marital_status,race,edregtime,"
                  "edouttime,hospital_expire_flag",
    "patients": "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod",
    "diagnoses_icd": "subject_id,hadm_id,seq_num,icd_code,icd_version",
    "procedures_icd": "subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version",
    "prescriptions": "subject_id,hadm_id,pharmacy_id,poe_id,poe_seq,order_provider_id,starttime,stoptime,drug_type,"
                     "drug,formulary_drug_cd,gsn,ndc,prod_strength,form_rx,dose_val_rx,dose_unit_rx,form_val_disp,"
                     "form_unit_disp,doses_per_24_hrs,route",
    "d_icd_diagnoses": "icd_code,icd_version,long_title",
    "d_icd_procedures": "icd_code,icd_version,long_title",
}
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def read(folder: Path, name: str) -> pl.DataFrame:
    """A written table, every column as string (like the loaders read it)."""
    path = folder / f"{name}.csv"
    if not path.exists():
        path = folder / f"{name}.csv.gz"
    return pl.read_csv(path, infer_schema=False)


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.csv*"))}


@pytest.fixture(scope="module")
def m3(tmp_path_factory) -> Path:
    """The default-size MIMIC-III-shaped cohort (seed 0)."""
    return write_synthetic(tmp_path_factory.mktemp("synth-m3"), DEFAULT_PATIENTS, seed=0)


@pytest.fixture(scope="module")
def m4(tmp_path_factory) -> Path:
    """A small MIMIC-IV-shaped cohort."""
    return write_synthetic(tmp_path_factory.mktemp("synth-m4"), 400, seed=1, fmt="mimic4")


@pytest.fixture(scope="module")
def visit_drugs(m3) -> pl.DataFrame:
    """Per admission: SUBJECT_ID, HADM_ID, ADMITTIME and the sorted distinct ATC3 classes of its mapped NDCs."""
    rx = read(m3, "PRESCRIPTIONS").select("HADM_ID", "NDC")
    mapping = pl.DataFrame({"NDC": list(resources.ndc_to_atc3()), "ATC": list(resources.ndc_to_atc3().values())})
    sets = rx.join(mapping, on="NDC", how="inner").group_by("HADM_ID").agg(pl.col("ATC").unique().sort())
    adm = read(m3, "ADMISSIONS").select("SUBJECT_ID", "HADM_ID", "ADMITTIME")
    return adm.join(sets, on="HADM_ID", how="left").sort("SUBJECT_ID", "ADMITTIME")


# ---- API and catalogue ----------------------------------------------------------------------------------------


def test_rejects_bad_arguments(tmp_path):
    for bad in (0, -3):
        with pytest.raises(ValueError, match="n_patients"):
            write_synthetic(tmp_path, bad)
    with pytest.raises(ValueError, match="fmt"):
        write_synthetic(tmp_path, 10, fmt="mimic5")  # type: ignore[arg-type]


def test_catalogue_codes_are_real():
    dx, px, atc = resources.icd9_titles("diagnoses"), resources.icd9_titles("procedures"), resources.atc3_to_ndcs()
    for cond in CONDITIONS:
        assert cond.kind in ("chronic", "principal", "secondary"), cond.name
        assert all(code in dx for code, _ in cond.dx), cond.name
        assert all(code in px for code, _ in cond.px), cond.name
        assert all(code in atc for code, _ in cond.rx), cond.name
        assert all(0 < p <= 1 for _, p in cond.dx + cond.px + cond.rx), cond.name
    assert all(code in atc for code, _ in ROUTINE_DRUGS)
    assert 30 <= sum(c.kind != "secondary" for c in CONDITIONS)


def test_tiny_cohort(tmp_path):
    folder = write_synthetic(tmp_path, 1, seed=7)
    assert read(folder, "PATIENTS").height == 1
    assert read(folder, "ADMISSIONS").height >= 1
    assert read(folder, "PRESCRIPTIONS").height >= 1


# ---- determinism ------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = digests(write_synthetic(tmp_path / "a", 300, seed=3, compress=True))
    b = digests(write_synthetic(tmp_path / "b", 300, seed=3, compress=True))
    c = digests(write_synthetic(tmp_path / "c", 300, seed=4, compress=True))
    assert len(a) == 7 and a == b
    for name in ("PATIENTS.csv.gz", "ADMISSIONS.csv.gz", "DIAGNOSES_ICD.csv.gz", "PRESCRIPTIONS.csv.gz"):
        assert a[name] != c[name]


def test_mimic4_deterministic(tmp_path):
    a = digests(write_synthetic(tmp_path / "a", 150, seed=2, fmt="mimic4"))
    b = digests(write_synthetic(tmp_path / "b", 150, seed=2, fmt="mimic4"))
    assert len(a) == 7 and a == b


def test_compressed_equals_plain(tmp_path):
    plain = write_synthetic(tmp_path / "plain", 120, seed=5)
    packed = write_synthetic(tmp_path / "packed", 120, seed=5, compress=True)
    for name in MIMIC3_COLUMNS:
        assert gzip.decompress((packed / f"{name}.csv.gz").read_bytes()) == (plain / f"{name}.csv").read_bytes()
    assert not list(packed.glob("*.csv"))


# ---- shape ------------------------------------------------------------------------------------------------------


def header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def test_mimic3_headers(m3):
    assert sorted(p.name for p in m3.iterdir()) == sorted(f"{n}.csv" for n in MIMIC3_COLUMNS)
    for name, columns in MIMIC3_COLUMNS.items():
        assert header(m3 / f"{name}.csv") == columns.split(","), name


def test_mimic4_headers(m4):
    hosp = m4 / "hosp"
    assert sorted(p.name for p in hosp.iterdir()) == sorted(f"{n}.csv" for n in MIMIC4_COLUMNS)
    for name, columns in MIMIC4_COLUMNS.items():
        assert header(hosp / f"{name}.csv") == columns.split(","), name


def test_mimic4_values(m4):
    hosp = m4 / "hosp"
    adm = read(hosp, "admissions")
    assert set(adm["insurance"].unique()) <= {"Medicare", "Medicaid", "Other"}
    assert "EW EMER." in set(adm["admission_type"]) and "WHITE" in set(adm["race"])
    for name in ("diagnoses_icd", "procedures_icd", "d_icd_diagnoses", "d_icd_procedures"):
        assert set(read(hosp, name)["icd_version"].unique()) == {"9"}
    pat = read(hosp, "patients")
    ages = pat["anchor_age"].cast(pl.Int64)
    assert ages.min() >= 18 and ages.max() <= 91
    ndc = read(hosp, "prescriptions")["ndc"]
    missing = (ndc.is_null() | (ndc == "0")).mean()
    assert 0.03 <= missing <= 0.08
    assert ndc.drop_nulls().filter(ndc.drop_nulls() != "0").str.contains(r"^\d{11}$").all()
    px = read(hosp, "procedures_icd")
    assert px["chartdate"].str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
    # every code written is in the written dictionaries
    for table, dictionary in (("diagnoses_icd", "d_icd_diagnoses"), ("procedures_icd", "d_icd_procedures")):
        assert set(read(hosp, table)["icd_code"]) <= set(read(hosp, dictionary)["icd_code"])


# ---- integrity --------------------------------------------------------------------------------------------------


def test_codes_in_dictionaries(m3):
    for table, dictionary, kind in (("DIAGNOSES_ICD", "D_ICD_DIAGNOSES", "diagnoses"),
                                    ("PROCEDURES_ICD", "D_ICD_PROCEDURES", "procedures")):
        codes = read(m3, table)["ICD9_CODE"]
        titles = read(m3, dictionary)
        assert codes.null_count() == 0
        assert set(codes) == set(titles["ICD9_CODE"])  # only the codes used, all of them
        real = resources.icd9_titles(kind)
        assert all(real[c] == t for c, t in titles.select("ICD9_CODE", "LONG_TITLE").iter_rows())


def test_referential_integrity(m3):
    pat, adm = read(m3, "PATIENTS"), read(m3, "ADMISSIONS")
    assert pat["SUBJECT_ID"].is_unique().all() and adm["HADM_ID"].is_unique().all()
    assert set(adm["SUBJECT_ID"]) == set(pat["SUBJECT_ID"])
    pairs = set(adm.select("SUBJECT_ID", "HADM_ID").iter_rows())
    for name in ("DIAGNOSES_ICD", "PROCEDURES_ICD", "PRESCRIPTIONS"):
        assert set(read(m3, name).select("SUBJECT_ID", "HADM_ID").iter_rows()) <= pairs, name
    dx = read(m3, "DIAGNOSES_ICD").with_columns(pl.col("SEQ_NUM").cast(pl.Int64))
    seq = dx.group_by("HADM_ID").agg(pl.col("SEQ_NUM").sort(), pl.len())
    assert all(s == list(range(1, n + 1)) for s, n in seq.select("SEQ_NUM", "len").iter_rows())
    assert set(dx["HADM_ID"]) == set(adm["HADM_ID"])  # every admission has diagnoses


def test_times(m3):
    adm = read(m3, "ADMISSIONS")
    for col in ("ADMITTIME", "DISCHTIME"):
        assert adm[col].str.contains(DATETIME.pattern).all()
    t = adm.with_columns(pl.col(c).str.to_datetime("%Y-%m-%d %H:%M:%S") for c in ("ADMITTIME", "DISCHTIME"))
    assert (t["DISCHTIME"] > t["ADMITTIME"]).all()
    assert t["ADMITTIME"].dt.year().min() >= 2100 and t["DISCHTIME"].dt.year().max() <= 2210
    t = t.sort("SUBJECT_ID", "ADMITTIME").with_columns(
        pl.col("DISCHTIME").shift(1).over("SUBJECT_ID").alias("prev_disch"))
    later = t.filter(pl.col("prev_disch").is_not_null())
    assert later.height > 0 and (later["ADMITTIME"] > later["prev_disch"]).all()
    assert t.group_by("SUBJECT_ID").agg(pl.col("ADMITTIME").n_unique() == pl.len())["ADMITTIME"].all()
    pat = read(m3, "PATIENTS").with_columns(pl.col("DOB").str.to_datetime("%Y-%m-%d %H:%M:%S"))
    age = t.join(pat, on="SUBJECT_ID").select(
        ((pl.col("ADMITTIME") - pl.col("DOB")).dt.total_days() / 365.25).alias("age"))["age"]
    assert age.min() >= 17.9
    real = age.filter(age < 150)
    assert 55 <= real.mean() <= 72 and (age > 250).any()  # MIMIC-III shifts ages > 89 by ~300 years


def test_prescription_rows_are_messy_like_mimic(m3):
    rx = read(m3, "PRESCRIPTIONS")
    ndc = rx["NDC"]
    present = ndc.drop_nulls().filter(ndc.drop_nulls() != "0")
    assert present.str.contains(r"^\d{11}$").all() and present.str.starts_with("0").any()
    assert 0.01 <= (ndc.is_null() | (ndc == "0")).mean() <= 0.06
    mapped = set(resources.ndc_to_atc3())
    unmapped = (~present.is_in(list(mapped))).sum() / rx.height
    assert 0.005 <= unmapped <= 0.05
    assert rx.drop("ROW_ID").is_duplicated().any()  # exact duplicate rows (bar ROW_ID)
    atc = present.filter(present.is_in(list(mapped))).replace_strict(resources.ndc_to_atc3())
    no_smiles = (~atc.is_in(list(resources.atc3_smiles()))).mean()
    assert 0.005 <= no_smiles <= 0.10
    assert set(rx["DRUG_TYPE"].unique()) <= {"MAIN", "BASE", "ADDITIVE"}


# ---- realism ----------------------------------------------------------------------------------------------------


def test_visit_mix(m3):
    per_patient = read(m3, "ADMISSIONS").group_by("SUBJECT_ID").len()["len"]
    assert 0.6 <= (per_patient == 1).mean() <= 0.85
    assert per_patient.max() >= 4
    dx = read(m3, "DIAGNOSES_ICD").group_by("HADM_ID").len()["len"]
    assert 8 <= dx.mean() <= 15
    px = read(m3, "PROCEDURES_ICD").group_by("HADM_ID").len()["len"]
    assert 1.5 <= px.sum() / per_patient.sum() <= 6


def test_vocabulary_sizes(m3, visit_drugs):
    assert 500 <= read(m3, "DIAGNOSES_ICD")["ICD9_CODE"].n_unique() <= 1500
    assert 150 <= read(m3, "PROCEDURES_ICD")["ICD9_CODE"].n_unique() <= 400
    assert visit_drugs.drop_nulls("ATC").explode("ATC")["ATC"].n_unique() >= 100


def test_drugs_per_admission_and_ddi_rate(visit_drugs):
    sets = visit_drugs.drop_nulls("ATC")["ATC"].to_list()
    sizes = np.array([len(s) for s in sets])
    assert 8 <= sizes.mean() <= 30
    vocab = sorted({a for s in sets for a in s})
    index = {a: i for i, a in enumerate(vocab)}
    x = np.zeros((len(sets), len(vocab)))
    for row, s in enumerate(sets):
        x[row, [index[a] for a in s]] = 1
    ddi = resources.ddi_matrix(vocab).astype(float)
    interacting = ((x @ ddi) * x).sum() / 2  # pairs i<j within an admission
    rate = interacting / (sizes * (sizes - 1) / 2).sum()
    assert 0.05 <= rate <= 0.10


def test_hospital_routine_drugs_are_common_but_not_universal(visit_drugs):
    sets = visit_drugs.drop_nulls("ATC")
    n = sets.height
    share = sets.explode("ATC")["ATC"].value_counts().with_columns(pl.col("count") / n)
    top = dict(share.iter_rows())
    assert 0.6 <= top["A06A"] <= 0.97 and 0.5 <= top["B05C"] <= 0.97


def test_chronic_drug_recurs(m3, visit_drugs):
    diabetic = read(m3, "DIAGNOSES_ICD").filter(pl.col("ICD9_CODE").str.starts_with("250"))["HADM_ID"]
    v = visit_drugs.with_columns(
        pl.col("ATC").list.eval(pl.element().str.starts_with("A10")).list.any().fill_null(False).alias("a10"),
        pl.col("HADM_ID").is_in(diabetic.implode()).alias("diabetic"),
    ).with_columns(pl.col("a10").shift(-1).over("SUBJECT_ID").alias("next_a10"))
    pairs = v.filter(pl.col("diabetic") & pl.col("a10") & pl.col("next_a10").is_not_null())
    assert pairs.height >= 30
    recur, base = pairs["next_a10"].mean(), v["a10"].mean()
    assert recur >= 0.6 and recur >= 2 * base


def test_profile_carries_signal(m3):
    pat, adm, dx = read(m3, "PATIENTS"), read(m3, "ADMISSIONS"), read(m3, "DIAGNOSES_ICD")
    coded = dx.join(pat.select("SUBJECT_ID", "GENDER"), on="SUBJECT_ID")
    assert set(coded.filter(pl.col("ICD9_CODE") == "60000")["GENDER"]) == {"M"}  # BPH
    by_sex = coded.filter(pl.col("ICD9_CODE") == "2449").group_by("GENDER").len()  # hypothyroidism
    counts = dict(by_sex.iter_rows())
    n_sex = dict(pat.group_by("GENDER").len().iter_rows())
    assert counts["F"] / n_sex["F"] > 1.5 * counts.get("M", 0) / n_sex["M"]
    t = adm.join(pat, on="SUBJECT_ID").with_columns(
        ((pl.col("ADMITTIME").str.to_datetime() - pl.col("DOB").str.to_datetime()).dt.total_days() / 365.25)
        .alias("age"))
    medicare_old = (t.filter(pl.col("age") >= 65)["INSURANCE"] == "Medicare").mean()
    medicare_young = (t.filter(pl.col("age") < 60)["INSURANCE"] == "Medicare").mean()
    assert medicare_old > 0.7 and medicare_young < 0.3
    for column in ("LANGUAGE", "RELIGION", "MARITAL_STATUS", "ETHNICITY"):
        assert adm[column].n_unique() >= 4, column


def test_rows_scale_linearly(tmp_path):
    small = read(write_synthetic(tmp_path / "s", 1000, seed=9), "PRESCRIPTIONS").height
    large = read(write_synthetic(tmp_path / "l", 4000, seed=9), "PRESCRIPTIONS").height
    assert 3 <= large / small <= 5
