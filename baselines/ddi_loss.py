"""The lineage's training losses, batched: BCE + multi-label margin, the DDI penalty, and the DDI-controllable mix.

With logits ``o`` [B, |M|], probabilities ``p = sigmoid(o)`` and the DDI adjacency ``A`` (float [|M|, |M|], symmetric,
zero diagonal):

- prediction loss ``L_p = w_bce * BCE(o, y) + w_margin * multilabel_margin(p, y)``: torch's
  ``multilabel_margin_loss`` on the probabilities with the positive indices padded by -1 (as in GAMENet, SafeDrug and
  MoleRec); both terms are means over the batch.
- DDI penalty ``L_DDI = mean_b mean_{i,j} (p_b p_b^T ⊙ A)_{ij}`` (GAMENet's code) or, with ``reduction="sum"``,
  ``scale * mean_b sum_{i,j} (...)`` (the SafeDrug/MoleRec code: ``0.0005 * sum`` per visit, ``0.0005 * |M|^2`` ~ 8.6
  times the mean for 131 drugs). The scale matters with Adam: steps whose loss is mostly ``L_DDI`` are normalised by
  second-moment estimates dominated by the prediction loss, so a penalty 1/|M|^2 the size of a mean barely moves
  the model (measured on the synthetic cohort: SafeDrug's DDI rate hardly reacts to the target with the mean).
- the DDI rate of a batch: predicted drugs are ``p >= threshold``; interacting predicted pairs / predicted pairs,
  pooled over the batch's samples (``medrec_bench.metrics.ddi_rate`` on the batch). The reference code steps one
  visit at a time, so its "current DDI rate" is one visit's; here it is the mini-batch's.
- the controllable mix (SafeDrug, IJCAI'21, Eq. 10-11): ``L = L_p`` when ``ddi <= target``, else
  ``L = beta * L_p + (1 - beta) * L_DDI`` with

  * ``safedrug``: ``beta = max(0, 1 + (target - ddi) / Kp)`` (the paper; the released code writes ``min(0, ...)``,
    which makes ``beta <= 0`` so the prediction loss gets a non-positive weight and the DDI term a weight >= 1 -- a
    bug we do not copy);
  * ``molerec``: ``beta = min(exp(coef * (1 - ddi / target)), 1)`` (MoleRec, WWW'23, and its code).

  SafeDrug and MoleRec use ``w_bce = 0.95, w_margin = 0.05``.
- GAMENet's rule (AAAI'19) is stochastic instead: above the target, the update uses ``L_DDI`` alone with probability
  ``exp((target - ddi) / T)`` (temperature ``T`` decays each epoch), else ``L_p`` -- see :func:`annealing_probability`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch.nn import functional as F

Rule = Literal["safedrug", "molerec"]


def margin_targets(target: torch.Tensor) -> torch.Tensor:
    """Multi-hot float [B, |M|] -> long [B, |M|]: each row's positive indices first, then -1 padding (the target
    format of ``torch.nn.functional.multilabel_margin_loss``)."""
    idx = torch.arange(target.shape[1], device=target.device).expand_as(target)
    marked = torch.where(target > 0, idx, torch.full_like(idx, -1))
    return marked.sort(dim=1, descending=True).values


def prediction_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float,
                    margin_weight: float) -> torch.Tensor:
    """``bce_weight * BCE-with-logits + margin_weight * multilabel margin on sigmoid`` (scalar, batch mean)."""
    loss = bce_weight * F.binary_cross_entropy_with_logits(logits, target)
    if margin_weight:
        loss = loss + margin_weight * F.multilabel_margin_loss(torch.sigmoid(logits), margin_targets(target))
    return loss


def ddi_penalty(logits: torch.Tensor, adjacency: torch.Tensor, reduction: Literal["mean", "sum"] = "mean",
                scale: float = 1.0) -> torch.Tensor:
    """``scale * mean_b mean_{i,j} p_bi p_bj A_ij`` (``reduction="mean"``) or ``scale * mean_b sum_{i,j} ...``
    (``"sum"``), a scalar, for logits [B, |M|] and adjacency float [|M|, |M|]."""
    p = torch.sigmoid(logits)
    per_sample = ((p @ adjacency) * p).sum(1)
    if reduction == "mean":
        per_sample = per_sample / adjacency.numel()
    elif reduction != "sum":
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    return scale * per_sample.mean()


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


def safedrug_beta(ddi: float, target: float, kp: float) -> float:
    """SafeDrug's weight of the prediction loss: 1 at or below the target, ``max(0, 1 + (target - ddi) / kp)`` above."""
    if ddi <= target:
        return 1.0
    return max(0.0, 1.0 + (target - ddi) / kp)


def molerec_beta(ddi: float, target: float, coef: float) -> float:
    """MoleRec's weight of the prediction loss: ``min(exp(coef * (1 - ddi / target)), 1)``."""
    if ddi <= target:
        return 1.0
    return min(math.exp(coef * (1.0 - ddi / target)), 1.0)


def annealing_probability(ddi: float, target: float, temperature: float) -> float:
    """GAMENet: the probability of an update with the DDI loss, ``exp((target - ddi) / T)`` above the target, else 0."""
    if ddi <= target:
        return 0.0
    return math.exp((target - ddi) / max(temperature, 1e-12))


class DDIControlledLoss:
    """The SafeDrug / MoleRec training loss for one batch.

    ``adjacency`` float [|M|, |M|] (symmetric, zero diagonal); ``target_ddi`` the acceptable DDI rate; ``rule``
    ``"safedrug"`` (uses ``kp``) or ``"molerec"`` (uses ``coef``); ``ddi_reduction`` / ``ddi_scale`` of
    :func:`ddi_penalty` (default: the SafeDrug/MoleRec code's ``0.0005 * sum``); ``threshold`` the decision threshold
    for the batch DDI rate. Calling it returns ``(loss, beta)``.
    """

    def __init__(self, adjacency: torch.Tensor, *, target_ddi: float = 0.06, rule: Rule = "safedrug",
                 kp: float = 0.05, coef: float = 2.5, bce_weight: float = 0.95, margin_weight: float = 0.05,
                 ddi_reduction: Literal["mean", "sum"] = "sum", ddi_scale: float = 5e-4,
                 threshold: float = 0.5) -> None:
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

    def beta(self, ddi: float) -> float:
        if self.rule == "safedrug":
            return safedrug_beta(ddi, self.target_ddi, self.kp)
        return molerec_beta(ddi, self.target_ddi, self.coef)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
        beta = self.beta(batch_ddi_rate(logits, self.adjacency, self.threshold))
        loss = prediction_loss(logits, target, self.bce_weight, self.margin_weight) if beta > 0 else 0.0
        if beta < 1:
            loss = beta * loss + (1 - beta) * ddi_penalty(logits, self.adjacency, self.ddi_reduction, self.ddi_scale)
        return loss, beta
