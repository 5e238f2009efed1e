"""The lineage's training losses, batched: BCE + multi-label margin, the DDI penalty, and the DDI-controllable mix.

With logits ``o`` [B, |M|], probabilities ``p = sigmoid(o)`` and the DDI adjacency ``A`` (float [|M|, |M|], symmetric,
zero diagonal):

- prediction loss ``L_p = w_bce * BCE(o, y) + w_margin * multilabel_margin(p, y)`` per visit: BCE averaged over the
  drugs and torch's ``multilabel_margin_loss`` on the probabilities with the positive indices padded by -1 (as in
  GAMENet, SafeDrug and MoleRec);
- DDI penalty per visit ``L_DDI = scale * sum_{i,j} (p p^T ⊙ A)_{ij}`` (the papers sum; SafeDrug's and MoleRec's code
  use ``scale = 0.0005``) or, with ``reduction="mean"``, ``scale * mean_{i,j} (...)`` (GAMENet's code). The scale
  matters with Adam: steps whose loss is mostly ``L_DDI`` are normalised by second-moment estimates dominated by the
  prediction loss, so a penalty 1/|M|^2 the size of the sum barely moves the model (measured on the synthetic
  cohort: the DDI rate hardly reacts to the target with the mean);
- the DDI rate of a visit: its predicted drugs are ``p >= threshold``; interacting predicted pairs / predicted pairs
  (0 with fewer than two drugs), as ``medrec_bench.metrics.per_sample_ddi``;
- the controllable mix (SafeDrug, IJCAI'21, Eq. 10-11), per visit: ``L = L_p`` when the visit's ``ddi <= target``,
  else ``L = beta * L_p + (1 - beta) * L_DDI`` with

  * ``safedrug``: ``beta = max(0, 1 + (target - ddi) / Kp)`` (the paper; the released code writes ``min(0, ...)``,
    which makes ``beta <= 0`` so the prediction loss gets a non-positive weight and the DDI term a weight >= 1 -- a
    bug we do not copy);
  * ``molerec``: ``beta = min(exp(coef * (1 - ddi / target)), 1)`` (MoleRec, WWW'23, and its code);

  a batch's loss is the mean of its visits' losses, so a mini-batch gradient is the average of the gradients the
  reference code takes one visit at a time (``rate_scope="batch"`` instead uses one pooled DDI rate and one beta
  per batch). SafeDrug and MoleRec use ``w_bce = 0.95, w_margin = 0.05``.
- GAMENet's rule (AAAI'19) is stochastic instead: for a visit above the target, the loss is ``L_DDI`` alone with
  probability ``exp((target - ddi) / T)`` (temperature ``T`` decays each epoch), else ``L_p`` -- see
  :func:`annealing_probability` and :func:`annealed_loss`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch.nn import functional as F

from medrec_bench.registry import Range

Rule = Literal["safedrug", "molerec"]
Scope = Literal["visit", "batch"]


def margin_targets(target: torch.Tensor) -> torch.Tensor:
    """Multi-hot float [B, |M|] -> long [B, |M|]: each row's positive indices first, then -1 padding (the target
    format of ``torch.nn.functional.multilabel_margin_loss``)."""
    idx = torch.arange(target.shape[1], device=target.device).expand_as(target)
    marked = torch.where(target > 0, idx, torch.full_like(idx, -1))
    return marked.sort(dim=1, descending=True).values


def prediction_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float,
                    margin_weight: float) -> torch.Tensor:
    """float [B]: ``bce_weight * BCE-with-logits (mean over drugs) + margin_weight * multilabel margin on sigmoid``
    of each visit."""
    loss = bce_weight * F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
    if margin_weight:
        loss = loss + margin_weight * F.multilabel_margin_loss(torch.sigmoid(logits), margin_targets(target),
                                                               reduction="none")
    return loss


def ddi_penalty(logits: torch.Tensor, adjacency: torch.Tensor, reduction: Literal["mean", "sum"] = "sum",
                scale: float = 1.0) -> torch.Tensor:
    """float [B]: ``scale * sum_{i,j} p_i p_j A_ij`` of each visit (``reduction="sum"``) or ``scale * mean_{i,j} ...``
    (``"mean"``), for logits [B, |M|] and adjacency float [|M|, |M|]."""
    p = torch.sigmoid(logits)
    per_sample = ((p @ adjacency) * p).sum(1)
    if reduction == "mean":
        per_sample = per_sample / adjacency.numel()
    elif reduction != "sum":
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    return scale * per_sample


@torch.no_grad()
def visit_ddi_rates(logits: torch.Tensor, adjacency: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """float [B]: each visit's DDI rate of its thresholded predictions (0.0 with fewer than two predicted drugs)."""
    pred = (torch.sigmoid(logits) >= threshold).to(adjacency.dtype)
    n = pred.sum(1)
    pairs = n * (n - 1) / 2
    interacting = ((pred @ adjacency) * pred).sum(1) / 2
    return torch.where(pairs > 0, interacting / pairs.clamp(min=1), torch.zeros_like(pairs))


@torch.no_grad()
def batch_ddi_rate(logits: torch.Tensor, adjacency: torch.Tensor, threshold: float = 0.5) -> float:
    """Pooled DDI rate of the thresholded predictions of a batch (0.0 when no sample predicts two drugs)."""
    pred = (torch.sigmoid(logits) >= threshold).to(adjacency.dtype)
    n = pred.sum(1)
    pairs = float((n * (n - 1) / 2).sum())
    if pairs == 0:
        return 0.0
    interacting = float(((pred @ adjacency) * pred).sum()) / 2
    return interacting / pairs


def safedrug_beta(ddi: torch.Tensor, target: float, kp: float) -> torch.Tensor:
    """SafeDrug's weight of the prediction loss, elementwise: 1 at or below the target, ``max(0, 1 + (target - ddi)
    / kp)`` above."""
    return torch.where(ddi <= target, torch.ones_like(ddi), (1.0 + (target - ddi) / kp).clamp(min=0.0))


def molerec_beta(ddi: torch.Tensor, target: float, coef: float) -> torch.Tensor:
    """MoleRec's weight of the prediction loss, elementwise: ``min(exp(coef * (1 - ddi / target)), 1)``."""
    return torch.where(ddi <= target, torch.ones_like(ddi), torch.exp(coef * (1.0 - ddi / target)).clamp(max=1.0))


def annealing_probability(ddi: torch.Tensor, target: float, temperature: float) -> torch.Tensor:
    """GAMENet, elementwise: the probability of a DDI-loss update, ``exp((target - ddi) / T)`` above the target,
    else 0."""
    p = torch.exp((target - ddi) / max(temperature, 1e-12))
    return torch.where(ddi > target, p, torch.zeros_like(p))


def check_rate_scope(scope: str) -> Scope:
    """``scope`` if it is ``"visit"`` or ``"batch"``, else a ValueError naming it (for the models' ``__init__``)."""
    if scope not in ("visit", "batch"):
        raise ValueError(f"ddi_rate_scope must be 'visit' or 'batch', not {scope!r}")
    return scope  # type: ignore[return-value]


def ddi_rates(logits: torch.Tensor, adjacency: torch.Tensor, threshold: float, scope: Scope) -> torch.Tensor:
    """float [B]: the DDI rate that drives the loss of each visit: its own (``"visit"``) or the batch's pooled rate
    repeated (``"batch"``)."""
    if scope == "visit":
        return visit_ddi_rates(logits, adjacency, threshold)
    if scope == "batch":
        return logits.new_full((logits.shape[0],), batch_ddi_rate(logits, adjacency, threshold))
    raise ValueError(f"ddi_rate_scope must be 'visit' or 'batch', not {scope!r}")


class DDIControlledLoss:
    """The SafeDrug / MoleRec training loss for one batch.

    ``adjacency`` float [|M|, |M|] (symmetric, zero diagonal); ``target_ddi`` the acceptable DDI rate; ``rule``
    ``"safedrug"`` (uses ``kp``) or ``"molerec"`` (uses ``coef``); ``ddi_reduction`` / ``ddi_scale`` of
    :func:`ddi_penalty` (default: the SafeDrug/MoleRec code's ``0.0005 * sum``); ``threshold`` the decision threshold
    for the DDI rates; ``rate_scope`` ``"visit"`` (each visit's own rate and beta, as the one-visit-per-step
    reference) or ``"batch"`` (one pooled rate per batch). Calling it returns ``(loss, mean beta)``.
    """

    def __init__(self, adjacency: torch.Tensor, *, target_ddi: float = 0.06, rule: Rule = "safedrug",
                 kp: float = 0.05, coef: float = 2.5, bce_weight: float = 0.95, margin_weight: float = 0.05,
                 ddi_reduction: Literal["mean", "sum"] = "sum", ddi_scale: float = 5e-4,
                 threshold: float = 0.5, rate_scope: Scope = "visit") -> None:
        if rule not in ("safedrug", "molerec"):
            raise ValueError(f"rule must be 'safedrug' or 'molerec', not {rule!r}")
        self.adjacency = adjacency
        self.target_ddi = target_ddi
        self.rule = rule
        self.kp = kp
        self.coef = coef
        self.bce_weight = bce_weight
        self.margin_weight = margin_weight
        self.ddi_reduction = ddi_reduction
        self.ddi_scale = ddi_scale
        self.threshold = threshold
        self.rate_scope = check_rate_scope(rate_scope)

    def beta(self, ddi: torch.Tensor) -> torch.Tensor:
        """float [B]: the prediction-loss weight for DDI rates ``ddi`` [B]."""
        if self.rule == "safedrug":
            return safedrug_beta(ddi, self.target_ddi, self.kp)
        return molerec_beta(ddi, self.target_ddi, self.coef)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
        beta = self.beta(ddi_rates(logits, self.adjacency, self.threshold, self.rate_scope))
        loss = beta * prediction_loss(logits, target, self.bce_weight, self.margin_weight)
        if bool((beta < 1).any()):
            loss = loss + (1 - beta) * ddi_penalty(logits, self.adjacency, self.ddi_reduction, self.ddi_scale)
        return loss.mean(), float(beta.mean())


def annealed_loss(logits: torch.Tensor, target: torch.Tensor, adjacency: torch.Tensor, *, target_ddi: float,
                  temperature: float, bce_weight: float, margin_weight: float,
                  ddi_reduction: Literal["mean", "sum"] = "sum", ddi_scale: float = 5e-4, threshold: float = 0.5,
                  rate_scope: Scope = "visit", generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """GAMENet's annealed loss for one batch: each visit (or, with ``rate_scope="batch"``, the whole batch) above
    ``target_ddi`` takes ``L_DDI`` alone with probability ``exp((target_ddi - ddi) / temperature)``, else ``L_p``.
    Returns ``(loss, share of visits that took the DDI loss)``; the draws use torch's RNG (or ``generator``)."""
    prob = annealing_probability(ddi_rates(logits, adjacency, threshold, rate_scope), target_ddi, temperature)
    u = torch.rand((1,) if rate_scope == "batch" else prob.shape, generator=generator).to(prob.device)
    use_ddi = u.expand_as(prob) < prob
    loss = prediction_loss(logits, target, bce_weight, margin_weight)
    if bool(use_ddi.any()):
        loss = torch.where(use_ddi, ddi_penalty(logits, adjacency, ddi_reduction, ddi_scale), loss)
    return loss.mean(), float(use_ddi.float().mean())


class DDILossLogging:
    """Mixin for a :class:`~medrec_bench.models.TorchRecommender` whose loss reports one number per batch (the mean
    beta, or the share of DDI updates): :meth:`log_ddi_weight` collects it and ``on_epoch_end`` adds the epoch mean
    to the history record under :attr:`ddi_record_key`."""

    ddi_record_key: str = "mean_beta"
    param_ranges: ClassVar[dict[str, Range]] = {"target_ddi": Range(ge=0, le=1), "bce_weight": Range(ge=0),
                                                "margin_weight": Range(ge=0), "ddi_scale": Range(gt=0),
                                                "kp": Range(gt=0), "coef": Range(gt=0)}

    def log_ddi_weight(self, value: float) -> None:
        self.__dict__.setdefault("_ddi_weights", []).append(value)

    def on_epoch_end(self, record: dict[str, float]) -> None:
        values = self.__dict__.pop("_ddi_weights", [])
        record[self.ddi_record_key] = sum(values) / max(len(values), 1)


class DDIControlledTraining(DDILossLogging):
    """Mixin for a :class:`~medrec_bench.models.TorchRecommender` trained with :class:`DDIControlledLoss` (SafeDrug,
    MoleRec): reads the attributes ``target_ddi``, ``bce_weight``, ``margin_weight``, ``ddi_scale``,
    ``ddi_rate_scope``, ``default_threshold`` and ``module.ddi_adj``, and the rule and its parameter from
    :meth:`ddi_rule`; logs the batch's mean beta as the history's ``mean_beta`` (1 = DDI penalty never active)."""

    target_ddi: float
    bce_weight: float
    margin_weight: float
    ddi_scale: float
    ddi_rate_scope: Scope
    default_threshold: float
    module: Any
    forward: Any

    def ddi_rule(self) -> dict[str, Any]:
        """``{"rule": ..., <its parameter>: ...}`` for :class:`DDIControlledLoss`."""
        raise NotImplementedError

    def loss(self, batch: Any, target: torch.Tensor, epoch: int) -> torch.Tensor:
        criterion = DDIControlledLoss(self.module.ddi_adj, target_ddi=self.target_ddi, bce_weight=self.bce_weight,
                                      margin_weight=self.margin_weight, ddi_reduction="sum",
                                      ddi_scale=self.ddi_scale, threshold=self.default_threshold,
                                      rate_scope=self.ddi_rate_scope, **self.ddi_rule())
        loss, beta = criterion(self.forward(batch), target)
        self.log_ddi_weight(beta)
        return loss
