"""A padded mini-batch trains GAMENet, SafeDrug and MoleRec as the reference code's one-visit-per-step loop does.

With dropout off and everything else in training mode, the gradient of a batch's mean loss over B padded visits
equals the mean of the B gradients taken one visit at a time (every parameter, to 1e-5), DDI term included with
``ddi_rate_scope="visit"``. The batch mixes visits above and below the DDI target, so both branches of each DDI rule
run in the same batch.

Layers that could break it and why they do not: the GRUs are causal over left-aligned visits, so padded visits
never reach the current visit's query; code pooling, the GAMENet history attention and the SafeDrug LayerNorm work
per visit under masks; the graph and molecule encoders (GCN memory, MPNN, MoleRec's GINs with BatchNorm in training
mode) run over the fixed drug graphs and molecules, the same input for every batch, so their batch statistics do not
depend on which or how many visits the batch holds (BatchNorm normalises over atoms, never over visits).
"""

from __future__ import annotations

import pytest
import torch

from baselines.ddi_loss import visit_ddi_rates
from baselines.gamenet import GAMENet
from baselines.molerec import MoleRec
from baselines.safedrug import SafeDrug
from medrec_bench.models import Context
from medrec_bench.tasks import make_splits, targets_matrix

#: small networks, dropout off; GAMENet's huge temperature makes its annealing draw certain (exp(~0) = 1 in float32),
#: so each visit above the target takes the DDI loss and the draws do not enter the comparison
MODELS = {
    "gamenet": (GAMENet, {"emb_dim": 16, "dropout": 0.0, "gcn_dropout": 0.0, "temperature": 1e9}),
    "safedrug": (SafeDrug, {"emb_dim": 16, "dropout": 0.0}),
    "molerec": (MoleRec, {"emb_dim": 16, "gnn_layers": 2, "dropout": 0.0}),
}
#: a short warm-up fit (epochs, batch size, lr): at initialisation the visits predict (nearly) the same drugs, so
#: their DDI rates would not straddle a target
WARM_UP = {"gamenet": (1, 16, 3e-3), "safedrug": (1, 8, 1e-3), "molerec": (3, 4, 5e-3)}
N_VISITS = 6


@pytest.fixture(scope="module")
def split(demo_cohort):
    return make_splits(demo_cohort, "visit", seed=0)


def padded_batch(samples, rates: torch.Tensor, target_ddi: float) -> list:
    """``N_VISITS`` samples with visits above and at or below ``target_ddi`` (``rates`` [len(samples)]: their DDI
    rates), then different history lengths and long code sets, so that the batch pads visits and codes."""
    above = [s for s, r in zip(samples, rates.tolist()) if r > target_ddi]
    below = [s for s, r in zip(samples, rates.tolist()) if r <= target_ddi]
    chosen = above[:1] + below[:1]
    for s in sorted(samples, key=lambda s: -(len(s.diagnoses) + len(s.procedures))):
        if len(chosen) < N_VISITS and s.n_visits not in {c.n_visits for c in chosen}:
            chosen.append(s)
    return chosen + [s for s in samples if s not in chosen][:N_VISITS - len(chosen)]


def gradients(model, samples, ctx) -> dict[str, torch.Tensor]:
    """Gradient of ``model.loss`` (its mean over ``samples``) for every parameter (zeros where none flows)."""
    model.module.zero_grad(set_to_none=True)
    target = targets_matrix(samples, ctx.n_drugs).float()
    model.loss(model.make_batch(samples, ctx), target, epoch=0).backward()
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for n, p in model.module.named_parameters()}


@pytest.mark.parametrize("name", list(MODELS))
def test_batch_gradient_is_mean_of_single_visit_gradients(name, demo_cohort, split, tmp_path):
    cls, params = MODELS[name]
    ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path)
    # the warm-up fit, then a DDI target between the training visits' DDI rates and a batch on both sides of it
    epochs, batch_size, lr = WARM_UP[name]
    model = cls(**params, epochs=epochs, batch_size=batch_size, lr=lr, ddi_rate_scope="visit")
    train = list(split.train)
    model.fit(train, [], ctx).module.train()
    with torch.no_grad():
        rates = visit_ddi_rates(model.module(model.make_batch(train, ctx)), model.module.ddi_adj)
    model.target_ddi = float(rates.min() + rates.max()) / 2
    assert float(rates.max()) > float(rates.min()), "the warm-up must give visits different DDI rates"
    samples = padded_batch(train, rates, model.target_ddi)
    assert len({s.n_visits for s in samples}) >= 3, "the batch must pad visits"
    with torch.no_grad():
        batch_rates = visit_ddi_rates(model.module(model.make_batch(samples, ctx)), model.module.ddi_adj)
    assert bool((batch_rates > model.target_ddi).any() & (batch_rates <= model.target_ddi).any()), batch_rates
    batch = gradients(model, samples, ctx)
    singles = [gradients(model, [s], ctx) for s in samples]
    assert any(g.abs().sum() > 0 for g in batch.values())
    for param_name, grad in batch.items():
        mean = torch.stack([g[param_name] for g in singles]).mean(0)
        torch.testing.assert_close(grad, mean, atol=1e-5, rtol=0, msg=lambda m: f"{name} {param_name}: {m}")
