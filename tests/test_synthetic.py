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


def test_catalogue_is_read_from_its_data_file():
    kinds = [c.kind for c in CONDITIONS]
    assert (kinds.count("chronic"), kinds.count("principal"), kinds.count("secondary")) == (34, 30, 22)
    assert kinds == sorted(kinds, key=("chronic", "principal", "secondary").index)  # decided in this order
    cabg = next(c for c in CONDITIONS if c.name == "cabg")
    assert cabg.label == "CORONARY ARTERY DISEASE\\CORONARY ARTERY BYPASS GRAFT /SDA" and cabg.elective == 0.85
    assert cabg.dx[0] == ("41401", 1.0) and isinstance(cabg.male, float)


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


# sha256 of each written table (decompressed for .gz, whose bytes depend on the zlib build), recorded with the
# generator before it was split into a package: the same seed must keep giving the same raw tables
GOLDEN_TABLES = {
    (300, 0, "mimic3", False): {
        "ADMISSIONS.csv": "08992206d431c930cfd93bbedde5fcd9262e88e6e7728737da785e391cebf542",
        "DIAGNOSES_ICD.csv": "effb7f3df1933317a65c26e87e42a5be8630f987d07e25ce282d5181cf4e2e97",
        "D_ICD_DIAGNOSES.csv": "b1f00764b2575af64b79f0646cd340f72bd9c6135650b1394f9ca60e64032771",
        "D_ICD_PROCEDURES.csv": "7d8da9080623701635a88f6e4856a7381ec9bbee09848980ac293694b6291a4a",
        "PATIENTS.csv": "180c11c0a828e6901d9307afbd4455bf5d6502fdb8c07d489ba7bf5d0cd964e8",
        "PRESCRIPTIONS.csv": "887f4733e29e07e8866409adf21efaa307affa0012ec6876fc0cb0324d3c76f0",
        "PROCEDURES_ICD.csv": "0b21eab2df59d3008374c87dd4a049eb75a19a4ab8dd27d1cfadf7488a73e556",
    },
    (120, 7, "mimic4", False): {
        "hosp/admissions.csv": "f5e2d0a6013855afdb8a42365e3b6498aa9b5eb40bb45cbd6a99a7ba1dad5796",
        "hosp/d_icd_diagnoses.csv": "8593780d1192d90151e4b8d38487a6e0ad29d69dc26672c7135bfa3c7b4e412e",
        "hosp/d_icd_procedures.csv": "26683a361d8c85a9cb58d08af99e4390841b1e6f7a2505d88a7cac2e8a43e8a6",
        "hosp/diagnoses_icd.csv": "8cd05eae4b7ee90d6c8654e3bb8f660b81505ac722e6887c363793b22bb311f0",
        "hosp/patients.csv": "6ac1308d2062a879ca86e02b2cf4e71bb694fa6b8cd61bff97db62ffb3c4aaa9",
        "hosp/prescriptions.csv": "88af596eac971a47f5cdc21d1efe02ce204fe24caa734c995eb95d46340896ce",
        "hosp/procedures_icd.csv": "858c627cd218db3fd53f5a0cc0f4ee11b248601183dcddd6c44b8e63014191d3",
    },
    (120, 7, "mimic3", True): {
        "ADMISSIONS.csv.gz": "8e2db3dc1ac2dabaa6dbb189c103f4fd739e6cccd0d651b5d81c6cec60187cdb",
        "DIAGNOSES_ICD.csv.gz": "9603a82da05fc0c30f6e1252a7e81578130cf1d764f576e63a6729ddf19a1882",
        "D_ICD_DIAGNOSES.csv.gz": "a5b005089df6a2903960fcda15a579bdfd1cc62c1e399b5499e9c5b5d6b86fa1",
        "D_ICD_PROCEDURES.csv.gz": "0c4fb1c931afac1cc6a9c882719c77107cb923e787242385c70dd7fb6f49636d",
        "PATIENTS.csv.gz": "7cc7fe378dabf592dc902abe51d47d673e757d9e6a476338809c39de9e562dc5",
        "PRESCRIPTIONS.csv.gz": "260a50b67be5cb1c28e5a08cf5faaa5441ef64fe2cecfdd458bf6d9c362bf0c7",
        "PROCEDURES_ICD.csv.gz": "c9f9ea11fc2ee86f7b65c778acbc0677a66379b567cb97400ed8b08bc56b9be8",
    },
    (300, 0, "mimic4", True): {
        "hosp/admissions.csv.gz": "2b77825491c288642bba06b4c5d71ae1844574e39221a7e543cc386b92da64c3",
        "hosp/d_icd_diagnoses.csv.gz": "54e9b96b4c3d395717987acd7de847bb608451d4475f9b2419ccccd295cdbcc2",
        "hosp/d_icd_procedures.csv.gz": "e0a9a53d1dcc35dded2aea3d65a08ff0fece0aaaeb66c14407b3e8202aa62f78",
        "hosp/diagnoses_icd.csv.gz": "9f2b5b24b4df3801e66b39ae67c9a726ae46bd52ecfd9042aa6e27737274091c",
        "hosp/patients.csv.gz": "ce385d72c3faed62c6bebca11a51cbb30f982bcada428b9f3e58d86605c5c044",
        "hosp/prescriptions.csv.gz": "12ff4a7d1e38ab6106ce29e45ff7456474fb203e88f544e550dfea233e8df9d1",
        "hosp/procedures_icd.csv.gz": "fde8ab75d9ce4c0d462507e8083d74fe7c8c4d0ce6beda402268d5c359e2465e",
    },
}


@pytest.mark.parametrize("n_patients, seed, fmt, compress", list(GOLDEN_TABLES))
def test_tables_match_recorded_hashes(tmp_path, n_patients, seed, fmt, compress):
    folder = write_synthetic(tmp_path, n_patients, seed=seed, fmt=fmt, compress=compress)
    got = {p.relative_to(folder).as_posix(): hashlib.sha256(gzip.decompress(p.read_bytes()) if compress
                                                            else p.read_bytes()).hexdigest()
           for p in sorted(folder.rglob("*.csv*"))}
    assert got == GOLDEN_TABLES[n_patients, seed, fmt, compress]


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
