"""Molecule featurisation (medrec_bench.molecules): graph shapes, invalid SMILES, BRICS mask vs the released one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medrec_bench import molecules as mol
from tests.conftest import shared_data

ASPIRIN = "CC(=O)OC1=CC=CC=C1C(O)=O"
CARBOPLATIN = "[H][N]([H])([H])[Pt]1(OC(=O)C2(CCC2)C(=O)O1)[N]([H])([H])[H]"


def test_graph_shapes_and_ranges():
    g = mol.smiles_to_graph(ASPIRIN)
    assert g is not None
    assert g.x.shape == (13, len(mol.ATOM_FEATURES)) and g.x.dtype == torch.long
    assert g.edge_index.shape == (2, 2 * 13) and g.edge_attr.shape == (26, len(mol.BOND_FEATURES))
    assert (g.x >= 0).all() and (g.x < torch.tensor(list(mol.ATOM_FEATURES.values()))).all()
    assert (g.edge_attr < torch.tensor(list(mol.BOND_FEATURES.values()))).all()
    assert set(g.x[:, 0].tolist()) == {6, 8}  # carbon and oxygen
    assert g.x[:, 4].sum() == 6  # six aromatic atoms
    # both directions of every bond
    pairs = set(map(tuple, g.edge_index.t().tolist()))
    assert all((j, i) in pairs for i, j in pairs)


def test_single_atom_and_dummy_atoms():
    ion = mol.smiles_to_graph("[Na+]")
    assert ion.x.shape == (1, len(mol.ATOM_FEATURES)) and ion.edge_index.shape == (2, 0)
    assert ion.x[0, 2] == 6  # formal charge +1 shifted by 5
    frag = mol.smiles_to_graph("[16*]c1ccncc1")  # a BRICS fragment: the attachment point is atomic number 0
    assert 0 in frag.x[:, 0].tolist()


def test_invalid_smiles_warned_and_skipped():
    assert mol.parse_smiles("not a smiles") is None
    assert mol.parse_smiles("") is None
    assert mol.parse_smiles(CARBOPLATIN) is None  # hypervalent N: invalid under the classic valence rules
    vocab = (("C1CC1", "xyz(("), ("definitely-not-smiles",), (ASPIRIN,), ())
    mol._MEMORY.pop(mol.cache_key(vocab), None)  # warnings come once per process and vocabulary
    with pytest.warns(UserWarning, match=r"xyz\(\(.*definitely-not-smiles"):
        mols = mol.drug_molecules(vocab)
    assert mols.n_molecules == 2 and mols.drug_of_molecule.tolist() == [0, 2]
    assert mols.has_molecule.tolist() == [True, False, True, False]
    assert not mols.mask[1].any() and not mols.mask[3].any() and mols.mask[0].any()
    proj = mols.average_projection()
    assert proj.shape == (4, 2) and torch.allclose(proj.sum(1), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    batch = mols.molecule_batch()
    assert batch.num_graphs == 2 and batch.x.shape[0] == 3 + 13
    assert mols.substructure_batch().num_graphs == mols.n_substructures


def test_disk_cache_roundtrip(tmp_path):
    vocab = ((ASPIRIN, "CCO"), ("c1ccccc1N",), ())
    mol._MEMORY.pop(mol.cache_key(vocab), None)
    first = mol.drug_molecules(vocab, cache_dir=tmp_path)
    assert list(tmp_path.glob("molecules-*/molecules.json")) and not list(tmp_path.rglob("*.pkl"))
    loaded = mol._load(next(tmp_path.glob("molecules-*")))
    assert loaded.smiles == first.smiles and loaded.substructures == first.substructures
    np.testing.assert_array_equal(loaded.mask, first.mask)
    for a, b in zip(loaded.graphs + loaded.substructure_graphs, first.graphs + first.substructure_graphs):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.edge_attr, b.edge_attr)


def test_brics_mask_reproduces_released_mask():
    """All 131 rows of MoleRec's released ddi_mask_H (rows in SafeDrug-archived med_voc order) are reproduced when
    fragments are compared as canonical SMILES (both sides canonicalised with the installed RDKit)."""
    data = shared_data()
    folder = data / "molerec"
    smiles = json.loads((folder / "idx2SMILES.json").read_text())
    released_subs = json.loads((folder / "substructure_smiles.json").read_text())
    released = np.load(folder / "ddi_mask_H.npy").astype(bool)
    med_voc = json.loads((data / "safedrug-archived" / "voc_final_codes.json").read_text())["med_voc"]
    assert released.shape == (131, 491) and len(med_voc) == 131

    with pytest.warns(UserWarning, match="invalid SMILES"):  # carboplatin, which the authors' RDKit rejected too
        subs, H = mol.brics_mask([smiles[code] for code in med_voc])
    assert H.shape == (131, len(subs)) and H.dtype == bool
    canon = [mol.canonical_smiles(s) for s in released_subs]
    assert None not in canon and len(set(canon)) == 491
    assert sorted(subs) == sorted(canon)
    ours = np.asarray(subs, dtype=object)
    theirs = np.asarray(canon, dtype=object)
    mismatched = [med_voc[i] for i in range(131) if set(ours[H[i]]) != set(theirs[released[i]])]
    assert not mismatched, f"rows differing from the released mask: {mismatched}"
