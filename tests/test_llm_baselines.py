"""The LLM recommender baselines (baselines/llm_*.py) on the random ``tiny-llama`` backbone: name parsing and OOV
counting, generation-order scores, loss masking and a tiny overfit of ``llm_generative``; cached vs uncached and
direct log-likelihood scores of ``llm_zero_shot``; the embedding cache and the head of ``llm_embed_probe``.
(The shared fit -> predict -> save -> load contract runs in tests/test_contract.py.)"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from baselines.drug_names import DrugNameMatcher, normalize_name
from baselines.llm_embed_probe import LLMEmbedProbe
from baselines.llm_generative import LLMGenerative, generation_scores
from baselines.llm_zero_shot import LLMZeroShot, topk_probabilities
from baselines.popular import Popular
from medrec_bench.llm.calls import greedy_decode
from medrec_bench.metrics import multilabel_scores
from medrec_bench.models import Context
from medrec_bench.tasks import make_splits, targets_matrix

NAMES = ["antacids", "opioids", "antiarrhythmics, class i and iii", "lipid modifying agents, plain",
         "drugs for peptic ulcer and gastro-oesophageal reflux disease (gord)", "antiinfectives", "antiinfectives",
         "beta blocking agents"]


@pytest.fixture(scope="module")
def splits(demo_cohort):
    return make_splits(demo_cohort, "visit", seed=0)


@pytest.fixture(scope="module")
def ctx(demo_cohort):
    return Context.from_cohort(demo_cohort, seed=0)


# --- llm_generative: parsing ----------------------------------------------------------------------------------------
def test_normalize_name():
    assert normalize_name(" Drugs for Peptic Ulcer ( GORD ) ") == "drugs for peptic ulcer gord"
    assert normalize_name("gastro - oesophageal") == normalize_name("gastro-oesophageal") == "gastro oesophageal"


def test_parse_exact_commas_and_spacing():
    matcher = DrugNameMatcher(NAMES, threshold=0.8)
    parsed = matcher.parse("antacids, antiarrhythmics, class i and iii, opioids")
    assert parsed.drugs == [0, 2, 1] and parsed.n_names == 3 and parsed.n_oov == 0
    # a word-level tokenizer decodes with spaces around punctuation
    parsed = matcher.parse(" drugs for peptic ulcer and gastro - oesophageal reflux disease ( gord ) , "
                           "lipid modifying agents , plain")
    assert parsed.drugs == [4, 3] and parsed.n_oov == 0
    assert matcher.parse("").n_names == 0 and matcher.parse(" , ,").drugs == []


def test_parse_fuzzy_and_oov():
    fuzzy = DrugNameMatcher(NAMES, threshold=0.8)
    parsed = fuzzy.parse("opiods, antacid, unicorn dust, beta blocking agent")
    assert parsed.drugs == [1, 0, 7]
    assert parsed.matched == [1, 0, None, 7] and parsed.n_names == 4 and parsed.n_oov == 1
    exact = DrugNameMatcher(NAMES, threshold=1.0)
    parsed = exact.parse("opiods, antacids")
    assert parsed.drugs == [0] and parsed.n_oov == 1
    # a fuzzy variant of a comma name is read as one name, not as two OOV pieces
    parsed = fuzzy.parse("antiarrhythmics, class i and ii")
    assert parsed.drugs == [2] and parsed.n_names == 1
    # junk after a name is not absorbed by a fuzzy match of the name
    parsed = fuzzy.parse("beta blocking agents, made-up drug")
    assert parsed.matched == [7, None] and parsed.n_oov == 1
    parsed = fuzzy.parse("lipid modifying agents plain, opioids")  # no comma in the name: still exact
    assert parsed.drugs == [3, 1] and parsed.n_oov == 0
    # repeats: counted as names, recommended once, first-mention order
    parsed = fuzzy.parse("opioids, antacids, opioids")
    assert parsed.drugs == [1, 0] and parsed.n_names == 3 and parsed.n_oov == 0


def test_duplicate_names_go_to_the_most_frequent():
    priority = np.zeros(len(NAMES))
    priority[6] = 0.3
    assert DrugNameMatcher(NAMES, priority=priority).parse("antiinfectives").drugs == [6]
    assert DrugNameMatcher(NAMES).parse("antiinfectives").drugs == [5]  # ties: lowest index


def test_generation_scores_threshold_gives_the_generated_set():
    freq = np.array([1.0, 0.2, 0.9, 0.0, 0.5])
    scores = generation_scores([[3, 1], [], [0, 1, 2, 3, 4]], freq)
    assert scores.dtype == np.float32
    assert list(np.flatnonzero(scores[0] >= 0.5)) == [1, 3]
    assert scores[0, 3] > scores[0, 1] > 0.5  # generation order
    assert list(np.argsort(-scores[0])[2:]) == [0, 2, 4]  # then training frequency
    assert (scores[1] < 0.5).all() and (scores[2] > 0.5).all()
    assert (np.diff(scores[2]) < 0).all()


# --- llm_generative: training ---------------------------------------------------------------------------------------
def _small_targets(samples, n=2, k=3):
    return [dataclasses.replace(s, target=tuple(sorted(s.target))[:k]) for s in samples[:n]]


def test_loss_covers_only_answer_tokens(splits, ctx):
    model = LLMGenerative(backbone="tiny-llama", epochs=1, max_length=256, max_new_tokens=24, lora_dropout=0.0)
    samples = _small_targets(splits.train, n=3)
    samples[1] = dataclasses.replace(samples[1], target=samples[1].target[:1])  # answers of different lengths
    model.fit(samples, [], ctx)  # sets frequencies, tokens, the adapter (1 epoch is enough here)
    batch = model.make_batch(samples, ctx)
    lm = model.module.lm
    a_len = batch.labels.shape[1]
    total, count = 0.0, 0
    for row, sample in enumerate(samples):
        prompt, answer = model.prompt_ids(sample), model.answer_ids(sample)
        assert answer[-1] == model._backbone.tokenizer.eos_token_id
        # labels: the answer (with EOS) then -100 padding; the prompt never appears in the labels
        assert batch.labels[row, :len(answer)].tolist() == answer
        assert (batch.labels[row, len(answer):] == -100).all()
        # an unpadded forward of prompt + answer: the loss of the answer tokens only
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logp = torch.log_softmax(lm(input_ids=ids).logits[0].float(), -1)
        positions = range(len(prompt) - 1, len(prompt) + len(answer) - 1)
        total += -sum(float(logp[p, t]) for p, t in zip(positions, answer))
        count += len(answer)
    assert a_len == max(len(model.answer_ids(s)) for s in samples)
    with torch.no_grad():
        loss = float(model.loss(batch, None, 0))
    assert loss == pytest.approx(total / count, rel=1e-4)


def test_overfit_generates_the_training_answer(splits, ctx):
    train = _small_targets(splits.train, n=2, k=3)
    model = LLMGenerative(backbone="tiny-llama", epochs=25, batch_size=2, effective_batch_size=2, lr=1e-2,
                          lora_dropout=0.0, max_length=128, max_new_tokens=24, val_samples=0, patience=0)
    model.fit(train, [], ctx)
    probs = model.predict_proba(train)
    for row, sample in enumerate(train):
        assert set(np.flatnonzero(probs[row] >= 0.5)) == set(sample.target), model.last_generations[row]
    assert model.last_oov_rate == 0.0
    assert len(model.last_generations) == 2 and model.history[-1]["loss"] < model.history[0]["loss"]


def test_oov_rate_of_hand_written_generations(splits, ctx, monkeypatch):
    model = LLMGenerative(backbone="tiny-llama", epochs=1, max_length=128, max_new_tokens=4, val_samples=0)
    model.fit(_small_targets(splits.train), [], ctx)
    names = ctx.vocab.drugs.names
    texts = [f"{names[0].lower()}, {names[5].lower()}, made-up drug", "", f"{names[3].lower()}"]
    monkeypatch.setattr(model, "generate", lambda samples: texts[: len(samples)])
    probs = model.predict_proba(list(splits.test[:3]))
    assert model.last_oov_rate == pytest.approx(1 / 4)
    assert model.diagnostics()["oov_rate"] == pytest.approx(1 / 4) and model.diagnostics()["epochs_run"] == 1
    assert list(np.flatnonzero(probs[0] >= 0.5)) == [0, 5] and probs[0, 0] > probs[0, 5]
    assert not (probs[1] >= 0.5).any() and list(np.flatnonzero(probs[2] >= 0.5)) == [3]
    monkeypatch.setattr(model, "generate", lambda samples: [""] * len(samples))
    model.predict_proba(list(splits.test[:2]))
    assert math.isnan(model.last_oov_rate)


def test_greedy_decode_batched_equals_single(ctx):
    from medrec_bench.llm.backbones import load_backbone

    backbone = load_backbone("tiny-llama")
    tok = backbone.tokenizer
    prompts = [tok(t)["input_ids"] for t in ("the patient has no previous hospital visit .",
                                              "current visit : diagnoses are none", "opioids")]
    kw = dict(max_new_tokens=6, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    batched = greedy_decode(backbone.model, prompts, **kw)
    assert batched == [greedy_decode(backbone.model, [p], **kw)[0] for p in prompts]
    assert all(len(g) <= 6 for g in batched)


# --- llm_zero_shot --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zero_shot(splits, ctx):
    return LLMZeroShot(backbone="tiny-llama", max_length=512, candidate_batch_size=7).fit(list(splits.train), [], ctx)


def _both_paths(model, samples):
    model.use_prompt_cache = True
    cached = model.scores(samples)
    model.use_prompt_cache = False
    try:
        uncached = model.scores(samples)
    finally:
        model.use_prompt_cache = True
    return cached, uncached


def test_zero_shot_cached_equals_uncached(zero_shot, splits):
    samples = list(splits.test[:2])
    cached, uncached = _both_paths(zero_shot, samples)
    assert np.isfinite(cached).all()
    # float32: the random tiny model's names score -14 to -46 nats per token, so float32 rounding alone (different
    # matmul shapes in the two paths) reaches ~5e-6 relative; real models score a few nats (the bench checks 1e-4)
    np.testing.assert_allclose(cached, uncached, atol=1e-4, rtol=1e-5)
    # float64: the two paths are the same computation
    model = zero_shot._backbone.model
    model.double()
    try:
        cached64, uncached64 = _both_paths(zero_shot, samples)
    finally:
        model.float()
    np.testing.assert_allclose(cached64, uncached64, atol=1e-4, rtol=0)


def test_zero_shot_scores_are_length_normalised_loglik(zero_shot, splits):
    sample = splits.test[0]
    scores = zero_shot.scores([sample])[0]
    model = zero_shot._backbone.model
    prompt = zero_shot.prompt_ids(sample)
    lengths = [len(c) for c in zero_shot.candidates]
    picks = [int(np.argmin(lengths)), int(np.argmax(lengths)), 8]
    for j in picks:
        cand = zero_shot.candidates[j]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + cand])).logits[0].float(), -1)
        direct = np.mean([float(logp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(cand)])
        assert scores[j] == pytest.approx(direct, abs=1e-4)
    assert len({lengths[j] for j in picks}) > 1


def test_topk_probabilities_preserve_ranking():
    scores = np.array([[-1.0, -3.0, -2.0, -9.0], [0.0, -0.5, -0.5, -4.0]])
    probs = topk_probabilities(scores, 2)
    assert (np.argsort(-probs, axis=1) == np.argsort(-scores, axis=1)).all()
    assert list((probs[0] >= 0.5).nonzero()[0]) == [0, 2]
    assert (probs[1, 1:3] == 0.5).all()  # a tie at the cut: both recommended
    assert (topk_probabilities(scores, 9) > 0.5).all()


def test_zero_shot_k_is_the_mean_set_size(zero_shot, splits):
    assert zero_shot.k == round(np.mean([len(set(s.target)) for s in splits.train]))
    probs = zero_shot.predict_proba(list(splits.test[:2]))
    assert ((probs >= 0.5).sum(1) >= zero_shot.k).all()


# --- llm_embed_probe ------------------------------------------------------------------------------------------------
def test_probe_embeddings_are_cached(splits, ctx, tmp_path, monkeypatch):
    work = dataclasses.replace(ctx, work_dir=tmp_path / "work")
    samples = list(splits.train)
    first = LLMEmbedProbe(backbone="tiny-llama", epochs=1, max_length=512).fit(samples, [], work)
    embeddings = first.embed(samples)
    assert embeddings.dtype == np.float16 and embeddings.shape == (len(samples), first.dim)
    folders = list((tmp_path / "work" / "llm_embed_probe").iterdir())
    assert len(folders) == 1 and (folders[0] / "index.json").is_file() and list(folders[0].glob("*.npy"))
    assert not list((tmp_path / "work").rglob("*.pkl"))

    def boom(self, texts):
        raise AssertionError("the encoder ran although the embeddings are cached")

    monkeypatch.setattr(LLMEmbedProbe, "encode", boom)
    np.testing.assert_array_equal(first.embed(samples), embeddings)  # memory
    second = LLMEmbedProbe(backbone="tiny-llama", epochs=1, max_length=512).fit(samples, [], work)
    np.testing.assert_array_equal(second.embed(samples), embeddings)  # disk
    with pytest.raises(AssertionError, match="encoder ran"):
        second.embed(list(splits.test[:1]))  # a new prompt does need the encoder


def test_probe_head_learns(splits, ctx, tmp_path):
    train = list(splits.train)
    truth = targets_matrix(train, ctx.n_drugs).numpy()
    popular = Popular().fit(train, [], ctx).predict_proba(train)
    probe = LLMEmbedProbe(backbone="tiny-llama", head="mlp", hidden=64, dropout=0.0, epochs=60, lr=3e-3,
                          patience=0, max_length=512).fit(train, [], ctx)
    probs = probe.predict_proba(train)
    ours = multilabel_scores(truth, probs, 0.5)
    base = multilabel_scores(truth, popular, 0.5)
    assert ours["jaccard"].mean() > base["jaccard"].mean() + 0.05
    assert probe.history[-1]["loss"] < probe.history[0]["loss"]
    probe.save(tmp_path / "mlp")  # the MLP head round-trips too (the contract test covers the linear one)
    np.testing.assert_array_equal(LLMEmbedProbe.load(tmp_path / "mlp", ctx).predict_proba(train), probs)
