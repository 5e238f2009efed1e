"""Building blocks shared by GAMENet, SafeDrug and MoleRec.

- :class:`PatientEncoder`: the lineage's patient representation, batched. Each visit's diagnosis and procedure codes
  are embedded (dim ``emb_dim``) and pooled within the visit (masked sum or mean), one GRU per code type runs over the
  visits, and a query ``Linear(ReLU([h_dx, h_px]))`` is computed for every visit. Visits are left-aligned and the
  GRU is causal, so the query of a sample's current visit does not depend on how much padding the batch adds.
- :func:`history_multi_hot`: the multi-hot drug sets of the history visits of a :class:`VisitBatch`.
- :class:`CategoricalEmbedding`: a sum of embedding tables over integer feature columns (atom / bond features of
  :mod:`medrec_bench.molecules`).
- :func:`average_per_drug` and :func:`extend_substructure_mask`: per-drug pooling of molecule embeddings with a
  learned fallback for drugs without a valid molecule, and a private pseudo-substructure for drugs without any BRICS
  fragment (so no drug is left without a local representation); :func:`context_molecules` featurises a context's
  SMILES once (cached); :class:`MolecularGraphs` keeps a fixed batch of molecular graphs as buffers, with the
  gathers, neighbour sums and pooling the molecule GNNs need (plain ``index_select`` / ``index_add_`` on index
  tensors built once, instead of PyG's per-call message-passing machinery); :class:`DrugMoleculeEncoder` runs a
  molecule GNN over all of them and averages per drug.
- :func:`dropout`: ``F.dropout`` with the keep mask drawn by ``torch.rand`` (faster on CPU than ``bernoulli_``).
- :func:`ddi_tensor`: the context's DDI matrix as a float adjacency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn
from torch_geometric.data import Batch

from medrec_bench.molecules import DrugMolecules, drug_molecules
from medrec_bench.tasks import VisitBatch

if TYPE_CHECKING:
    from medrec_bench.models import Context

INIT_RANGE = 0.1  # the lineage initialises code embeddings uniformly in [-0.1, 0.1]


@dataclass
class PatientQueries:
    """Output of :class:`PatientEncoder`: ``queries`` float [B, V, Q] (one per visit, padded visits included),
    ``current`` float [B, Q] (the current visit's query), ``history_mask`` bool [B, V] (True for the real visits
    before the current one)."""

    queries: torch.Tensor
    current: torch.Tensor
    history_mask: torch.Tensor


class PatientEncoder(nn.Module):
    """Visit codes -> per-visit queries.

    ``emb_dim``: code embedding size; ``hidden_dim``: GRU size (default ``emb_dim``; GAMENet uses ``2 * emb_dim``);
    ``query_dim``: output size (default ``emb_dim``); ``pooling``: ``"sum"`` (SafeDrug, MoleRec) or ``"mean"``
    (GAMENet) over a visit's codes; ``dropout`` on the code embeddings (as in the reference code).
    """

    def __init__(self, n_diagnoses: int, n_procedures: int, emb_dim: int = 64, hidden_dim: int | None = None,
                 query_dim: int | None = None, pooling: Literal["sum", "mean"] = "sum", dropout: float = 0.0) -> None:
        super().__init__()
        if pooling not in ("sum", "mean"):
            raise ValueError(f"pooling must be 'sum' or 'mean', not {pooling!r}")
        hidden_dim = hidden_dim or emb_dim
        self.pooling = pooling
        self.embeddings = nn.ModuleList([nn.Embedding(n_diagnoses + 1, emb_dim, padding_idx=n_diagnoses),
                                         nn.Embedding(n_procedures + 1, emb_dim, padding_idx=n_procedures)])
        for emb in self.embeddings:
            nn.init.uniform_(emb.weight, -INIT_RANGE, INIT_RANGE)
            with torch.no_grad():
                emb.weight[emb.padding_idx].zero_()
        self.dropout = nn.Dropout(dropout)
        self.grus = nn.ModuleList([nn.GRU(emb_dim, hidden_dim, batch_first=True) for _ in range(2)])
        self.query = nn.Sequential(nn.ReLU(), nn.Linear(2 * hidden_dim, query_dim or emb_dim))

    def pool(self, which: int, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """codes long [B, V, L], mask bool [B, V, L] -> float [B, V, emb_dim] (masked sum or mean).

        Only the real codes are embedded (and dropped out), then summed into their visits, so the cost follows the
        number of codes, not the padded size B x V x L."""
        b, v, length = codes.shape
        mask = mask.reshape(b * v, length)
        counts = mask.sum(1)
        visit_of_code = torch.repeat_interleave(torch.arange(b * v, device=codes.device), counts)
        emb = self.dropout(self.embeddings[which](codes.reshape(b * v, length)[mask]))
        out = emb.new_zeros(b * v, emb.shape[1]).index_add_(0, visit_of_code, emb)
        if self.pooling == "mean":
            out = out / counts.clamp(min=1).unsqueeze(1)
        return out.view(b, v, -1)

    def forward(self, batch: VisitBatch) -> PatientQueries:
        dx = self.pool(0, batch.diagnoses, batch.diagnoses_mask)
        px = self.pool(1, batch.procedures, batch.procedures_mask)
        h_dx, _ = self.grus[0](dx)
        h_px, _ = self.grus[1](px)
        queries = self.query(torch.cat([h_dx, h_px], dim=-1))  # [B, V, Q]
        last = (batch.n_visits - 1).clamp(min=0)
        current = queries[torch.arange(queries.shape[0], device=queries.device), last]
        positions = torch.arange(queries.shape[1], device=queries.device)
        history_mask = positions.unsqueeze(0) < last.unsqueeze(1)
        return PatientQueries(queries, current, history_mask)


def history_multi_hot(batch: VisitBatch, n_drugs: int) -> torch.Tensor:
    """float [B, V, |M|]: 1.0 for each drug prescribed at visit v (all zeros for the current and padded visits)."""
    b, v, _ = batch.drugs.shape
    out = torch.zeros(b, v, n_drugs + 1, device=batch.drugs.device)
    out.scatter_(2, batch.drugs, batch.drugs_mask.float())
    return out[..., :n_drugs]


class CategoricalEmbedding(nn.Module):
    """Sum of one embedding table per integer column: long [N, F] -> float [N, dim] (OGB's Atom/BondEncoder)."""

    def __init__(self, sizes: Sequence[int], dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList([nn.Embedding(size, dim) for size in sizes])
        for table in self.tables:
            nn.init.xavier_uniform_(table.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.tables[0](features[:, 0])
        for k in range(1, len(self.tables)):
            out = out + self.tables[k](features[:, k])
        return out


def average_per_drug(molecule_embeddings: torch.Tensor, projection: torch.Tensor, has_molecule: torch.Tensor,
                     fallback: torch.Tensor) -> torch.Tensor:
    """Drug embeddings float [|M|, d]: the mean of each drug's molecule embeddings (``projection`` float
    [|M|, n_mol] from :meth:`DrugMolecules.average_projection`), or the row of ``fallback`` [|M|, d] for a drug
    without a valid molecule (``has_molecule`` bool [|M|])."""
    if molecule_embeddings.shape[0] == 0:
        return fallback
    pooled = projection @ molecule_embeddings
    return torch.where(has_molecule.unsqueeze(1), pooled, fallback)


def extend_substructure_mask(mask: torch.Tensor) -> torch.Tensor:
    """bool [|M|, S] -> bool [|M|, S + k]: one extra private column per drug whose row is empty (k such drugs)."""
    empty = ~mask.any(1)
    extra = torch.zeros(mask.shape[0], int(empty.sum()), dtype=torch.bool, device=mask.device)
    extra[empty.nonzero().squeeze(1), torch.arange(extra.shape[1], device=mask.device)] = True
    return torch.cat([mask, extra], dim=1)


def context_molecules(ctx: "Context") -> DrugMolecules:
    """The featurised molecules of ``ctx.smiles`` (memory-cached; also on disk under ``ctx.work_dir/molecules``)."""
    cache = Path(ctx.work_dir) / "molecules" if ctx.work_dir is not None else None
    return drug_molecules(ctx.smiles, cache_dir=cache)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as ``F.dropout(x, p, training)``: each element kept with probability ``1 - p`` (``uniform <
    1 - p``) and scaled by ``1 / (1 - p)``. The mask comes from ``torch.rand_like`` rather than ``bernoulli_``, which
    is about 3x slower on CPU (the GINs drop out [atoms, d] activations every layer of every step); same
    distribution, a different random stream than ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    keep = 1.0 - p
    return x * (torch.rand_like(x) < keep).to(x.dtype).div_(keep)


def ddi_tensor(ctx: "Context") -> torch.Tensor:
    """float [|M|, |M|]: the context's DDI adjacency, symmetric with a zero diagonal."""
    ddi = torch.as_tensor(ctx.ddi).bool()
    adj = (ddi | ddi.t()).float()
    adj.fill_diagonal_(0.0)
    return adj


class MolecularGraphs(nn.Module):
    """A fixed batch of molecular graphs (a PyG ``Batch``) kept as non-persistent buffers, rebuilt from SMILES at
    load. Atoms and bonds are stored as indices into their distinct feature rows (a few hundred atom types among
    thousands of atoms), so embedding them costs one small table lookup and a gather.

    ``n_graphs``; ``atom_types`` long [T, F_atom], ``atom_index`` long [N]; ``bond_types`` long [U, F_bond],
    ``bond_index`` long [E]; ``edge_index`` long [2, E] (PyG's source-to-target flow: ``source`` = row 0, ``target``
    = row 1, both contiguous); ``batch`` long [N] (graph of each atom); ``graph_sizes`` float [G, 1] (atoms per graph,
    at least 1).
    """

    def __init__(self, graphs: Batch) -> None:
        super().__init__()
        self.n_graphs = int(graphs.num_graphs)
        atom_types, atom_index = torch.unique(graphs.x, dim=0, return_inverse=True)
        if graphs.edge_attr.shape[0]:
            bond_types, bond_index = torch.unique(graphs.edge_attr, dim=0, return_inverse=True)
        else:
            bond_types, bond_index = graphs.edge_attr[:1].new_zeros((1, graphs.edge_attr.shape[1])), \
                graphs.edge_attr.new_zeros((0,))
        self.register_buffer("atom_types", atom_types, persistent=False)
        self.register_buffer("atom_index", atom_index.view(-1), persistent=False)
        self.register_buffer("bond_types", bond_types, persistent=False)
        self.register_buffer("bond_index", bond_index.view(-1), persistent=False)
        self.register_buffer("edge_index", graphs.edge_index, persistent=False)
        self.register_buffer("source", graphs.edge_index[0].contiguous(), persistent=False)
        self.register_buffer("target", graphs.edge_index[1].contiguous(), persistent=False)
        self.register_buffer("batch", graphs.batch, persistent=False)
        sizes = torch.bincount(graphs.batch, minlength=self.n_graphs).clamp(min=1)
        self.register_buffer("graph_sizes", sizes.to(torch.float32).unsqueeze(1), persistent=False)

    @property
    def n_atoms(self) -> int:
        return int(self.atom_index.shape[0])

    def atoms(self, encoder: CategoricalEmbedding) -> torch.Tensor:
        """float [N, d]: embedded atom features."""
        return encoder(self.atom_types).index_select(0, self.atom_index)

    def bonds(self, encoder: CategoricalEmbedding) -> torch.Tensor:
        """float [E, d]: embedded bond features (both directions of each bond)."""
        return encoder(self.bond_types).index_select(0, self.bond_index)

    def sources(self, h: torch.Tensor) -> torch.Tensor:
        """float [N, d] -> [E, d]: the features of each directed bond's source atom (PyG's ``x_j``)."""
        return h.index_select(0, self.source)

    def neighbour_sum(self, messages: torch.Tensor) -> torch.Tensor:
        """float [E, d] (one message per directed bond) -> [N, d]: the sum of the messages into each atom."""
        return messages.new_zeros(self.n_atoms, messages.shape[1]).index_add_(0, self.target, messages)

    def sum_pool(self, h: torch.Tensor) -> torch.Tensor:
        """float [N, d] -> [G, d]: the sum over each graph's atoms (``global_add_pool``)."""
        return h.new_zeros(self.n_graphs, h.shape[1]).index_add_(0, self.batch, h)

    def mean_pool(self, h: torch.Tensor) -> torch.Tensor:
        """float [N, d] -> [G, d]: the mean over each graph's atoms (``global_mean_pool``; 0 for an empty graph)."""
        return self.sum_pool(h) / self.graph_sizes.to(h.dtype)


class DrugMoleculeEncoder(nn.Module):
    """Every molecule of every drug through ``gnn`` (a module: :class:`MolecularGraphs` -> float [G, dim]), averaged
    per drug, with a learned fallback row for a drug without a valid molecule: ``forward()`` -> float [|M|, dim]."""

    def __init__(self, molecules: DrugMolecules, gnn: nn.Module, dim: int) -> None:
        super().__init__()
        self.gnn = gnn
        self.n_molecules = molecules.n_molecules
        self.graphs = MolecularGraphs(molecules.molecule_batch())
        self.register_buffer("projection", molecules.average_projection(), persistent=False)
        self.register_buffer("has_molecule", torch.as_tensor(molecules.has_molecule), persistent=False)
        self.fallback = nn.Parameter(torch.empty(molecules.n_drugs, dim).uniform_(-INIT_RANGE, INIT_RANGE))

    def forward(self) -> torch.Tensor:
        if self.n_molecules == 0:
            return self.fallback
        return average_per_drug(self.gnn(self.graphs), self.projection, self.has_molecule, self.fallback)
