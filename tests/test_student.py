"""The LEADER student (leader/student.py) on the MIMIC-III demo cohort, with the tiny random ``tiny-llama`` teacher
(seconds): the drug stream's pseudo-record shift, no leak of the current visit's drugs, masking, the last N visits,
the unified vocabulary's offsets, the distillation and alignment losses, and prediction without the teacher."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from leader.student import LeaderStudent, StudentBatch, UnifiedVocabulary, alignment_loss
from leader.teacher import LeaderTeacher
from medrec_bench.models import Context, seed_everything
from medrec_bench.tasks import make_splits
from medrec_bench.tasks.batching import targets_matrix

SMALL = {"emb_dim": 16, "ffn_dim": 32, "hidden_dim": 32, "dropout": 0.0}


@pytest.fixture(scope="module")
def splits(demo_cohort):
    return make_splits(demo_cohort, "last_visit", seed=0)


@pytest.fixture(scope="module")
def long_sample(demo_cohort):
    """The last-visit sample of the demo's 14-visit patient."""
    patient = max(demo_cohort.patients, key=lambda p: len(p.visits))
    sample = make_splits(demo_cohort, "last_visit", seed=0)
    found = [s for part in (sample.train, sample.val, sample.test) for s in part if s.patient_id == patient.patient_id]
    assert found and len(found[0].history) >= 10
    return found[0]


@pytest.fixture(scope="module")
def teacher(demo_cohort, splits, tmp_path_factory):
    """A fitted tiny-llama teacher (one epoch)."""
    ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path_factory.mktemp("teacher-work"))
    return LeaderTeacher(**LeaderTeacher.test_params).fit(list(splits.train), [], ctx)


def _prepared(model: LeaderStudent, cohort, train, artifacts=None) -> LeaderStudent:
    """``model`` built and set up for training on ``train`` as ``fit`` does before its first epoch."""
    seed_everything(0)
    model.ctx = Context.from_cohort(cohort, seed=0, artifacts=artifacts or {})
    model.module = model.build(model.ctx)
    model.before_training(train, [])
    model.module.train()
    return model


def _logits(model: LeaderStudent, samples) -> torch.Tensor:
    model.module.eval()
    with torch.no_grad():
        return model.forward(model.make_batch(samples, model.ctx))


# --- the unified vocabulary ------------------------------------------------------------------------------------------
def test_unified_vocabulary_keeps_diagnoses_and_procedures_with_one_code_apart(demo_cohort):
    vocab = demo_cohort.vocab
    v = UnifiedVocabulary(len(vocab.drugs), len(vocab.diagnoses), len(vocab.procedures))
    dx, px = vocab.diagnoses.index("dx9:4011"), vocab.procedures.index("px9:4011")  # both exist in the demo
    mask = torch.tensor([True])
    dx_row = int(v.ids(torch.tensor([dx]), mask, v.diagnosis_offset))
    px_row = int(v.ids(torch.tensor([px]), mask, v.procedure_offset))
    assert dx_row == 1 + len(vocab.drugs) + dx and px_row == 1 + len(vocab.drugs) + len(vocab.diagnoses) + px
    assert len(v) == 1 + len(vocab.drugs) + len(vocab.diagnoses) + len(vocab.procedures)
    assert int(v.ids(torch.tensor([5]), torch.tensor([False]), v.drug_offset)) == UnifiedVocabulary.PAD == 0


def test_drug_ids_are_offset_into_the_unified_vocabulary(demo_cohort, splits):
    model = _prepared(LeaderStudent(**SMALL, alpha=0.0), demo_cohort, list(splits.train))
    net = model.module
    drug = 3
    drugs, mask = torch.tensor([[drug]]), torch.tensor([[True]])
    net.eval()
    before = net.drug_set_vector(drugs, mask).detach().clone()
    with torch.no_grad():  # the rows a wrong offset would read: the raw index, a diagnosis, a procedure
        for row in (drug, net.vocab.diagnosis_offset + drug, net.vocab.procedure_offset + drug):
            net.embedding.weight[row] += 5.0
    torch.testing.assert_close(net.drug_set_vector(drugs, mask), before)
    with torch.no_grad():
        net.embedding.weight[net.vocab.drug_offset + drug] += 5.0
    assert not torch.allclose(net.drug_set_vector(drugs, mask), before)


# --- the inputs -------------------------------------------------------------------------------------------------------
def _drug_stream(model, samples):
    """The drug stream [B, V, d] that reaches the visit encoder (its third call) and the profile vectors [B, d]."""
    seen = []
    hook = model.module.visits.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    try:
        _logits(model, samples)
    finally:
        hook.remove()
    batch = model.make_batch(samples, model.ctx)
    with torch.no_grad():
        profile = model.module.profile_vector(batch.visits.profile)
    return seen[2], profile, batch.visits


def test_drug_stream_holds_the_profile_then_the_previous_visits_drugs(demo_cohort, splits, long_sample):
    model = _prepared(LeaderStudent(**SMALL, alpha=0.0, max_visits=4), demo_cohort, list(splits.train))
    single = next(s for s in splits.test if s.single_visit)
    stream, profile, visits = _drug_stream(model, [long_sample, single])
    torch.testing.assert_close(stream[:, 0], profile)  # visit 1: the pseudo-medication record
    kept = long_sample.history[-3:]  # max_visits 4: three history visits and the current one
    net = model.module
    for t in range(1, 4):  # visit t sees the drugs of visit t - 1
        drugs = torch.tensor([kept[t - 1].drugs])
        with torch.no_grad():
            expected = net.drug_set_vector(drugs, torch.ones_like(drugs, dtype=torch.bool))[0]
        torch.testing.assert_close(stream[0, t], expected)
    assert visits.visit_mask[1].tolist() == [True, False, False, False]  # the single-visit patient: the profile only


def test_single_visit_patients_get_their_profile_as_drug_input(demo_cohort, splits):
    single = next(s for s in splits.test if s.single_visit)
    field = max(single.profile, key=lambda f: len(demo_cohort.vocab.profile[f]))
    changed = (single.profile[field] + 1) % len(demo_cohort.vocab.profile[field])
    other = dataclasses.replace(single, profile={**single.profile, field: changed})
    with_profile = _prepared(LeaderStudent(**SMALL, alpha=0.0), demo_cohort, list(splits.train))
    assert not torch.allclose(_logits(with_profile, [single]), _logits(with_profile, [other]))
    without = _prepared(LeaderStudent(**SMALL, alpha=0.0, align_weight=0.0, use_profile=False), demo_cohort,
                        list(splits.train))
    torch.testing.assert_close(_logits(without, [single]), _logits(without, [other]))


def test_current_visit_drugs_never_reach_the_input(demo_cohort, splits, long_sample):
    model = _prepared(LeaderStudent(**SMALL, alpha=0.0), demo_cohort, list(splits.train))
    samples = [long_sample, *list(splits.test)[:6]]
    n_drugs = len(demo_cohort.vocab.drugs)
    perturbed = [dataclasses.replace(s, target=tuple(sorted(set(range(0, n_drugs, 3)) - set(s.target))))
                 for s in samples]
    torch.testing.assert_close(_logits(model, perturbed), _logits(model, samples))
    # the history's drugs do reach it
    last = long_sample.history[-1]
    changed = dataclasses.replace(long_sample, history=(*long_sample.history[:-1],
                                                        dataclasses.replace(last, drugs=(0, 1, 2))))
    assert not torch.allclose(_logits(model, [changed]), _logits(model, [long_sample]))


def test_padding_is_irrelevant(demo_cohort, splits, long_sample):
    model = _prepared(LeaderStudent(**SMALL, alpha=0.0), demo_cohort, list(splits.train))
    samples = [long_sample, *list(splits.test)[:5]]
    batch = model.make_batch(samples, model.ctx)
    v = batch.visits
    gen = torch.Generator().manual_seed(0)
    garbage = dataclasses.replace(v)
    vocab = demo_cohort.vocab
    for name, size in (("diagnoses", len(vocab.diagnoses)), ("procedures", len(vocab.procedures)),
                       ("drugs", len(vocab.drugs))):
        codes, mask = getattr(v, name), getattr(v, f"{name}_mask")
        noise = torch.randint(0, size, codes.shape, generator=gen)
        setattr(garbage, name, torch.where(mask, codes, noise))
    model.module.eval()
    with torch.no_grad():
        clean = model.forward(batch)
        noisy = model.forward(StudentBatch(garbage))
        alone = torch.cat([model.forward(model.make_batch([s], model.ctx)) for s in samples])
    torch.testing.assert_close(noisy, clean)
    torch.testing.assert_close(alone, clean, atol=1e-5, rtol=0)


def test_the_last_max_visits_visits_are_kept(demo_cohort, splits, long_sample):
    model = _prepared(LeaderStudent(**SMALL, alpha=0.0, max_visits=3), demo_cohort, list(splits.train))
    truncated = dataclasses.replace(long_sample, history=long_sample.history[-2:])
    torch.testing.assert_close(_logits(model, [long_sample]), _logits(model, [truncated]))
    first_kept = dataclasses.replace(long_sample, history=long_sample.history[:2])  # what keeping the first would see
    assert not torch.allclose(_logits(model, [long_sample]), _logits(model, [first_kept]))
    assert model.make_batch([long_sample], model.ctx).visits.visit_mask.shape == (1, 3)


# --- the losses -----------------------------------------------------------------------------------------------------
def test_alignment_loss_known_value_and_tau():
    profile = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    drugs = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    cos = torch.tensor([[1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])
    for tau in (0.1, 1.0):
        rows = -torch.log_softmax(cos / tau, dim=1).diagonal().mean()
        cols = -torch.log_softmax(cos.t() / tau, dim=1).diagonal().mean()
        assert float(alignment_loss(profile, drugs, tau)) == pytest.approx(float(0.5 * (rows + cols)), rel=1e-6)
    assert float(alignment_loss(profile, drugs, 0.1)) != pytest.approx(float(alignment_loss(profile, drugs, 1.0)))


def test_tau_reaches_the_alignment_term(demo_cohort, splits):
    train = list(splits.train)
    model = _prepared(LeaderStudent(**SMALL, alpha=0.0, tau=0.1), demo_cohort, train)
    batch, target = model.make_batch(train[:16], model.ctx), targets_matrix(train[:16], model.ctx.n_drugs).float()
    at_01 = float(model.loss_terms(batch, target)["align"].detach())
    model.tau = 1.0
    at_1 = float(model.loss_terms(batch, target)["align"].detach())
    assert at_01 != pytest.approx(at_1, rel=1e-3)


def _aligned_batch(cohort, train, predictive: bool):
    """16 samples in 4 groups: profile value k of one field (the others 0) with drug set k (``predictive``) or a
    shuffled one."""
    field = max(cohort.vocab.profile, key=lambda f: len(cohort.vocab.profile[f]))
    sets = [(0, 1, 2), (3, 4), (5, 6, 7, 8), (9,)]
    groups = np.repeat(np.arange(4), 4)
    drug_groups = groups if predictive else np.random.default_rng(0).permutation(groups)
    return [dataclasses.replace(s, profile={**dict.fromkeys(s.profile, 0), field: int(g)}, target=sets[int(d)])
            for s, g, d in zip(train[:16], groups, drug_groups)]


def _train_alignment(cohort, train, samples, steps=40):
    model = _prepared(LeaderStudent(**SMALL, alpha=0.0, align_weight=1.0, tau=0.1), cohort, train)
    params = list(model.module.parameters()) + list(model.training_heads.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    target = targets_matrix(samples, model.ctx.n_drugs).float()
    losses = []
    for _ in range(steps):
        loss = model.loss_terms(model.make_batch(samples, model.ctx), target)["align"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_alignment_loss_falls_when_the_profile_predicts_the_drug_set(demo_cohort, splits):
    train = list(splits.train)
    predictive = _train_alignment(demo_cohort, train, _aligned_batch(demo_cohort, train, True))
    shuffled = _train_alignment(demo_cohort, train, _aligned_batch(demo_cohort, train, False))
    assert predictive[-1] < predictive[0] - 0.8
    assert predictive[-1] < math.log(4) + 0.05  # the minimum with 4 equal positives in each row of 16
    assert predictive[-1] < shuffled[-1] - 0.5


def test_kd_off_with_alpha_zero_and_pulls_towards_the_teacher(demo_cohort, splits, teacher):
    train = list(splits.train)
    target = targets_matrix(train[:16], len(demo_cohort.vocab.drugs)).float()
    off = _prepared(LeaderStudent(**SMALL, alpha=0.0), demo_cohort, train)
    terms = off.loss_terms(off.make_batch(train[:16], off.ctx), target)
    assert "kd" not in terms and off.training_heads.kd is None
    expected = terms["bce"] + off.align_weight * terms["align"]
    assert float(terms["loss"].detach()) == pytest.approx(float(expected.detach()))

    on = _prepared(LeaderStudent(**SMALL, alpha=1.0, align_weight=0.0), demo_cohort, train,
                   {"leader_t": {"model": teacher, "dir": None}})
    batch = on.make_batch(train[:16], on.ctx)
    np.testing.assert_allclose(batch.teacher.numpy(), teacher.features(train[:16]).astype(np.float32))
    opt = torch.optim.Adam(list(on.module.parameters()) + list(on.training_heads.parameters()), lr=1e-2)
    distances = []
    for _ in range(30):
        kd = on.loss_terms(batch, target)["kd"]
        opt.zero_grad()
        kd.backward()
        opt.step()
        distances.append(float(kd.detach()))
    assert distances[-1] < 0.5 * distances[0]


# --- fit, predict, the teacher ---------------------------------------------------------------------------------------
def test_teacher_is_asked_for_training_samples_only_and_never_to_predict(demo_cohort, splits, teacher, tmp_path):
    asked = []
    features = teacher.features

    def recording(samples):
        asked.append([(s.patient_id, s.visit_id) for s in samples])
        return features(samples)

    teacher.features = recording
    try:
        ctx = Context.from_cohort(demo_cohort, seed=0, artifacts={"leader_t": {"model": teacher, "dir": None}})
        train, val, test = list(splits.train), list(splits.val), list(splits.test)
        model = LeaderStudent(**SMALL, epochs=2).fit(train, val, ctx)
        assert asked == [[(s.patient_id, s.visit_id) for s in train]]
        probs = model.predict_proba(test)
        ctx.artifacts.clear()  # the teacher is gone: prediction must not need it
        np.testing.assert_array_equal(model.predict_proba(test), probs)
        model.save(tmp_path / "saved")
        again = LeaderStudent.load(tmp_path / "saved", Context.from_cohort(demo_cohort))
        np.testing.assert_array_equal(again.predict_proba(test), probs)
        assert len(asked) == 1
    finally:
        del teacher.features
    assert set(model.diagnostics()) >= {"epochs_run", "bce_loss", "kd_loss", "align_loss"}


def test_distillation_without_a_teacher_is_a_clear_error(demo_cohort, splits):
    ctx = Context.from_cohort(demo_cohort)
    with pytest.raises(ValueError, match="needs the fitted leader_t in ctx.artifacts"):
        LeaderStudent(**SMALL).fit(list(splits.train), [], ctx)
    LeaderStudent(**SMALL, alpha=0.0, epochs=1).fit(list(splits.train), [], ctx)  # no teacher needed
    with pytest.raises(ValueError, match="align_weight > 0 needs use_profile"):
        LeaderStudent(use_profile=False)
    assert LeaderStudent.default_threshold == 0.3



# --- the runner: one teacher per seed, shared by the student and its ablations ------------------------------------
def test_one_command_trains_the_teacher_once_per_seed_and_reuses_it(demo_cohort, tmp_path, monkeypatch):
    from medrec_bench.registry import load_registry
    from medrec_bench.runner import EvalSettings, Runner
    from medrec_bench.store import ResultStore

    counts = {"fit": 0, "computed": []}
    fit, compute = LeaderTeacher.fit, LeaderTeacher.compute_features

    def counting_fit(self, *args, **kwargs):
        counts["fit"] += 1
        return fit(self, *args, **kwargs)

    def counting_compute(self, samples):
        counts["computed"].append(len(samples))
        return compute(self, samples)

    monkeypatch.setattr(LeaderTeacher, "fit", counting_fit)
    monkeypatch.setattr(LeaderTeacher, "compute_features", counting_compute)
    students = ["leader_s", "leader_s_noalign", "leader_s_noprofile", "leader_s_nokd"]
    overrides = {"leader_t": dict(LeaderTeacher.test_params), **{m: {**SMALL, "epochs": 2} for m in students}}

    def run(store, overrides):
        runner = Runner(demo_cohort, store, registry=load_registry(plugins=False), cache=tmp_path / "cache",
                        progress=False, echo=lambda *_: None, settings=EvalSettings(n_boot=20))
        return runner, runner.run(students, [0, 1], overrides)

    with ResultStore(tmp_path / "r.db") as store:
        runner, out = run(store, overrides)
        assert [o.status for o in out] == ["complete"] * 8, [o.error for o in out]
        n_train = [len(runner.splits(seed).train) for seed in (0, 1)]
        assert counts["fit"] == 2 and counts["computed"] == n_train  # once per seed, for the training samples
        assert {store.get_run(o.run_id).threshold for o in out} == {0.3}

        retrained = {**overrides, **{m: {**SMALL, "epochs": 1} for m in students}}  # new students, same teacher
        _, again = run(store, retrained)
        assert [o.status for o in again] == ["complete"] * 8
        assert counts["fit"] == 2 and counts["computed"] == n_train  # the model cache and the feature cache
