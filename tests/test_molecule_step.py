"""The molecule encoders' own message passing (baselines/encoders.py ``MolecularGraphs``, MoleRec's
``EdgeGINConv``, SafeDrug's MPNN) computes what the PyG formulation they replaced computes: the same loss and
gradients (1e-6) on a fixed batch, for the whole MoleRec and SafeDrug networks with dropout off; and the dropout
helper keeps the distribution of ``F.dropout``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch_geometric.nn import GINEConv, SimpleConv, global_add_pool, global_mean_pool

from baselines.ddi_loss import prediction_loss
from baselines.encoders import average_per_drug, dropout
from baselines.molerec import MoleRec, own_substructures
from baselines.safedrug import SafeDrug
from medrec_bench.models import Context
from medrec_bench.tasks import make_splits, targets_matrix


def pyg_gin(gin, graphs):
    """MoleRec's GIN as torch_geometric's GINEConv and global_mean_pool compute it, with ``gin``'s parameters."""
    h = gin.atoms(graphs.atom_types)[graphs.atom_index]
    last = len(gin.convs) - 1
    for k, (conv, norm, bonds) in enumerate(zip(gin.convs, gin.norms, gin.bonds)):
        reference = GINEConv(torch.nn.Identity(), train_eps=True)  # its constructor would re-initialise conv.nn
        reference.nn, reference.eps = conv.nn, conv.eps
        h = norm(reference(h, graphs.edge_index, bonds(graphs.bond_types)[graphs.bond_index]))
        if k < last:
            h = torch.relu(h)
    return global_mean_pool(h, graphs.batch, size=graphs.n_graphs)


def pyg_molerec(net, batch):
    """MoleRecNet.forward with the PyG GINs and the per-call substructure gather it used before."""
    query = net.encoder(batch).current
    relevance = torch.sigmoid(net.relevance(query))
    enc = net.drug_embeddings
    drugs = average_per_drug(pyg_gin(enc.gnn, enc.graphs), enc.projection, enc.has_molecule, enc.fallback)
    subs = net.set_attention(torch.cat([pyg_gin(net.substructure_gnn, net.substructures), net.extra_substructures]))
    index, valid = own_substructures(net.substructure_mask)
    logits = (net.q_proj(drugs).unsqueeze(1) * net.k_proj(subs)[index]).sum(-1) / math.sqrt(drugs.shape[1])
    attention = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)
    weights = attention.unsqueeze(0) * relevance[:, index]
    return net.score(torch.einsum("bmk,mkd->bmd", weights, subs[index])).squeeze(-1)


def pyg_safedrug(net, batch):
    """SafeDrugNet.forward with torch_geometric's SimpleConv and global_add_pool in the MPNN."""
    query = net.encoder(batch).current
    enc, mpnn = net.drug_embeddings, net.drug_embeddings.gnn
    h = mpnn.atoms(enc.graphs.atom_types)[enc.graphs.atom_index]
    for linear in mpnn.linears:
        h = SimpleConv(aggr="sum", combine_root="sum")(torch.relu(linear(h)), enc.graphs.edge_index)
    molecules = global_add_pool(h, enc.graphs.batch, size=enc.graphs.n_graphs)
    drugs = average_per_drug(molecules, enc.projection, enc.has_molecule, enc.fallback)
    match = torch.sigmoid(query @ drugs.t())
    weights = torch.sigmoid(net.substructure_weights(query))
    return (weights @ (net.local_out * net.substructure_mask.t())) * net.global_norm(match + net.global_out(match))


def loss_and_gradients(net, forward, batch, target):
    net.zero_grad(set_to_none=True)
    loss = prediction_loss(forward(net, batch), target, 0.95, 0.05).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("cls, reference", [(MoleRec, pyg_molerec), (SafeDrug, pyg_safedrug)])
def test_same_loss_and_gradients_as_pyg(cls, reference, demo_cohort, tmp_path):
    ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path)
    samples = list(make_splits(demo_cohort, "visit", seed=0).train)[:8]
    model = cls(emb_dim=32, dropout=0.0, seed=0)
    model.ctx, model.module = ctx, model.build(ctx)
    net = model.module.train()  # BatchNorm on batch statistics; no dropout
    batch, target = model.make_batch(samples, ctx), targets_matrix(samples, ctx.n_drugs).float()
    loss, grads = loss_and_gradients(net, lambda n, b: n(b), batch, target)
    ref_loss, ref_grads = loss_and_gradients(net, reference, batch, target)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-6, rtol=0, msg=lambda m: f"{name}: {m}")


def test_gin_state_loads_into_pyg_names():
    """EdgeGINConv keeps GINEConv's parameter names, so states saved before load unchanged."""
    from baselines.molerec import EdgeGINConv

    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4))
    reference = GINEConv(torch.nn.Sequential(torch.nn.Linear(4, 4)), train_eps=True)
    assert list(EdgeGINConv(mlp).state_dict()) == list(reference.state_dict())


def test_dropout_keeps_the_distribution():
    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    out = dropout(x, 0.7, training=True)
    kept = out != 0
    assert abs(float(kept.float().mean()) - 0.3) < 0.005
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.3))
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.3)
    assert dropout(x, 0.7, training=False) is x and dropout(x, 0.0, training=True) is x
    assert not dropout(x, 1.0, training=True).any()
