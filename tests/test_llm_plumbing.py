"""The shared LLM plumbing (medrec_bench/llm/): one import path per name, no environment side effects, prompts
tokenised once with the budget each model reserves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from medrec_bench.llm.backbones import load_backbone, offline_mode
from medrec_bench.llm.prompts import PromptConfig, fit_prompt
from medrec_bench.llm.tokens import PromptTokens
from medrec_bench.tasks import make_splits
from tests.conftest import REPO


def test_importing_backbones_sets_no_environment_variable():
    code = ("import os; before = dict(os.environ); import medrec_bench.llm.backbones, leader.teacher, "
            "baselines.llm_generative; changed = set(os.environ.items()) ^ set(before.items()); "
            "print(sorted(k for k, _ in changed if 'HF' in k or 'TRANSFORMERS' in k or 'OFFLINE' in k))")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_offline_mode_is_set_during_a_load_and_restored(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    with offline_mode():
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["TRANSFORMERS_OFFLINE"] == "0"


def test_no_name_has_two_import_paths():
    """The moved pieces are importable only from medrec_bench.llm (leader/ holds LEADER's own models only)."""
    import leader.teacher

    for gone in ("leader.prompts", "leader.backbones", "leader.lora", "leader.features", "baselines.llm_common"):
        with pytest.raises(ModuleNotFoundError):
            __import__(gone)
    for name in ("pad_tokens", "TokenBatch", "TrainableStateModule", "LORA_TARGETS"):
        assert name not in leader.teacher.__all__


@pytest.fixture(scope="module")
def tokenizer():
    return load_backbone("tiny-llama").tokenizer


@pytest.fixture(scope="module")
def samples(demo_cohort):
    return list(make_splits(demo_cohort, "visit", seed=0).train)[:20]


@pytest.mark.parametrize("max_length", [40, 80, 2048])
def test_prompt_tokens_fit_the_budget_with_and_without_eos(demo_cohort, tokenizer, samples, max_length):
    config = PromptConfig(max_length=max_length)
    with_eos = PromptTokens(tokenizer, demo_cohort.vocab, config, reserve=1, append_eos=True)
    answer_room = PromptTokens(tokenizer, demo_cohort.vocab, config, reserve=7)
    for s in samples:
        ids = with_eos(s)
        assert ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in ids[:-1]
        assert len(ids) <= max_length
        plain = answer_room(s)
        assert len(plain) <= max_length - 7 and tokenizer.eos_token_id not in plain
        text = fit_prompt(s, demo_cohort.vocab, tokenizer, config, reserve=7)
        full = list(tokenizer(text)["input_ids"])
        assert plain == full[: max_length - 7]


def test_prompt_tokens_are_built_once(demo_cohort, tokenizer, samples):
    calls = []

    class Counting:
        eos_token_id = tokenizer.eos_token_id

        def __call__(self, text, add_special_tokens=True):
            calls.append(text)
            return tokenizer(text, add_special_tokens=add_special_tokens)

    tokens = PromptTokens(Counting(), demo_cohort.vocab, PromptConfig(), reserve=1, append_eos=True)
    first = [tokens(s) for s in samples]
    n = len(calls)
    assert [tokens(s) for s in samples] == first and len(calls) == n and len(tokens) == len(samples)


def test_prompt_tokens_reject_a_budget_without_room(demo_cohort, tokenizer):
    with pytest.raises(ValueError, match="reserve"):
        PromptTokens(tokenizer, demo_cohort.vocab, PromptConfig(max_length=8), reserve=8)
    with pytest.raises(ValueError, match="append_eos"):
        PromptTokens(tokenizer, demo_cohort.vocab, PromptConfig(), reserve=0, append_eos=True)


@pytest.mark.parametrize("safe", [False, True], ids=["only .bin weights", "safetensors"])
def test_a_backbone_folder_loads_only_safetensors_weights(tmp_path, safe):
    """A user-supplied folder never goes through torch's pickle-based ``.bin`` loading."""
    from medrec_bench.llm.backbones import BackboneNotFound, load_backbone

    tiny = load_backbone("tiny-llama")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    if not safe:  # the same weights as a pickle-based pytorch_model.bin only
        from safetensors.torch import load_file

        for weights in tmp_path.glob("*.safetensors"):
            torch.save(load_file(str(weights)), tmp_path / "pytorch_model.bin")
            weights.unlink()
        assert list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.safetensors"))
        with pytest.raises(BackboneNotFound, match="has no .safetensors weights"):
            load_backbone(str(tmp_path))
    else:
        assert load_backbone(str(tmp_path)).hidden_size == tiny.hidden_size
