"""GAMENet (Shang et al., "GAMENet: Graph Augmented MEmory Networks for Recommending Medication Combination",
AAAI 2019), batched.

Model. A :class:`~baselines.encoders.PatientEncoder` (mean-pooled code embeddings of dim ``emb_dim``, one GRU of
size ``2 * emb_dim`` per code type, query ``q_t = Linear(ReLU([h_dx, h_px]))`` of dim ``emb_dim`` per visit). Two
2-layer GCNs (``torch_geometric.nn.DenseGCNConv``, identity node features, ReLU + dropout between the layers) over the
EHR co-prescription graph and the DDI graph give the memory bank ``M_b = GCN_ehr - beta * GCN_ddi`` [|M|, d] with a
learned scalar ``beta``. Fact 1 reads ``M_b`` with attention ``softmax(q_t M_b^T) M_b``; fact 2 reads the dynamic
memory of past visits: keys are the past queries, values their multi-hot drug sets, ``softmax(q_t K^T) V M_b``
(fact 2 = fact 1 for a first visit). Logits = ``MLP([q_t, fact1, fact2])`` (ReLU, Linear(3d, 2d), ReLU,
Linear(2d, |M|)).

Loss. ``0.9 * BCE + 0.01 * multilabel margin`` (the released weights); with ``ddi_loss`` on, a visit whose DDI rate
is above ``target_ddi`` takes the DDI penalty alone with probability ``exp((target_ddi - ddi) / T)``, where
``T = temperature * temperature_decay ** epoch`` (the paper's simulated-annealing rule; see
:mod:`baselines.ddi_loss`). The DDI penalty is ``ddi_scale * sum_ij (p p^T ⊙ A)_ij`` per visit (batch mean), with
the SafeDrug/MoleRec code's ``ddi_scale = 0.0005`` (the epoch record's ``ddi_step_share`` reports how often DDI steps
happen).

Deviations from the authors' code (github.com/sjy1203/GAMENet):

- the EHR graph is built from the *training* samples only (their targets and history visits), in ``fit``, and saved
  with the model; the released ``ehr_adj_final.pkl`` is built from every patient, test patients included (leakage);
- the DDI penalty sums over drug pairs as in the paper (times ``ddi_scale = 0.0005``, as SafeDrug's and MoleRec's
  code); the released code averages, ``mean(p p^T ⊙ A)``, i.e. ``1/|M|^2`` of the sum, and with Adam such small
  DDI-only steps barely move the model: on the synthetic cohort the predicted DDI rate did not react to the target
  (0.080 at target 0.10 and at 0.02), while the scaled sum gives 0.082 vs 0.024 (``ddi_reduction="mean"``,
  ``ddi_scale=1`` restores the code's penalty);
- GCN adjacency normalised symmetrically, ``D^-1/2 (A + I) D^-1/2`` (Kipf & Welling, as the paper's GCN), where the
  code row-normalises ``D^-1 (A + I)``;
- mini-batches: padded visits and code sets with masks (identical predictions for any padding); each visit of a
  batch keeps its own DDI rate and annealing draw, so the batch loss is the mean of the reference code's per-visit
  losses (``ddi_rate_scope="batch"``: one pooled rate and one draw per batch);
- the annealing draw uses the model's seeded torch RNG, and training uses the shared loop (Adam, early stopping on
  validation PRAUC with best-state restore) instead of "best Jaccard of 40 epochs".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import DenseGCNConv

from medrec_bench.models import Context, TorchRecommender
from medrec_bench.registry import Range
from medrec_bench.tasks import Sample, VisitBatch

from .ddi_loss import DDILossLogging, Scope, annealed_loss, check_rate_scope, prediction_loss
from .encoders import INIT_RANGE, PatientEncoder, ddi_tensor, history_multi_hot


def cooccurrence_graph(samples: Sequence[Sample], n_drugs: int) -> np.ndarray:
    """float32 [|M|, |M|]: 1.0 where two drugs are prescribed together in a visit of ``samples`` (their targets and
    history visits, each visit counted once), zero diagonal (GAMENet's binary ``ehr_adj``)."""
    adj = np.zeros((n_drugs, n_drugs), dtype=np.float32)
    seen: set[tuple[str, str]] = set()
    for s in samples:
        visits = [(v.visit_id, v.drugs) for v in s.history] + [(s.visit_id, s.target)]
        for visit_id, drugs in visits:
            if (s.patient_id, visit_id) in seen:
                continue
            seen.add((s.patient_id, visit_id))
            idx = np.asarray(sorted(set(drugs)), dtype=np.int64)
            if len(idx) > 1:
                adj[np.ix_(idx, idx)] = 1.0
    np.fill_diagonal(adj, 0.0)
    return adj


class GraphMemory(nn.Module):
    """Two dense GCN layers over a fixed drug graph with identity node features -> float [|M|, dim]."""

    def __init__(self, n_nodes: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.gcn1 = DenseGCNConv(n_nodes, dim)
        self.gcn2 = DenseGCNConv(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("eye", torch.eye(n_nodes), persistent=False)

    def forward(self, adjacency: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.gcn1(self.eye, adjacency).squeeze(0))
        return self.gcn2(self.dropout(h), adjacency).squeeze(0)


class GAMENetNet(nn.Module):
    """The GAMENet network: :class:`VisitBatch` -> logits [B, |M|]."""

    def __init__(self, n_diagnoses: int, n_procedures: int, ehr_adj: torch.Tensor, ddi_adj: torch.Tensor,
                 emb_dim: int, dropout: float, gcn_dropout: float, ddi_in_memory: bool) -> None:
        super().__init__()
        n_drugs = ddi_adj.shape[0]
        self.n_drugs = n_drugs
        self.ddi_in_memory = ddi_in_memory
        self.encoder = PatientEncoder(n_diagnoses, n_procedures, emb_dim, hidden_dim=2 * emb_dim, query_dim=emb_dim,
                                      pooling="mean", dropout=dropout)
        self.register_buffer("ehr_adj", ehr_adj.float())
        self.register_buffer("ddi_adj", ddi_adj.float(), persistent=False)
        self.ehr_gcn = GraphMemory(n_drugs, emb_dim, gcn_dropout)
        self.ddi_gcn = GraphMemory(n_drugs, emb_dim, gcn_dropout)
        self.inter = nn.Parameter(torch.empty(1).uniform_(-INIT_RANGE, INIT_RANGE))
        self.output = nn.Sequential(nn.ReLU(), nn.Linear(3 * emb_dim, 2 * emb_dim), nn.ReLU(),
                                    nn.Linear(2 * emb_dim, n_drugs))

    def memory_bank(self) -> torch.Tensor:
        """float [|M|, d]: ``GCN_ehr - beta * GCN_ddi`` (or ``GCN_ehr`` without DDI in memory)."""
        bank = self.ehr_gcn(self.ehr_adj)
        if self.ddi_in_memory:
            bank = bank - self.inter * self.ddi_gcn(self.ddi_adj)
        return bank

    def forward(self, batch: VisitBatch) -> torch.Tensor:
        enc = self.encoder(batch)
        query = enc.current  # [B, d]
        bank = self.memory_bank()  # [M, d]
        fact1 = torch.softmax(query @ bank.t(), dim=-1) @ bank
        has_history = enc.history_mask.any(1)
        scores = torch.einsum("bd,bvd->bv", query, enc.queries)
        scores = scores.masked_fill(~enc.history_mask, float("-inf"))
        scores = torch.where(has_history.unsqueeze(1), scores, torch.zeros_like(scores))
        weights = torch.softmax(scores, dim=-1) * enc.history_mask
        values = history_multi_hot(batch, self.n_drugs)  # [B, V, M]
        fact2 = torch.einsum("bv,bvm->bm", weights, values) @ bank
        fact2 = torch.where(has_history.unsqueeze(1), fact2, fact1)
        return self.output(torch.cat([query, fact1, fact2], dim=-1))


class GAMENet(DDILossLogging, TorchRecommender):
    """GAMENet; see the module docstring for the model, the loss and the deviations from the released code.

    ``emb_dim``: embedding / memory size (64); ``dropout``: on code embeddings (0.4); ``gcn_dropout`` (0.3);
    ``ddi_in_memory``: subtract the DDI-graph memory; ``ddi_loss``: enable the annealed DDI loss with ``target_ddi``
    (0.05), ``temperature`` (0.5) and ``temperature_decay`` per epoch (0.85); ``bce_weight`` / ``margin_weight``
    (0.9 / 0.01); ``ddi_reduction`` (``"sum"`` over drug pairs, or ``"mean"``) and ``ddi_scale`` (0.0005) of the
    DDI penalty; ``ddi_rate_scope``: ``"visit"`` (each visit's DDI rate and annealing draw, as the one-visit-per-step
    reference) or ``"batch"`` (one pooled rate and draw per batch). The authors train with Adam, lr 2e-4, one visit
    per step, 40 epochs.
    Defaults here: batch 32, lr 5e-3, early stopping (mini-batches take fewer, larger steps per epoch;
    see ``bench/train_speed.py``).
    """

    needs_resources = frozenset({"ddi"})
    test_params: ClassVar[dict] = {"epochs": 1, "emb_dim": 16, "batch_size": 64}
    param_ranges: ClassVar[dict[str, Range]] = {"emb_dim": Range(ge=1), "dropout": Range(ge=0, lt=1),
                                                "gcn_dropout": Range(ge=0, lt=1), "temperature": Range(gt=0),
                                                "temperature_decay": Range(gt=0, le=1)}

    def __init__(self, *, emb_dim: int = 64, dropout: float = 0.4, gcn_dropout: float = 0.3,
                 ddi_in_memory: bool = True, ddi_loss: bool = True, target_ddi: float = 0.05,
                 temperature: float = 0.5, temperature_decay: float = 0.85, bce_weight: float = 0.9,
                 margin_weight: float = 0.01, ddi_reduction: Literal["mean", "sum"] = "sum", ddi_scale: float = 5e-4,
                 ddi_rate_scope: Scope = "visit",
                 epochs: int = 30, batch_size: int = 32, lr: float = 5e-3,
                 weight_decay: float = 0.0, patience: int = 5, seed: int | None = None) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                         seed=seed)
        self.emb_dim = emb_dim
        self.dropout = dropout
        self.gcn_dropout = gcn_dropout
        self.ddi_in_memory = ddi_in_memory
        self.ddi_loss = ddi_loss
        self.target_ddi = target_ddi
        self.temperature = temperature
        self.temperature_decay = temperature_decay
        self.bce_weight = bce_weight
        self.margin_weight = margin_weight
        if ddi_reduction not in ("mean", "sum"):
            raise ValueError(f"ddi_reduction must be 'mean' or 'sum', not {ddi_reduction!r}")
        self.ddi_reduction = ddi_reduction
        self.ddi_scale = ddi_scale
        self.ddi_rate_scope = check_rate_scope(ddi_rate_scope)
        self._ehr_adj: np.ndarray | None = None

    ddi_record_key = "ddi_step_share"  # the history's share of visits whose loss was the DDI penalty

    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "GAMENet":
        self._ehr_adj = cooccurrence_graph(train, ctx.n_drugs)
        return super().fit(train, val, ctx)

    def build(self, ctx: Context) -> nn.Module:
        n = ctx.n_drugs
        ehr = torch.from_numpy(self._ehr_adj) if self._ehr_adj is not None else torch.zeros(n, n)
        return GAMENetNet(len(ctx.vocab.diagnoses), len(ctx.vocab.procedures), ehr, ddi_tensor(ctx), self.emb_dim,
                          self.dropout, self.gcn_dropout, self.ddi_in_memory)

    def loss(self, batch: VisitBatch, target: torch.Tensor, epoch: int) -> torch.Tensor:
        logits = self.forward(batch)
        if not self.ddi_loss:
            return prediction_loss(logits, target, self.bce_weight, self.margin_weight).mean()
        loss, share = annealed_loss(logits, target, self.module.ddi_adj, target_ddi=self.target_ddi,
                                    temperature=self.temperature * self.temperature_decay ** epoch,
                                    bce_weight=self.bce_weight, margin_weight=self.margin_weight,
                                    ddi_reduction=self.ddi_reduction, ddi_scale=self.ddi_scale,
                                    threshold=self.default_threshold, rate_scope=self.ddi_rate_scope)
        self.log_ddi_weight(share)
        return loss


__all__ = ["GAMENet", "GAMENetNet", "cooccurrence_graph"]
