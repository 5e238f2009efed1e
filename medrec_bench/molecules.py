"""Molecule featurisation for a drug vocabulary: SMILES -> PyTorch Geometric graphs, BRICS substructures and the
drug x substructure mask ``H`` used by SafeDrug and MoleRec.

- :func:`parse_smiles` parses with RDKit under the *classic* valence rules: RDKit >= 2023.09 silently turns
  hypervalent metal-ligand bonds into dative bonds ("organometallic cleanup"), so a SMILES such as carboplatin's
  ``[H][N]([H])([H])[Pt]...`` that older RDKit (and the SafeDrug/MoleRec data scripts) rejected now parses. We skip that
  cleanup so that the same SMILES are valid as in the lineage; explicit hydrogens are then removed as
  ``Chem.MolFromSmiles`` does.
- :func:`mol_to_graph`: a ``torch_geometric.data.Data`` with integer node features ``x`` long [n_atoms, 8]
  (:data:`ATOM_FEATURES`: atomic number, degree, formal charge, hybridisation, aromaticity, total H count, ring
  membership, chirality tag) and, for both directions of every bond, ``edge_index`` long [2, 2 * n_bonds] and
  ``edge_attr`` long [2 * n_bonds, 4] (:data:`BOND_FEATURES`: bond type, conjugation, ring membership, stereo).
  Every feature is an index in ``0 .. size - 1`` (out-of-range values go to the last index), ready for a sum of
  embedding tables.
- :func:`brics_mask`: the BRICS fragments (``BRICS.BRICSDecompose``, compared as canonical SMILES) of each drug's
  molecules; ``H[i, j]`` is True when fragment ``j`` occurs in a molecule of drug ``i`` (the SafeDrug/MoleRec
  ``ddi_mask_H``). Columns are sorted by SMILES (the lineage's order was a Python set's, i.e. arbitrary).
- :func:`drug_molecules`: all of the above for a vocabulary (``smiles[i]`` = SMILES of drug ``i``), cached in memory
  by a key of the SMILES and versions, and optionally on disk (safetensors + JSON, never pickle).

Invalid SMILES are skipped with a ``warnings.warn`` that names them; a drug left without a valid molecule simply has
no molecule and an empty ``H`` row (models give it a learned fallback embedding).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem, rdBase
from rdkit.Chem import BRICS
from safetensors.torch import load_file, save_file
from torch_geometric.data import Batch, Data

__all__ = ["ATOM_FEATURES", "BOND_FEATURES", "DrugMolecules", "brics_fragments", "brics_mask", "canonical_smiles",
           "drug_molecules", "mol_to_graph", "parse_smiles", "smiles_to_graph"]

FEATURIZER_VERSION = 1

_HYBRIDIZATION = {h: i for i, h in enumerate((
    Chem.HybridizationType.UNSPECIFIED, Chem.HybridizationType.S, Chem.HybridizationType.SP,
    Chem.HybridizationType.SP2, Chem.HybridizationType.SP3, Chem.HybridizationType.SP3D,
    Chem.HybridizationType.SP3D2))}
_CHIRALITY = {c: i for i, c in enumerate((
    Chem.ChiralType.CHI_UNSPECIFIED, Chem.ChiralType.CHI_TETRAHEDRAL_CW, Chem.ChiralType.CHI_TETRAHEDRAL_CCW))}
_BOND_TYPE = {b: i for i, b in enumerate((
    Chem.BondType.SINGLE, Chem.BondType.DOUBLE, Chem.BondType.TRIPLE, Chem.BondType.AROMATIC))}
_STEREO = {s: i for i, s in enumerate((
    Chem.BondStereo.STEREONONE, Chem.BondStereo.STEREOANY, Chem.BondStereo.STEREOZ, Chem.BondStereo.STEREOE,
    Chem.BondStereo.STEREOCIS, Chem.BondStereo.STEREOTRANS))}

#: node feature name -> number of values (column order of ``Data.x``)
ATOM_FEATURES: dict[str, int] = {
    "atomic_num": 120,       # 0 = BRICS dummy atom ``*``, 1..118, 119 = other
    "degree": 11,            # 0..10
    "formal_charge": 11,     # -5..+5 shifted by 5
    "hybridization": len(_HYBRIDIZATION) + 1,
    "aromatic": 2,
    "num_hs": 9,             # total hydrogens 0..8
    "in_ring": 2,
    "chirality": len(_CHIRALITY) + 1,
}
#: edge feature name -> number of values (column order of ``Data.edge_attr``)
BOND_FEATURES: dict[str, int] = {
    "bond_type": len(_BOND_TYPE) + 1,
    "conjugated": 2,
    "in_ring": 2,
    "stereo": len(_STEREO) + 1,
}

_STRICT_OPS = Chem.SanitizeFlags.SANITIZE_ALL
if hasattr(Chem.SanitizeFlags, "SANITIZE_CLEANUP_ORGANOMETALLICS"):
    _STRICT_OPS ^= Chem.SanitizeFlags.SANITIZE_CLEANUP_ORGANOMETALLICS


def parse_smiles(smiles: str) -> Chem.Mol | None:
    """The RDKit molecule of ``smiles`` (explicit hydrogens removed), or None when it is invalid or empty.

    Valences are checked with RDKit's classic rules (no automatic dative-bond conversion), see the module docstring.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    with rdBase.BlockLogs():
        raw = Chem.MolFromSmiles(smiles, sanitize=False)
        if raw is None or raw.GetNumAtoms() == 0:
            return None
        if Chem.SanitizeMol(raw, sanitizeOps=_STRICT_OPS, catchErrors=True) != Chem.SanitizeFlags.SANITIZE_NONE:
            return None
        mol = Chem.MolFromSmiles(smiles)  # the standard parse (stereo perception, explicit H removal)
    if mol is None:
        return None
    return mol if mol.GetNumAtoms() else None


def canonical_smiles(smiles: str) -> str | None:
    """RDKit's canonical (isomeric) SMILES of ``smiles`` with the installed RDKit; None when it does not parse."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    return Chem.MolToSmiles(mol) if mol is not None else None


def _index(value: int, size: int) -> int:
    return value if 0 <= value < size else size - 1


def mol_to_graph(mol: Chem.Mol) -> Data:
    """PyG graph of ``mol``: ``x`` long [n_atoms, 8], ``edge_index`` long [2, 2E], ``edge_attr`` long [2E, 4]."""
    sizes = list(ATOM_FEATURES.values())
    x = [[
        _index(a.GetAtomicNum(), sizes[0]),
        _index(a.GetDegree(), sizes[1]),
        _index(a.GetFormalCharge() + 5, sizes[2]),
        _HYBRIDIZATION.get(a.GetHybridization(), sizes[3] - 1),
        int(a.GetIsAromatic()),
        _index(a.GetTotalNumHs(), sizes[5]),
        int(a.IsInRing()),
        _CHIRALITY.get(a.GetChiralTag(), sizes[7] - 1),
    ] for a in mol.GetAtoms()]
    bsizes = list(BOND_FEATURES.values())
    src, dst, attr = [], [], []
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        feat = [_BOND_TYPE.get(b.GetBondType(), bsizes[0] - 1), int(b.GetIsConjugated()), int(b.IsInRing()),
                _STEREO.get(b.GetStereo(), bsizes[3] - 1)]
        src += [i, j]
        dst += [j, i]
        attr += [feat, feat]
    return Data(x=torch.tensor(x, dtype=torch.long).view(-1, len(sizes)),
                edge_index=torch.tensor([src, dst], dtype=torch.long).view(2, -1),
                edge_attr=torch.tensor(attr, dtype=torch.long).view(-1, len(bsizes)))


def smiles_to_graph(smiles: str) -> Data | None:
    """:func:`mol_to_graph` of a SMILES; None when it is invalid."""
    mol = parse_smiles(smiles)
    return mol_to_graph(mol) if mol is not None else None


def brics_fragments(mol: Chem.Mol) -> tuple[str, ...]:
    """Sorted canonical SMILES of the BRICS fragments of ``mol`` (the molecule itself when it has no BRICS bond)."""
    with rdBase.BlockLogs():
        frags = BRICS.BRICSDecompose(mol)
    out = set()
    for f in frags:
        c = canonical_smiles(f)
        out.add(c if c is not None else f)
    return tuple(sorted(out))


@lru_cache(maxsize=None)
def _fragments_of(smiles: str) -> tuple[str, ...]:
    """BRICS fragments of a valid SMILES, memoised per SMILES (BRICS enumeration is slow for large molecules)."""
    mol = parse_smiles(smiles)
    return brics_fragments(mol) if mol is not None else ()


def _parse_vocabulary(smiles_per_drug: Sequence[Sequence[str]]) -> tuple[list[list[tuple[str, Chem.Mol]]], list[str]]:
    """Valid (SMILES, mol) per drug, and the invalid SMILES (in order of appearance, unique)."""
    valid: list[list[tuple[str, Chem.Mol]]] = []
    invalid: list[str] = []
    for smiles in smiles_per_drug:
        row = []
        for s in smiles:
            mol = parse_smiles(s)
            if mol is None:
                if s not in invalid:
                    invalid.append(s)
            else:
                row.append((s, mol))
        valid.append(row)
    return valid, invalid


def _warn_invalid(invalid: Sequence[str]) -> None:
    if invalid:
        shown = ", ".join(repr(s) for s in invalid[:10]) + (f" and {len(invalid) - 10} more" if len(invalid) > 10
                                                            else "")
        warnings.warn(f"skipping {len(invalid)} invalid SMILES: {shown}", stacklevel=3)


def _mask_from_fragments(fragments: list[set[str]]) -> tuple[list[str], np.ndarray]:
    substructures = sorted(set().union(*fragments)) if fragments else []
    column = {s: j for j, s in enumerate(substructures)}
    mask = np.zeros((len(fragments), len(substructures)), dtype=bool)
    for i, frags in enumerate(fragments):
        for f in frags:
            mask[i, column[f]] = True
    return substructures, mask


def brics_mask(smiles_per_drug: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """(substructures: canonical SMILES sorted, H: bool [n_drugs, n_sub]) with ``H[i, j]`` = fragment ``j`` occurs in
    a molecule of drug ``i``. Invalid SMILES are warned about and skipped."""
    valid, invalid = _parse_vocabulary(smiles_per_drug)
    _warn_invalid(invalid)
    return _mask_from_fragments([{f for smiles, _ in row for f in _fragments_of(smiles)} for row in valid])


@dataclass(frozen=True)
class DrugMolecules:
    """Molecules and BRICS substructures of a drug vocabulary.

    ``smiles``: the valid molecules, drug by drug; ``drug_of_molecule`` long [n_mol]: the drug index of each;
    ``graphs``: one PyG graph per molecule; ``substructures`` / ``substructure_graphs``: BRICS fragments (canonical
    SMILES, sorted) and their graphs (BRICS attachment points are atoms with atomic number 0); ``mask`` bool
    [n_drugs, n_sub]: the ``H`` matrix; ``invalid``: SMILES that were skipped.
    """

    n_drugs: int
    smiles: tuple[str, ...]
    drug_of_molecule: np.ndarray
    graphs: tuple[Data, ...]
    substructures: tuple[str, ...]
    substructure_graphs: tuple[Data, ...]
    mask: np.ndarray
    invalid: tuple[str, ...]

    @property
    def n_molecules(self) -> int:
        return len(self.smiles)

    @property
    def n_substructures(self) -> int:
        return len(self.substructures)

    @cached_property
    def has_molecule(self) -> np.ndarray:
        """bool [n_drugs]: the drug has at least one valid molecule."""
        out = np.zeros(self.n_drugs, dtype=bool)
        out[self.drug_of_molecule] = True
        return out

    def molecule_batch(self) -> Batch:
        """All molecule graphs as one PyG ``Batch`` (``batch`` maps atoms to molecules)."""
        return _batch(self.graphs)

    def substructure_batch(self) -> Batch:
        """All substructure graphs as one PyG ``Batch``."""
        return _batch(self.substructure_graphs)

    def average_projection(self) -> torch.Tensor:
        """float [n_drugs, n_mol]: row ``i`` averages the molecules of drug ``i`` (all zeros without molecules)."""
        proj = torch.zeros(self.n_drugs, self.n_molecules)
        if self.n_molecules:
            idx = torch.as_tensor(self.drug_of_molecule, dtype=torch.long)
            proj[idx, torch.arange(self.n_molecules)] = 1.0
            proj = proj / proj.sum(1, keepdim=True).clamp(min=1.0)
        return proj


def _batch(graphs: Sequence[Data]) -> Batch:
    if not graphs:
        return Batch.from_data_list([Data(x=torch.zeros((0, len(ATOM_FEATURES)), dtype=torch.long),
                                          edge_index=torch.zeros((2, 0), dtype=torch.long),
                                          edge_attr=torch.zeros((0, len(BOND_FEATURES)), dtype=torch.long))])
    return Batch.from_data_list(list(graphs))


def _build(smiles_per_drug: Sequence[Sequence[str]]) -> DrugMolecules:
    valid, invalid = _parse_vocabulary(smiles_per_drug)
    smiles, owner, graphs, fragments = [], [], [], []
    for i, row in enumerate(valid):
        frags: set[str] = set()
        for s, mol in row:
            smiles.append(s)
            owner.append(i)
            graphs.append(mol_to_graph(mol))
            frags.update(_fragments_of(s))
        fragments.append(frags)
    substructures, mask = _mask_from_fragments(fragments)
    sub_graphs = []
    for s in substructures:
        mol = parse_smiles(s)
        if mol is None:  # a fragment RDKit wrote but cannot read back under the classic rules: keep a bare atom
            mol = Chem.MolFromSmiles("*")
        sub_graphs.append(mol_to_graph(mol))
    return DrugMolecules(len(smiles_per_drug), tuple(smiles), np.asarray(owner, dtype=np.int64), tuple(graphs),
                         tuple(substructures), tuple(sub_graphs), mask, tuple(invalid))


# --- caching -------------------------------------------------------------------------------------------------------
_MEMORY: dict[str, DrugMolecules] = {}
_META = "molecules.json"
_TENSORS = "graphs.safetensors"


def cache_key(smiles_per_drug: Sequence[Sequence[str]]) -> str:
    """Hex key of a vocabulary's SMILES, the featuriser version and the RDKit version."""
    payload = json.dumps({"smiles": [list(s) for s in smiles_per_drug], "featurizer": FEATURIZER_VERSION,
                          "rdkit": rdBase.rdkitVersion})
    return hashlib.sha256(payload.encode()).hexdigest()


def _pack(graphs: Sequence[Data], prefix: str) -> dict[str, torch.Tensor]:
    nodes = torch.tensor([0] + [g.num_nodes for g in graphs], dtype=torch.long).cumsum(0)
    edges = torch.tensor([0] + [g.edge_index.shape[1] for g in graphs], dtype=torch.long).cumsum(0)
    cat = (lambda ts, shape: torch.cat(ts) if ts else torch.zeros(shape, dtype=torch.long))
    return {f"{prefix}_x": cat([g.x for g in graphs], (0, len(ATOM_FEATURES))),
            f"{prefix}_edge_index": cat([g.edge_index.t() for g in graphs], (0, 2)),
            f"{prefix}_edge_attr": cat([g.edge_attr for g in graphs], (0, len(BOND_FEATURES))),
            f"{prefix}_node_ptr": nodes, f"{prefix}_edge_ptr": edges}


def _unpack(t: dict[str, torch.Tensor], prefix: str) -> tuple[Data, ...]:
    nodes, edges = t[f"{prefix}_node_ptr"].tolist(), t[f"{prefix}_edge_ptr"].tolist()
    out = []
    for k in range(len(nodes) - 1):
        out.append(Data(x=t[f"{prefix}_x"][nodes[k]:nodes[k + 1]].clone(),
                        edge_index=t[f"{prefix}_edge_index"][edges[k]:edges[k + 1]].t().contiguous(),
                        edge_attr=t[f"{prefix}_edge_attr"][edges[k]:edges[k + 1]].clone()))
    return tuple(out)


def _save(mols: DrugMolecules, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    meta = {"n_drugs": mols.n_drugs, "smiles": list(mols.smiles), "drug_of_molecule": mols.drug_of_molecule.tolist(),
            "substructures": list(mols.substructures), "invalid": list(mols.invalid),
            "mask": [np.flatnonzero(row).tolist() for row in mols.mask],
            "featurizer": FEATURIZER_VERSION, "rdkit": rdBase.rdkitVersion}
    (tmp / _META).write_text(json.dumps(meta))
    save_file({**_pack(mols.graphs, "mol"), **_pack(mols.substructure_graphs, "sub")}, str(tmp / _TENSORS))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process wrote it first
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def _load(folder: Path) -> DrugMolecules:
    meta = json.loads((folder / _META).read_text())
    tensors = load_file(str(folder / _TENSORS))
    mask = np.zeros((meta["n_drugs"], len(meta["substructures"])), dtype=bool)
    for i, cols in enumerate(meta["mask"]):
        mask[i, cols] = True
    return DrugMolecules(meta["n_drugs"], tuple(meta["smiles"]), np.asarray(meta["drug_of_molecule"], dtype=np.int64),
                         _unpack(tensors, "mol"), tuple(meta["substructures"]), _unpack(tensors, "sub"), mask,
                         tuple(meta["invalid"]))


def drug_molecules(smiles_per_drug: Sequence[Sequence[str]], cache_dir: str | Path | None = None) -> DrugMolecules:
    """Featurise a drug vocabulary (``smiles_per_drug[i]``: the SMILES of drug ``i``), cached in memory by
    :func:`cache_key` and, when ``cache_dir`` is given, under ``cache_dir/molecules-<key>``. Invalid SMILES are
    warned about (once per process and vocabulary) and skipped."""
    key = cache_key(smiles_per_drug)
    if key in _MEMORY:
        return _MEMORY[key]
    folder = Path(cache_dir) / f"molecules-{key[:24]}" if cache_dir is not None else None
    mols = None
    if folder is not None and (folder / _META).is_file() and (folder / _TENSORS).is_file():
        try:
            mols = _load(folder)
        except (OSError, ValueError, KeyError):
            mols = None
    if mols is None:
        mols = _build(smiles_per_drug)
        if folder is not None:
            try:
                _save(mols, folder)
            except OSError as exc:
                warnings.warn(f"could not write the molecule cache {folder}: {exc}", stacklevel=2)
    _warn_invalid(mols.invalid)
    _MEMORY[key] = mols
    return mols
