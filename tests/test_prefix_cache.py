"""Top-k LoRA with a frozen-prefix cache (medrec_bench/llm/prefix_cache.py, leader_t ``lora_layers``): the top-k
path equals the full model, the cache key follows what decides the states, and a teacher fitted through the cache
saves, loads and predicts the same."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from leader.teacher import LeaderTeacher
from medrec_bench.llm.batches import pad_tokens
from medrec_bench.llm.prefix_cache import DecoderSplit, PrefixBatch, PrefixStates, decoder_of
from medrec_bench.llm.prompts import build_prompt
from medrec_bench.models import Context
from medrec_bench.tasks import make_splits


@pytest.fixture(scope="module")
def samples(demo_cohort):
    return list(make_splits(demo_cohort, "visit", seed=0).train)[:12]


def _built(demo_cohort, tmp_path, **params):
    model = LeaderTeacher(backbone="tiny-llama", max_length=96, **params)
    ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path)
    model.ctx = ctx
    model.module = model.build(ctx)
    model.module.eval()
    return model


@pytest.mark.parametrize("side", ["right", "left"])
def test_top_k_path_equals_the_full_model(demo_cohort, samples, tmp_path, side):
    """LoRA B matrices at zero (peft's initialisation): prefix states + top block == all blocks (fp32, 1e-4)."""
    model = _built(demo_cohort, tmp_path, lora_layers=1, padding_side=side)
    net = model.module
    lora_blocks = {n.split(".layers.")[1].split(".")[0] for n, _ in net.named_parameters() if "lora_" in n}
    assert lora_blocks == {"1"}  # tiny-llama has 2 blocks: only the top one is adapted
    tokens = pad_tokens([model.token_ids(s) for s in samples], model._backbone.tokenizer.pad_token_id, side)
    with torch.no_grad():
        full = net(tokens)
        states = net.split.prefix(tokens)
        top = net(PrefixBatch(states * tokens.attention_mask[..., None], tokens.attention_mask))
        cached = net(model.make_batch(samples, model.ctx))  # through the float16 store
    torch.testing.assert_close(top, full, atol=1e-4, rtol=0)
    scale = float(full.abs().max())
    assert float((cached - full).abs().max()) <= 1e-2 * scale


def test_cache_key_follows_prompt_config_k_and_precision(demo_cohort, tmp_path):
    keys = {}
    for name, params in {"base": {"lora_layers": 1}, "history": {"lora_layers": 1, "max_history": 1},
                         "int8": {"lora_layers": 1, "prefix_dtype": "int8"}}.items():
        keys[name] = _built(demo_cohort, tmp_path, **params)._prefix.key
    assert len(set(keys.values())) == 3
    model = _built(demo_cohort, tmp_path, lora_layers=1)
    split = model.module.split
    other_k = PrefixStates(DecoderSplit(split.decoder, 1), model.token_ids, fingerprint={"backbone": "x"},
                           folder=None, pad_id=0)
    same = PrefixStates(DecoderSplit(split.decoder, 1), model.token_ids, fingerprint={"backbone": "x"},
                        folder=None, pad_id=0)
    assert other_k.key == same.key != model._prefix.key


def test_a_truncated_prompt_is_cached_as_truncated(demo_cohort, samples, tmp_path):
    model = _built(demo_cohort, tmp_path, lora_layers=1, max_history=3)
    tok = model._backbone.tokenizer
    long = max(samples, key=lambda s: len(tok(build_prompt(s, demo_cohort.vocab))["input_ids"]))
    n = len(model.token_ids(long))
    assert n <= 96 < len(tok(build_prompt(long, demo_cohort.vocab))["input_ids"])  # the prompt had to be cut
    batch = model.make_batch([long], model.ctx)
    assert batch.hidden.shape[1] == n and int(batch.attention_mask.sum()) == n
    assert model._prefix.computed == 1 and len(model._prefix.store) == 1
    model._prefix.ensure([long])  # a phase's lookup finds it stored
    assert model._prefix.computed == 1 and model._prefix.cached == 1


def test_split_needs_a_decoder_and_a_valid_k(demo_cohort, tmp_path):
    model = _built(demo_cohort, tmp_path, lora_layers=1)
    decoder = decoder_of(model.module.backbone)
    for k in (0, 2):
        with pytest.raises(ValueError, match="1 <= k < 2"):
            DecoderSplit(decoder, k)
    with pytest.raises(ValueError, match="lora_layers"):
        LeaderTeacher(lora_layers=0)
    with pytest.raises(ValueError, match="lora_layers 3 > the backbone's 2 blocks"):
        _built(demo_cohort, tmp_path, lora_layers=3)


def test_teacher_fitted_through_the_cache_saves_loads_and_predicts_the_same(demo_cohort, tmp_path):
    splits = make_splits(demo_cohort, "last_visit", seed=0)
    train, val, test = list(splits.train)[:40], list(splits.val), list(splits.test)
    ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path / "work")
    model = LeaderTeacher(backbone="tiny-llama", lora_layers=1, epochs=2, batch_size=8, effective_batch_size=8,
                          max_length=128, lr=5e-3).fit(train, val, ctx)
    assert model._prefix.computed == len(train) + len(val)
    probs = model.predict_proba(test)
    assert model._prefix.computed == len(train) + len(val) + len(test)
    model.save(tmp_path / "saved")
    again = LeaderTeacher.load(tmp_path / "saved", ctx)
    np.testing.assert_allclose(again.predict_proba(test), probs, atol=1e-6, rtol=0)
    assert again._prefix.computed == 0  # every state came from the disk cache
    features = model.features(train[:5])
    assert features.shape == (5, model.hidden_size) and features.dtype == np.float16
    model.features(train[:5])
    diag = model.diagnostics()
    assert diag["prefix_computed"] == len(train) + len(val) + len(test) and diag["prefix_cached"] > 0
    assert diag["feature_cache_hits"] == 5 and diag["features_computed"] == 5
    assert 0.0 <= diag["padding_fraction"] < 0.5


def test_llm_generative_trains_through_the_prefix_cache(demo_cohort, samples, tmp_path):
    """llm_generative with LoRA on the top block: the teacher-forced answer logits from cached prefix states equal the
    full model's at initialisation, and a fit reads every training sequence from the cache."""
    from baselines.llm_generative import LLMGenerative
    from medrec_bench.tasks import targets_matrix

    ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path / "work")
    model = LLMGenerative(backbone="tiny-llama", lora_layers=1, max_length=128, max_new_tokens=24, epochs=1,
                          val_samples=0, batch_size=4, effective_batch_size=4)
    model.frequencies = targets_matrix(samples, ctx.n_drugs).float().mean(0).numpy()
    model.ctx = ctx
    model.module = model.build(ctx)
    model.module.eval()
    batch = model.make_batch(samples[:6], ctx)
    assert batch.prefix is not None
    with torch.no_grad():
        cached = model.answer_logits(batch)
        full = model.answer_logits(dataclasses.replace(batch, prefix=None))
    assert float((cached - full).abs().max()) <= 1e-2 * float(full.abs().max())  # float16 states
    fitted = LLMGenerative(backbone="tiny-llama", lora_layers=1, max_length=128, max_new_tokens=24, epochs=1,
                           val_samples=0, batch_size=4, effective_batch_size=4).fit(samples, [], ctx)
    # the first model cached 6 sequences in the same work folder: the fit computes only the other 6
    assert (fitted._prefix.computed, fitted._prefix.cached) == (len(samples) - 6, 6) and fitted.epochs_run == 1
    probs = fitted.predict_proba(samples[:3])
    assert probs.shape == (3, ctx.n_drugs) and np.isfinite(probs).all()


def _four_block_llama(attention: str = "eager"):
    """A random 4-block Llama (grouped-query attention) with LoRA on blocks 1-3, B matrices non-zero."""
    from transformers import LlamaConfig, LlamaModel

    from medrec_bench.llm.lora import LORA_TARGETS, apply_lora

    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    config._attn_implementation = attention
    torch.manual_seed(0)
    model = apply_lora(LlamaModel(config), r=4, alpha=8, dropout=0.0, targets=LORA_TARGETS, layers=range(1, 4))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_last_token_path_equals_the_top_blocks(side, k):
    """forward_last (last block at the last token only) == forward_top gathered at the last real token, values and
    LoRA gradients, for any adapter weights, with and without blocks below the last one.

    In float64 with SDPA attention, so that the two paths differ only by summation order (1e-10): transformers'
    eager attention takes the softmax in float32 whatever the model's dtype, and through the cancellation in these
    small gradients (norms ~1e-3 against outputs ~3) that alone moves them by up to 0.7 % of their norm."""
    model = _four_block_llama("sdpa").to(torch.float64)
    split = DecoderSplit(decoder_of(model), k)
    torch.manual_seed(1)
    tokens = pad_tokens([torch.randint(1, 50, (n,)).tolist() for n in (7, 3, 11, 1)], 0, side)
    with torch.no_grad():
        states = split.prefix(tokens) * tokens.attention_mask[..., None]
    rows = torch.arange(4)
    last = (tokens.attention_mask * torch.arange(tokens.attention_mask.shape[1])).argmax(1)
    lora = [p for n, p in model.named_parameters() if "lora_" in n and p.requires_grad]
    grads = []
    for fn in (lambda: split.forward_top(states, tokens.attention_mask)[rows, last],
               lambda: split.forward_last(states, tokens.attention_mask)):
        model.zero_grad()
        out = fn()
        out.pow(2).sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in lora if p.grad is not None]))
    (full, g_full), (last_only, g_last) = grads
    assert last_only.shape == (4, 32)
    assert last_only.dtype == torch.float64
    torch.testing.assert_close(last_only, full, atol=1e-10, rtol=1e-10)
    assert len(g_full) == len(g_last) > 0
    for a, b in zip(g_full, g_last):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=1e-9)


def test_last_token_path_falls_back_for_an_unknown_block():
    """A block without Llama-style attention (here: q/k norms, as in Qwen3) runs the full top path."""
    model = _four_block_llama()
    split = DecoderSplit(decoder_of(model), 2)
    assert split._last_token_supported(10)
    split.decoder.layers[-1].self_attn.q_norm = torch.nn.Identity()
    assert not split._last_token_supported(10)
    tokens = pad_tokens([[3, 4, 5], [6]], 0, "right")
    with torch.no_grad():
        states = split.prefix(tokens)
        out = split.forward_last(states, tokens.attention_mask)
        ref = split.forward_top(states, tokens.attention_mask)[torch.arange(2), torch.tensor([2, 0])]
    torch.testing.assert_close(out, ref)
