"""GAMENet, SafeDrug and MoleRec (baselines/gamenet.py, safedrug.py, molerec.py): padding invariance, quality above
``popular`` on the embedded synthetic cohort under both protocols, DDI control, and the MIMIC-III demo end to end.

Trained models are shared through module-scoped fixtures; every training uses few epochs and small settings (checked
with several seeds to hold with a margin), on the one torch thread that tests/conftest.py sets for the suite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.ddi_loss import (DDIControlledLoss, annealed_loss, batch_ddi_rate, ddi_penalty, margin_targets,
                                molerec_beta, prediction_loss, safedrug_beta, visit_ddi_rates)
from baselines.gamenet import GAMENet, cooccurrence_graph
from baselines.molerec import MoleRec
from baselines.popular import Popular
from baselines.safedrug import SafeDrug
from medrec_bench.metrics import ddi_rate, multilabel_scores
from medrec_bench.models import Context
from medrec_bench.tasks import make_splits, targets_matrix

MODELS = {"gamenet": GAMENet, "safedrug": SafeDrug, "molerec": MoleRec}
#: small, fast settings for the synthetic-cohort checks (registry defaults are larger and train longer): smaller
#: embeddings, little dropout, batch 16 and a higher learning rate so that a few epochs suffice; GAMENet's annealing
#: temperature decays faster to match the fewer epochs
FAST = {
    "gamenet": {"epochs": 10, "batch_size": 16, "lr": 5e-3, "emb_dim": 32, "dropout": 0.1, "temperature_decay": 0.5,
                "patience": 0},
    "safedrug": {"epochs": 10, "batch_size": 16, "lr": 5e-3, "emb_dim": 32, "dropout": 0.1, "patience": 0},
    "molerec": {"epochs": 12, "batch_size": 16, "lr": 3e-3, "emb_dim": 32, "gnn_layers": 2, "dropout": 0.1,
                "substructure_encoder": "embedding", "patience": 0},
}
PROTOCOLS = ("visit", "last_visit")


@pytest.fixture(scope="module")
def synthetic(cache_root):
    from medrec_bench.data import load_cohort

    return load_cohort("synthetic", cache=cache_root)


@pytest.fixture(scope="module")
def splits(synthetic):
    return {p: make_splits(synthetic, p, seed=0) for p in PROTOCOLS}


def _scores(model, samples, cohort) -> dict[str, float]:
    prob = model.predict_proba(list(samples))
    truth = targets_matrix(list(samples), len(cohort.vocab.drugs)).numpy()
    s = multilabel_scores(truth, prob, 0.5)
    return {"jaccard": float(s["jaccard"].mean()), "prauc": float(s["prauc"].mean()),
            "ddi": ddi_rate(prob >= 0.5, cohort.ddi)}


@pytest.fixture(scope="module")
def trained(synthetic, splits, tmp_path_factory):
    """(model name, protocol) -> fitted model, trained on first use."""
    work = tmp_path_factory.mktemp("gnn-work")
    cache: dict[tuple[str, str], object] = {}

    def get(name: str, protocol: str, **overrides):
        key = (name, protocol, tuple(sorted(overrides.items())))
        if key not in cache:
            ctx = Context.from_cohort(synthetic, seed=0, work_dir=work)
            model = MODELS[name](**{**FAST[name], **overrides})
            cache[key] = model.fit(list(splits[protocol].train), list(splits[protocol].val), ctx)
        return cache[key]

    return get


# --- unit checks of the shared pieces ----------------------------------------------------------------------------
def test_ddi_loss_pieces():
    target = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert margin_targets(target).tolist() == [[3, 1, -1, -1], [-1, -1, -1, -1]]
    adj = torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    logits = torch.tensor([[5.0, 5.0, 5.0, -5.0], [-5.0, 5.0, -5.0, -5.0]])  # pairs {0,1} (DDI), {0,2}, {1,2}
    assert batch_ddi_rate(logits, adj) == pytest.approx(1 / 3)
    assert visit_ddi_rates(logits, adj).tolist() == pytest.approx([1 / 3, 0.0])  # one drug: no pair, rate 0
    p = torch.sigmoid(logits)
    per_visit = ((p @ adj) * p).sum(1)
    assert ddi_penalty(logits, adj, "mean").tolist() == pytest.approx((per_visit / 16).tolist())
    assert ddi_penalty(logits, adj, "sum", 5e-4).tolist() == pytest.approx((5e-4 * per_visit).tolist())
    betas = safedrug_beta(torch.tensor([0.05, 0.085, 0.5]), 0.06, 0.05)
    assert betas.tolist() == pytest.approx([1.0, 0.5, 0.0])  # never negative (the released code's min(0, .) is)
    betas = molerec_beta(torch.tensor([0.12, 0.01]), 0.06, 2.5)
    assert betas.tolist() == pytest.approx([np.exp(-2.5), 1.0])
    pred = prediction_loss(logits, target, 0.95, 0.05)
    # per visit: visit 0 above the target (beta 2/3), visit 1 at 0 (beta 1); the batch loss is their mean
    loss, beta = DDIControlledLoss(adj, target_ddi=0.0, kp=1.0)(logits, target)
    expected = ((2 / 3) * pred[0] + (1 / 3) * 5e-4 * per_visit[0] + pred[1]) / 2
    assert beta == pytest.approx((2 / 3 + 1) / 2) and loss.item() == pytest.approx(expected.item())
    # pooled: one rate (1/3) and one beta for the whole batch
    loss, beta = DDIControlledLoss(adj, target_ddi=0.0, kp=1.0, rate_scope="batch")(logits, target)
    expected = ((2 / 3) * pred + (1 / 3) * 5e-4 * per_visit).mean()
    assert beta == pytest.approx(2 / 3) and loss.item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="ddi_rate_scope"):
        DDIControlledLoss(adj, rate_scope="patient")


def test_annealed_loss_draws_per_visit():
    adj = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    target = torch.tensor([[1.0, 0.0]] * 4)
    logits = torch.tensor([[5.0, 5.0], [5.0, 5.0], [5.0, -5.0], [5.0, -5.0]])  # visits 0-1 at DDI rate 1, 2-3 at 0
    pred = prediction_loss(logits, target, 0.9, 0.01)
    penalty = ddi_penalty(logits, adj, "sum", 5e-4)
    # a huge temperature makes the draw certain for visits above the target; the others keep the prediction loss
    loss, share = annealed_loss(logits, target, adj, target_ddi=0.5, temperature=1e9, bce_weight=0.9,
                                margin_weight=0.01)
    assert share == 0.5
    assert loss.item() == pytest.approx(((penalty[:2].sum() + pred[2:].sum()) / 4).item())
    loss, share = annealed_loss(logits, target, adj, target_ddi=1.0, temperature=1e9, bce_weight=0.9,
                                margin_weight=0.01)
    assert share == 0.0 and loss.item() == pytest.approx(pred.mean().item())


def test_cooccurrence_graph_uses_visits_once(splits, synthetic):
    train = list(splits["visit"].train)
    adj = cooccurrence_graph(train, len(synthetic.vocab.drugs))
    assert (adj == adj.T).all() and not np.diag(adj).any()
    drugs = train[0].target
    if len(drugs) > 1:
        assert adj[drugs[0], drugs[1]] == 1.0


@pytest.mark.parametrize("name", ["safedrug", "molerec"])
def test_molecule_encoders_are_trained_end_to_end(name, splits, synthetic, tmp_path):
    """The molecule GNN gets gradients through the recommendation loss (SafeDrug's released code keeps it frozen)."""
    model = MODELS[name](**MODELS[name].test_params)
    ctx = Context.from_cohort(synthetic, seed=0, work_dir=tmp_path)
    model.ctx, model.module = ctx, model.build(ctx)
    samples = list(splits["visit"].train)[:8]
    loss = model.loss(model.make_batch(samples, ctx), targets_matrix(samples, ctx.n_drugs).float(), epoch=0)
    loss.backward()
    gnn = model.module.drug_embeddings.gnn
    assert gnn.training and any(True for _ in gnn.parameters())
    for param_name, param in gnn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


# --- (a) padding invariance ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_padding_invariance(name, trained, splits):
    model = trained(name, "visit")
    samples = list(splits["visit"].test)
    by_len = sorted(samples, key=lambda s: (s.n_visits, len(s.diagnoses) + len(s.procedures)))
    short, longest = by_len[:3], by_len[-4:]
    assert longest[-1].n_visits > short[0].n_visits
    alone = np.concatenate([model.predict_proba([s]) for s in short + longest])
    together = model.predict_proba(longest[:2] + short + longest[2:])
    together = together[[2, 3, 4, 0, 1, 5, 6]]
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)


# --- (b) better than `popular` under both protocols -------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", list(MODELS))
def test_beats_popular(name, protocol, trained, splits, synthetic):
    ctx = Context.from_cohort(synthetic, seed=0)
    split = splits[protocol]
    floor = _scores(Popular().fit(split.train, split.val, ctx), split.test, synthetic)
    got = _scores(trained(name, protocol), split.test, synthetic)
    assert got["jaccard"] > floor["jaccard"], (name, protocol, got, floor)
    assert got["prauc"] > floor["prauc"], (name, protocol, got, floor)


# --- (c) DDI control ----------------------------------------------------------------------------------------------
#: GAMENet's annealing keeps its registry temperature decay here, so that DDI steps still happen in later epochs
DDI_SETTINGS = {"gamenet": {"temperature_decay": 0.85}, "safedrug": {"epochs": 5}, "molerec": {"epochs": 3}}


@pytest.mark.parametrize("name", list(DDI_SETTINGS))
def test_lower_ddi_target_lowers_ddi(name, trained, splits, synthetic):
    test = splits["visit"].test
    settings = DDI_SETTINGS[name]
    loose = _scores(trained(name, "visit", target_ddi=0.10, **settings), test, synthetic)
    strict = _scores(trained(name, "visit", target_ddi=0.02, **settings), test, synthetic)
    assert strict["ddi"] < loose["ddi"] - 0.01, (strict, loose)


# --- (d) MIMIC-III demo end to end ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_demo_end_to_end(name, demo_cohort, tmp_path):
    split = make_splits(demo_cohort, "visit", seed=0)
    ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path)
    model = MODELS[name](**{**MODELS[name].test_params, "epochs": 2}).fit(list(split.train), list(split.val), ctx)
    got = _scores(model, split.test, demo_cohort)
    assert all(np.isfinite(v) for v in got.values())
    assert len(model.history) == 2
