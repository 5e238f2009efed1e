import numpy as np

from medrec_bench import resources
from medrec_bench.resources import vendor

from .conftest import shared_data


def test_vendored_tables_rebuild_byte_identical_from_shared():
    tables = vendor.build_tables(shared_data())
    assert set(tables) == set(vendor.SOURCES)
    for name, data in tables.items():
        assert (resources.FILES_DIR / name).read_bytes() == data, name
    assert (resources.FILES_DIR / "SHA256SUMS").read_text() == vendor.checksums(tables)


def test_dict_literal_is_parsed_without_eval():
    assert vendor.parse_dict_literal("{'00001': u'12', '2': '3'}") == {"00001": "12", "2": "3"}
    try:
        vendor.parse_dict_literal("__import__('os').getcwd()")
    except ValueError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a non-literal must be refused")


def test_ndc_chain_maps_known_codes():
    # an acetaminophen NDC of the MIMIC-III demo: NDC -> RXCUI 313782 -> ATC4 N02BE -> ATC3 N02B
    assert resources.ndc_to_rxcui()["00182844789"] == "313782"
    assert resources.rxcui_to_atc4()["313782"] == "N02BE"
    assert resources.ndc_to_atc3()["00182844789"] == "N02B"
    mapping = resources.ndc_to_atc3()
    assert all(len(k) == 11 and k.isdigit() for k in mapping)
    assert all(len(v) == 4 for v in mapping.values())
    assert "00182844789" in resources.atc3_to_ndcs()["N02B"]


def test_ddi_matrix_is_symmetric_and_aligned():
    drugs = ["N02B", "M01A", "C10A", "A02B"]
    mat = resources.ddi_matrix(drugs)
    assert mat.dtype == bool and mat.shape == (4, 4)
    assert np.array_equal(mat, mat.T) and not mat.diagonal().any()
    assert mat[0, 1] and mat[0, 2]  # N02B-M01A and N02B-C10A are listed pairs
    assert len(resources.ddi_pairs()) == 467


def test_names_and_smiles():
    assert resources.atc_names()["N02B"].upper().startswith("OTHER ANALGESICS")
    assert resources.icd9_titles("diagnoses")["4019"] == "Unspecified essential hypertension"
    assert len(resources.atc3_smiles()) == 133
