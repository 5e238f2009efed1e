"""LEADER's student (``leader_s``): a small Transformer over the patient's visits, distilled from the LLM teacher
(``leader_t``) and aligned with the patient profile so that first-time (single-visit) patients still get a drug input
(Liu et al. 2024, arXiv 2402.02803).

Network (:class:`StudentNet`, width ``d = emb_dim``):

- one shared code embedding over a :class:`UnifiedVocabulary` (``[PAD]``, then the drugs, the diagnoses and the
  procedures), so a diagnosis and a procedure with the same code string are different rows;
- set encoders within a visit: one 1-layer pre-LayerNorm Transformer block (``heads`` heads, FFN ``ffn_dim``, GELU)
  each for diagnoses, procedures and drugs, padding-masked, mean-pooled -> one vector per visit per stream;
- profile encoder: one embedding per profile field of the cohort (``ctx.profile_fields``), concatenated,
  ``Linear(F * d -> d)``. The profile vector is the drug stream's first record (a pseudo-medication record): the drug
  stream at visit ``t`` holds the drugs of visit ``t - 1`` and at the first visit the profile, so a single-visit patient
  still has a drug input. ``use_profile=False`` (ablation) puts a learned vector there instead;
- visit encoder: one shared 1-layer Transformer block over the visit sequence of each stream, padding-masked, then a
  mean over the valid visits. Only the last ``max_visits`` visits are kept (the current one always);
- head: ``concat(3d) -> ReLU -> Linear(3d -> hidden_dim) -> ReLU -> Linear(hidden_dim -> |M|)``; decision threshold
  0.3 (the paper's; the runner records it with every number).

Losses (:meth:`LeaderStudent.loss_terms`): BCE with logits; ``alpha`` x feature-level distillation (the
``hidden_dim`` output of the head's first Linear, mapped by a training-only ``Linear(hidden_dim -> teacher hidden)``,
MSE against the teacher's hidden state of the same training sample, :meth:`leader.teacher.LeaderTeacher.features`,
cached on disk by the teacher and asked for the training samples only); ``align_weight`` x profile alignment
(:func:`alignment_loss`: symmetric InfoNCE between the profile vector and the embedding of the current visit's
ground-truth drug set, shared embeddings -> drug set encoder -> mean pool, each through a training-only
``Linear(d -> d)``, cosine similarity / ``tau``, in-batch negatives). The target drug set and the teacher are used in
training only: prediction needs neither (the saved state holds only :class:`StudentNet`). Training: Adam lr 5e-4,
early stopping on validation PRAUC with patience 10, through :class:`~medrec_bench.models.TorchRecommender`.

Deviations from the authors' released code, following the paper:

- diagnosis and procedure codes that share a string stay distinct (theirs merged e.g. ICD-9 diagnosis 3961 and
  procedure 3961 into one token);
- the medication head's output is returned (theirs returned the diagnosis head's output in the medication slot);
- the last ``max_visits`` visits are kept, so the current visit is never dropped (theirs kept the first 10); beyond
  ``max_visits`` visits the profile stays the drug stream's first record, in place of the drugs of the visit just
  before the window;
- the temperature ``tau`` is really used (their flag was ignored and the temperature was stuck at 1);
- the target drug ids are offset into the unified vocabulary before the lookup (theirs looked up the wrong rows).

``alpha`` defaults to 0.4 and ``align_weight`` to 0.005, the paper's MIMIC-III values (the embedded cohort is
MIMIC-III-shaped; MIMIC-IV: 0.8 / 0.01). ``alpha`` was checked on the embedded cohort's validation split with the
SmolLM2 teacher (``bench/student_alpha.py``, seed 0): PRAUC 0.7027 / 0.7054 / 0.7055 / 0.7022 at alpha 0 / 0.1 /
0.4 / 0.8, so 0.4 stays (its margin over 0.1 is far inside the noise of 178 validation patients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from medrec_bench.models import Context, TorchRecommender
from medrec_bench.tasks.batching import VisitBatch, collate_visits, pad_sets
from medrec_bench.tasks.protocols import Sample

__all__ = ["LeaderStudent", "MaskedBlockPool", "StudentBatch", "StudentNet", "StudentOutput", "TrainingHeads",
           "UnifiedVocabulary", "alignment_loss", "distillation_loss"]

TEACHER = "leader_t"  #: the registry name of the model whose features the student distils


@dataclass(frozen=True)
class UnifiedVocabulary:
    """Row layout of the shared code embedding: ``[PAD]`` (row 0), then the drugs, the diagnoses, the procedures."""

    n_drugs: int
    n_diagnoses: int
    n_procedures: int

    SPECIALS: ClassVar[tuple[str, ...]] = ("[PAD]",)
    PAD: ClassVar[int] = 0

    @property
    def drug_offset(self) -> int:
        return len(self.SPECIALS)

    @property
    def diagnosis_offset(self) -> int:
        return self.drug_offset + self.n_drugs

    @property
    def procedure_offset(self) -> int:
        return self.diagnosis_offset + self.n_diagnoses

    def __len__(self) -> int:
        return self.procedure_offset + self.n_procedures

    @staticmethod
    def ids(codes: torch.Tensor, mask: torch.Tensor, offset: int) -> torch.Tensor:
        """Per-vocabulary indices long [...] -> unified rows (``offset + index``; ``[PAD]`` where ``mask`` is False)."""
        return torch.where(mask, codes + offset, torch.full_like(codes, UnifiedVocabulary.PAD))


class MaskedBlockPool(nn.Module):
    """One pre-LayerNorm Transformer block (GELU) and a masked mean: float [N, L, d], bool mask [N, L] (True = real)
    -> float [N, d]. Padded positions are neither attended to nor pooled; an all-padding row gives zeros."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.block = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, activation="gelu", batch_first=True,
                                                norm_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.new_zeros(0, x.shape[-1])
        attend = mask.clone()
        attend[:, 0] |= ~mask.any(1)  # an empty row attends to one slot so the softmax is defined; it pools to zero
        h = self.block(x, src_key_padding_mask=~attend)
        weights = mask.unsqueeze(-1).to(h.dtype)
        return (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)


@dataclass
class StudentBatch:
    """The student's inputs: ``visits`` (the last ``max_visits`` visits; the current visit's drugs are never in it).
    Training only: ``teacher`` float [B, H] (the teacher's hidden states of these samples, None without
    distillation) and ``target_drugs`` long [B, L] / ``target_mask`` bool [B, L] (the current visit's drug indices,
    for the alignment loss)."""

    visits: VisitBatch
    teacher: torch.Tensor | None = None
    target_drugs: torch.Tensor | None = None
    target_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "StudentBatch":
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return StudentBatch(self.visits.to(device), move(self.teacher), move(self.target_drugs),
                            move(self.target_mask))


@dataclass
class StudentOutput:
    """``logits`` float [B, |M|]; ``hidden`` float [B, hidden_dim] (the head's first Linear, the distilled state);
    ``profile`` float [B, d] (the pseudo-medication record: the profile vector, or the learned vector)."""

    logits: torch.Tensor
    hidden: torch.Tensor
    profile: torch.Tensor


class StudentNet(nn.Module):
    """The deployed student (see the module docstring): :class:`VisitBatch` -> :class:`StudentOutput`."""

    def __init__(self, vocab: UnifiedVocabulary, profile_sizes: Sequence[int], *, dim: int, heads: int,
                 ffn_dim: int, hidden_dim: int, dropout: float, use_profile: bool) -> None:
        super().__init__()
        self.vocab = vocab
        self.embedding = nn.Embedding(len(vocab), dim, padding_idx=vocab.PAD)
        self.diagnosis_set, self.procedure_set, self.drug_set = (
            MaskedBlockPool(dim, heads, ffn_dim, dropout) for _ in range(3))
        self.visits = MaskedBlockPool(dim, heads, ffn_dim, dropout)
        self.use_profile = use_profile
        if use_profile:
            if not profile_sizes:
                raise ValueError("the LEADER student needs profile fields in the cohort (or use_profile=false)")
            self.profile_fields = nn.ModuleList([nn.Embedding(size, dim) for size in profile_sizes])
            self.profile_out = nn.Linear(len(profile_sizes) * dim, dim)
        else:
            self.no_profile = nn.Parameter(torch.randn(dim) * 0.02)
        self.head_in = nn.Sequential(nn.ReLU(), nn.Linear(3 * dim, hidden_dim))
        self.head_out = nn.Sequential(nn.ReLU(), nn.Linear(hidden_dim, vocab.n_drugs))

    def profile_vector(self, profile: torch.Tensor) -> torch.Tensor:
        """long [B, F] profile indices -> float [B, d] (the learned vector, repeated, with ``use_profile=False``)."""
        if not self.use_profile:
            return self.no_profile.expand(profile.shape[0], -1)
        parts = [table(profile[:, k]) for k, table in enumerate(self.profile_fields)]
        return self.profile_out(torch.cat(parts, dim=1))

    def encode_sets(self, encoder: MaskedBlockPool, codes: torch.Tensor, mask: torch.Tensor, offset: int,
                    rows: torch.Tensor) -> torch.Tensor:
        """codes long [B, V, L] (per-vocabulary indices), mask bool [B, V, L], rows bool [B, V] (the sets to encode)
        -> float [B, V, d], zeros where ``rows`` is False. Only the selected sets run through the encoder."""
        out = self.embedding.weight.new_zeros(*rows.shape, self.embedding.embedding_dim)
        ids = self.vocab.ids(codes[rows], mask[rows], offset)
        out[rows] = encoder(self.embedding(ids), mask[rows])
        return out

    def drug_set_vector(self, drugs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """long [B, L] drug indices (of ``vocab``'s drugs), mask bool [B, L] -> float [B, d]: shared embeddings ->
        drug set encoder -> mean pool."""
        return self.drug_set(self.embedding(self.vocab.ids(drugs, mask, self.vocab.drug_offset)), mask)

    def forward(self, batch: VisitBatch) -> StudentOutput:
        v = self.vocab
        valid = batch.visit_mask  # [B, V], left-aligned, the current visit at n_visits - 1
        dx = self.encode_sets(self.diagnosis_set, batch.diagnoses, batch.diagnoses_mask, v.diagnosis_offset, valid)
        px = self.encode_sets(self.procedure_set, batch.procedures, batch.procedures_mask, v.procedure_offset, valid)
        # drug stream: position 0 the pseudo-record, position t the drugs of visit t - 1 (valid iff visit t is)
        history = valid[:, 1:]
        previous = self.encode_sets(self.drug_set, batch.drugs[:, :-1], batch.drugs_mask[:, :-1], v.drug_offset,
                                    history)
        profile = self.profile_vector(batch.profile)
        rx = torch.cat([profile.unsqueeze(1), previous], dim=1)
        patient = torch.cat([self.visits(dx, valid), self.visits(px, valid), self.visits(rx, valid)], dim=1)
        hidden = self.head_in(patient)
        return StudentOutput(self.head_out(hidden), hidden, profile)


class TrainingHeads(nn.Module):
    """The training-only projections (never saved, never used to predict): ``kd`` Linear(hidden_dim -> teacher
    hidden) (None without distillation); ``profile`` and ``drugs`` Linear(d -> d) for the alignment loss."""

    def __init__(self, dim: int, hidden_dim: int, teacher_dim: int | None) -> None:
        super().__init__()
        self.kd = nn.Linear(hidden_dim, teacher_dim) if teacher_dim else None
        self.profile = nn.Linear(dim, dim)
        self.drugs = nn.Linear(dim, dim)


def distillation_loss(projected: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the projected student states and the teacher's hidden states (float [B, H] each)."""
    return nn.functional.mse_loss(projected, teacher.to(projected.dtype))


def alignment_loss(profile: torch.Tensor, drugs: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives: float [B, d] profile and drug-set projections, row i of each the
    same sample; logits = cosine similarity / ``tau``; the mean of the profile->drugs and drugs->profile
    cross-entropies."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, not {tau}")
    logits = nn.functional.normalize(profile, dim=1) @ nn.functional.normalize(drugs, dim=1).t() / tau
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.t(), labels))


class LeaderStudent(TorchRecommender):
    """LEADER(S): the distilled, profile-aligned student (see the module docstring).

    Units: ``emb_dim`` / ``ffn_dim`` / ``hidden_dim`` features; ``max_visits`` visits (the current one included);
    ``tau`` the InfoNCE temperature; ``alpha`` / ``align_weight`` loss weights (0 switches a loss off; ``alpha`` 0
    never asks the teacher for anything). ``use_profile=False``: a learned vector instead of the profile (then
    ``align_weight`` must be 0: there is no profile to align).
    """

    default_threshold: ClassVar[float] = 0.3
    test_params: ClassVar[dict[str, Any]] = {"epochs": 1, "emb_dim": 16, "ffn_dim": 32, "hidden_dim": 32,
                                             "batch_size": 64}

    def __init__(self, *, emb_dim: int = 64, heads: int = 4, ffn_dim: int = 300, hidden_dim: int = 128,
                 dropout: float = 0.1, max_visits: int = 10, use_profile: bool = True, alpha: float = 0.4,
                 align_weight: float = 0.005, tau: float = 0.1, epochs: int = 100, batch_size: int = 32,
                 lr: float = 5e-4, weight_decay: float = 0.0, patience: int = 10, seed: int | None = None) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                         seed=seed)
        if max_visits < 1:
            raise ValueError(f"max_visits must be >= 1 (the current visit), not {max_visits}")
        if alpha < 0 or align_weight < 0:
            raise ValueError(f"alpha ({alpha}) and align_weight ({align_weight}) must be >= 0")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, not {tau}")
        if align_weight and not use_profile:
            raise ValueError("align_weight > 0 needs use_profile=true (there is no profile to align)")
        self.emb_dim = emb_dim
        self.heads = heads
        self.ffn_dim = ffn_dim
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.max_visits = max_visits
        self.use_profile = use_profile
        self.alpha = alpha
        self.align_weight = align_weight
        self.tau = tau
        self.training_heads: TrainingHeads | None = None
        self._teacher_rows: dict[tuple[str, str], int] = {}
        self._teacher_features: torch.Tensor | None = None
        self._epoch_terms: dict[str, list[float]] = {}
        self.last_terms: dict[str, float] = {}  #: mean of each loss term over the last epoch

    # --- the network -------------------------------------------------------------------------------------------------
    def build(self, ctx: Context) -> nn.Module:
        vocab = UnifiedVocabulary(ctx.n_drugs, len(ctx.vocab.diagnoses), len(ctx.vocab.procedures))
        sizes = [len(ctx.vocab.profile[f]) for f in ctx.profile_fields]
        return StudentNet(vocab, sizes, dim=self.emb_dim, heads=self.heads, ffn_dim=self.ffn_dim,
                          hidden_dim=self.hidden_dim, dropout=self.dropout, use_profile=self.use_profile)

    def teacher_features(self, train: Sequence[Sample], ctx: Context) -> np.ndarray:
        """float16 [len(train), H]: the fitted teacher's hidden states of the training samples (its disk cache)."""
        artifact = ctx.artifacts.get(TEACHER)
        if artifact is None:
            raise ValueError(f"alpha > 0 needs the fitted {TEACHER} in ctx.artifacts (registry requires: "
                             f"[{TEACHER}]), or alpha=0")
        return artifact["model"].features(list(train))

    def before_training(self, train: Sequence[Sample], val: Sequence[Sample]) -> None:
        """Teacher features of the training samples (``alpha`` > 0 only) and the training-only heads."""
        assert self.ctx is not None
        self._teacher_rows, self._teacher_features = {}, None
        teacher_dim = None
        if self.alpha > 0:
            features = self.teacher_features(train, self.ctx)
            self._teacher_features = torch.from_numpy(np.asarray(features, dtype=np.float32))
            self._teacher_rows = {(s.patient_id, s.visit_id): i for i, s in enumerate(train)}
            teacher_dim = self._teacher_features.shape[1]
        self.training_heads = TrainingHeads(self.emb_dim, self.hidden_dim, teacher_dim).to(self.ctx.device)

    def make_optimizer(self) -> torch.optim.Optimizer:
        assert self.module is not None and self.training_heads is not None
        params = list(self.module.parameters()) + list(self.training_heads.parameters())
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    # --- inputs ------------------------------------------------------------------------------------------------------
    def make_batch(self, samples: Sequence[Sample], ctx: Context) -> StudentBatch:
        """The visits of ``samples``; while the module trains, also their teacher states and target drug sets."""
        visits = collate_visits(samples, len(ctx.vocab.diagnoses), len(ctx.vocab.procedures), ctx.n_drugs,
                                ctx.profile_fields, max_history=self.max_visits - 1)
        if self.module is None or not self.module.training:
            return StudentBatch(visits)
        teacher = None
        if self._teacher_features is not None:
            rows = [self._teacher_rows[(s.patient_id, s.visit_id)] for s in samples]
            teacher = self._teacher_features[rows]
        drugs, mask = pad_sets([s.target for s in samples], pad=0)
        return StudentBatch(visits, teacher, drugs, mask)

    # --- training ----------------------------------------------------------------------------------------------------
    def forward(self, batch: StudentBatch) -> torch.Tensor:
        assert self.module is not None
        return self.module(batch.visits).logits

    def loss_terms(self, batch: StudentBatch, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted loss (``loss``) and its unweighted terms: ``bce``, ``kd`` (``alpha`` > 0), ``align``
        (``align_weight`` > 0)."""
        assert self.module is not None and self.training_heads is not None
        out = self.module(batch.visits)
        terms = {"bce": nn.functional.binary_cross_entropy_with_logits(out.logits, target)}
        total = terms["bce"]
        if self.alpha > 0:
            if batch.teacher is None or self.training_heads.kd is None:
                raise RuntimeError("distillation needs the teacher's states in the training batch")
            terms["kd"] = distillation_loss(self.training_heads.kd(out.hidden), batch.teacher)
            total = total + self.alpha * terms["kd"]
        if self.align_weight > 0:
            if batch.target_drugs is None or batch.target_mask is None:
                raise RuntimeError("profile alignment needs the target drug sets in the training batch")
            drugs = self.module.drug_set_vector(batch.target_drugs, batch.target_mask)
            terms["align"] = alignment_loss(self.training_heads.profile(out.profile), self.training_heads.drugs(drugs),
                                            self.tau)
            total = total + self.align_weight * terms["align"]
        return {"loss": total, **terms}

    def loss(self, batch: Any, target: torch.Tensor, epoch: int) -> torch.Tensor:
        terms = self.loss_terms(batch, target)
        for name, value in terms.items():
            self._epoch_terms.setdefault(name, []).append(float(value.detach()))
        return terms["loss"]

    def on_epoch_end(self, record: dict[str, float]) -> None:
        self.last_terms = {name: float(np.mean(values)) for name, values in self._epoch_terms.items()}
        record.update({f"{name}_loss": value for name, value in self.last_terms.items() if name != "loss"})
        self._epoch_terms = {}

    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "LeaderStudent":
        """The shared loop; afterwards the teacher's states and the training heads are dropped (prediction needs
        neither)."""
        try:
            super().fit(train, val, ctx)
        finally:
            self._teacher_rows, self._teacher_features, self.training_heads = {}, None, None
        return self

    def diagnostics(self) -> dict[str, float | int | str]:
        """The loop's diagnostics plus the last epoch's mean loss terms (``bce_loss``, ``kd_loss``, ``align_loss``)."""
        return {**super().diagnostics(), **{f"{k}_loss": v for k, v in self.last_terms.items() if k != "loss"}}
