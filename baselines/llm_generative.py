"""``llm_generative``: a causal LM fine-tuned with LoRA to write the drug names, read back by name matching.

Pipeline: the sample's prompt (:mod:`medrec_bench.llm.prompts`, fitted to ``max_length - max_new_tokens`` tokens by
dropping the oldest history visits first) -> the answer ``" " + answer_text(drugs)`` (lower-cased WHO ATC names,
comma-joined; ``answer_order="frequency"`` lists them most-frequent-in-training first, ``"given"`` keeps the sample's
order) followed by EOS, cut to ``max_new_tokens`` tokens -> the backbone WITH its LM head, LoRA (``peft``) on the
attention and MLP projections -> next-token cross-entropy on the answer tokens only (prompt and padding labels are
-100). Batches put prompts left-padded and answers right-padded, so every answer starts in the same column and only the
answer positions' logits are computed (``logits_to_keep``).

Inference: greedy decoding (deterministic) of at most ``max_new_tokens`` tokens, batched with the KV cache; the
text is parsed by :class:`baselines.drug_names.DrugNameMatcher` (exact then ``difflib`` fuzzy matching with ratio
>= ``match_threshold``; names that contain commas are re-joined; a name shared by several ATC classes goes to the
most frequent in training).

Scores (for PRAUC) from the generation order: the k-th distinct generated drug (k = 1..K) gets
``1 - 0.5 * k / (K + 1)`` (in (0.5, 1), decreasing), every other drug ``0.49 * f`` with ``f`` its training frequency
(in [0, 0.49]) as the tie-breaker, so threshold 0.5 gives exactly the generated set and the ranking is the
generation order, then popularity.

Extras after each :meth:`LLMGenerative.predict_proba` call: ``last_oov_rate`` (generated name segments that match no
drug / all generated name segments over the call; NaN when nothing was generated), ``last_generations`` (the
decoded texts, in input order) and ``last_parsed`` (:class:`baselines.drug_names.ParsedAnswer` per sample).

Training reuses :class:`medrec_bench.models.TorchRecommender`'s loop (Adam over the LoRA weights, gradient
accumulation to ``effective_batch_size``, clipping at 1.0, early stopping on the PRAUC of the first ``val_samples``
validation samples, which are decoded every epoch; 0 disables validation and keeps the lowest-training-loss epoch).
Checkpoint: the LoRA weights and the training frequencies (the frozen backbone is rebuilt from ``backbone``).

LoRA blocks (``lora_layers``): the top 2 blocks by default, as ``leader_t``'s default, so that the two fine-tuned LLMs
of the leaderboard get the same adaptation budget and the frozen lower blocks' states of every teacher-forced
training sequence are computed once and cached (:class:`medrec_bench.llm.prefix_cache.PrefixStates`); decoding runs
the whole model. ``lora_layers="all"`` adapts every block, as LoRA fine-tuning usually does (days per epoch on a
2-core CPU for the embedded cohort): a deviation, named in the README.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medrec_bench.llm.backbones import Backbone, load_backbone
from medrec_bench.llm.calls import call_lm, greedy_decode, input_device
from medrec_bench.llm.lora import LORA_TARGETS, AdapterLM, PromptLoRATraining, check_effective_batch_size
from medrec_bench.llm.prefix_cache import PrefixStates, check_lora_layers, check_prefix_dtype, top_lora
from medrec_bench.llm.prompts import answer_text, drug_names
from medrec_bench.llm.tokens import PromptTokens
from medrec_bench.models import Context, TorchRecommender
from medrec_bench.registry import Range
from medrec_bench.tasks.batching import targets_matrix
from medrec_bench.tasks.protocols import Sample

from .drug_names import DrugNameMatcher, ParsedAnswer

__all__ = ["AnswerBatch", "LLMGenerative", "generation_scores"]

ANSWER_ORDERS = ("frequency", "given")
#: the score of a drug that was not generated is this times its training frequency (< 0.5)
NOT_GENERATED_SCALE = 0.49


@dataclass
class AnswerBatch:
    """Prompt + answer sequences: ``input_ids`` / ``attention_mask`` long [B, P + A] (prompts left-padded to P,
    answers right-padded to A), ``labels`` long [B, A] (answer token ids, -100 on padding); with top-k LoRA also
    ``prefix`` float [B, P + A, hidden], the cached states entering the first adapted block (zeros on padding)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prefix: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "AnswerBatch":
        return AnswerBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                           None if self.prefix is None else self.prefix.to(device))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def generation_scores(generated: Sequence[Sequence[int]], frequencies: np.ndarray) -> np.ndarray:
    """float32 [len(generated), |M|]: ``1 - 0.5 k / (K + 1)`` for the k-th of K generated drugs (k from 1),
    ``0.49 * frequency`` for the others (``frequencies`` float [|M|] in [0, 1])."""
    base = (NOT_GENERATED_SCALE * np.clip(np.asarray(frequencies, dtype=np.float64), 0.0, 1.0))
    out = np.tile(base, (len(generated), 1))
    for row, drugs in enumerate(generated):
        n = len(drugs)
        for k, drug in enumerate(drugs, start=1):
            out[row, drug] = 1.0 - 0.5 * k / (n + 1)
    return out.astype(np.float32)


class LLMGenerative(PromptLoRATraining, TorchRecommender):
    """LoRA-fine-tuned causal LM that generates the drug names (see the module docstring).

    Units: ``max_length`` / ``max_new_tokens`` tokens (the prompt gets ``max_length - max_new_tokens``);
    ``batch_size`` / ``effective_batch_size`` / ``eval_batch_size`` / ``val_samples`` samples; ``match_threshold`` a
    ``difflib`` ratio in (0, 1] (1 = exact names only).
    """

    default_threshold: ClassVar[float] = 0.5
    max_grad_norm: float | None = 1.0
    param_ranges: ClassVar[dict[str, Range]] = {"max_new_tokens": Range(ge=1), "match_threshold": Range(gt=0, le=1),
                                                "val_samples": Range(ge=0)}
    test_params: ClassVar[dict[str, Any]] = {"backbone": "tiny-llama", "epochs": 1, "batch_size": 8,
                                             "effective_batch_size": 8, "eval_batch_size": 32, "max_length": 256,
                                             "max_new_tokens": 12, "val_samples": 4}

    def __init__(self, *, backbone: str = "smollm2-135m", dtype: str = "float32", lora_r: int = 8,
                 lora_alpha: int = 32, lora_dropout: float = 0.1, lora_targets: str = LORA_TARGETS,
                 max_history: int = 3, include_profile: bool = False, max_length: int = 2048,
                 max_new_tokens: int = 256, match_threshold: float = 0.8, answer_order: str = "frequency",
                 epochs: int = 3, batch_size: int = 4, effective_batch_size: int = 16, eval_batch_size: int = 16,
                 val_samples: int = 64, lr: float = 2e-4, weight_decay: float = 0.0, patience: int = 1,
                 lora_layers: int | str = 2, prefix_dtype: str = "backbone", seed: int | None = None) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                         seed=seed)
        if answer_order not in ANSWER_ORDERS:
            raise ValueError(f"answer_order must be one of {ANSWER_ORDERS}, not {answer_order!r}")
        if not 1 <= max_new_tokens < max_length:
            raise ValueError(f"need 1 <= max_new_tokens ({max_new_tokens}) < max_length ({max_length})")
        if not 0.0 < match_threshold <= 1.0:
            raise ValueError(f"match_threshold must be in (0, 1], not {match_threshold}")
        self.backbone = backbone
        self.dtype = dtype
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.max_history = max_history
        self.include_profile = include_profile
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.match_threshold = match_threshold
        self.answer_order = answer_order
        self.effective_batch_size = check_effective_batch_size(effective_batch_size, batch_size)
        self.eval_batch_size = eval_batch_size
        self.val_samples = val_samples
        self.lora_layers = check_lora_layers(lora_layers)
        check_prefix_dtype(prefix_dtype)
        self.prefix_dtype = prefix_dtype
        self._prefix: PrefixStates | None = None
        self.frequencies: np.ndarray | None = None
        self.last_oov_rate: float = float("nan")
        self.last_generations: list[str] = []
        self.last_parsed: list[ParsedAnswer] = []
        self._backbone: Backbone | None = None
        self._matcher: DrugNameMatcher | None = None
        self._prompts: PromptTokens | None = None
        self._answers: dict[tuple[str, str], list[int]] = {}

    # --- the network -------------------------------------------------------------------------------------------------
    def build(self, ctx: Context) -> nn.Module:
        self._backbone = load_backbone(self.backbone, dtype=self.dtype, with_lm_head=True, device=ctx.device)
        if not self._backbone.is_causal_lm:
            raise ValueError(f"llm_generative needs a causal LM backbone; {self.backbone!r} is an encoder")
        self._prompts = PromptTokens(self._backbone.tokenizer, ctx.vocab, self.prompt_config,
                                     reserve=self.max_new_tokens)
        self._answers, self._matcher = {}, None
        lora = top_lora(self._backbone, self.lora_layers, dtype=self.dtype, r=self.lora_r, alpha=self.lora_alpha,
                        dropout=self.lora_dropout, targets=self.lora_targets)
        self._prefix = None
        if lora.split is not None:  # teacher-forced training sequences are fixed: cache their frozen prefix
            folder = Path(ctx.work_dir) / "llm_generative_prefix" if ctx.work_dir is not None else None
            self._prefix = PrefixStates(
                lora.split, self.sequence_ids, folder=folder, pad_id=self._backbone.tokenizer.pad_token_id,
                prefix_dtype=self.prefix_dtype, batch_size=self.eval_batch_size, progress=ctx.progress,
                fingerprint={"backbone": lora.backbone_key, "prompt": self.prompt_config.__dict__})
        return AdapterLM(lora.model)

    def sequence_ids(self, sample: Sample) -> list[int]:
        """The teacher-forced training sequence: prompt ids then answer ids."""
        return self.prompt_ids(sample) + self.answer_ids(sample)

    def before_training(self, train: Sequence[Sample], val: Sequence[Sample]) -> None:
        """Top-k LoRA: the frozen prefix states of every training sequence, computed once (validation decodes)."""
        if self._prefix is not None:
            self._prefix.ensure(train, "llm_generative prefix pass")

    @property
    def matcher(self) -> DrugNameMatcher:
        """The name matcher over ``ctx.vocab.drugs`` (duplicate names resolved by training frequency)."""
        if self._matcher is None:
            assert self.ctx is not None
            names = drug_names(range(self.ctx.n_drugs), self.ctx.vocab)
            self._matcher = DrugNameMatcher(names, self.match_threshold, self.frequencies)
        return self._matcher

    # --- tokens ------------------------------------------------------------------------------------------------------
    def prompt_ids(self, sample: Sample) -> list[int]:
        """The prompt's token ids (with the tokenizer's own special tokens, no EOS), at most
        ``max_length - max_new_tokens``; tokenised once per fit."""
        if self._prompts is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._prompts(sample)

    def answer_drugs(self, sample: Sample) -> list[int]:
        """The target drugs in answer order (most frequent in training first, or the sample's order)."""
        drugs = list(dict.fromkeys(sample.target))
        if self.answer_order == "frequency" and self.frequencies is not None:
            freq = self.frequencies
            drugs.sort(key=lambda d: (-float(freq[d]), d))
        return drugs

    def answer_ids(self, sample: Sample) -> list[int]:
        """The answer's token ids: ``" " + answer_text`` then EOS, at most ``max_new_tokens``."""
        key = (sample.patient_id, sample.visit_id)
        ids = self._answers.get(key)
        if ids is None:
            assert self._backbone is not None and self.ctx is not None
            tok = self._backbone.tokenizer
            text = " " + answer_text(self.answer_drugs(sample), self.ctx.vocab)
            ids = list(tok(text, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
            ids = ids[: self.max_new_tokens]
            self._answers[key] = ids
        return ids

    def make_batch(self, samples: Sequence[Sample], ctx: Context) -> AnswerBatch:
        assert self._backbone is not None
        pad = self._backbone.tokenizer.pad_token_id
        prompts = [self.prompt_ids(s) for s in samples]
        answers = [self.answer_ids(s) for s in samples]
        p_len = max(len(p) for p in prompts)
        a_len = max(len(a) for a in answers)
        ids = torch.full((len(samples), p_len + a_len), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full((len(samples), a_len), -100, dtype=torch.long)
        for row, (p, a) in enumerate(zip(prompts, answers)):
            ids[row, p_len - len(p):p_len] = torch.as_tensor(p, dtype=torch.long)
            ids[row, p_len:p_len + len(a)] = torch.as_tensor(a, dtype=torch.long)
            mask[row, p_len - len(p):p_len + len(a)] = 1
            labels[row, :len(a)] = torch.as_tensor(a, dtype=torch.long)
        prefix = None
        if self._prefix is not None:
            rows = self._prefix.rows(samples)
            prefix = torch.zeros((len(samples), p_len + a_len, rows[0].shape[1]), dtype=torch.float32)
            for row, (p, a, states) in enumerate(zip(prompts, answers, rows)):
                prefix[row, p_len - len(p):p_len + len(a)] = torch.from_numpy(np.asarray(states, dtype=np.float32))
        return AnswerBatch(ids, mask, labels, prefix)

    def _to_device(self, batch: Any) -> Any:
        if isinstance(self.module, AdapterLM):
            return batch.to(input_device(self.module.lm))
        return super()._to_device(batch)

    # --- training ----------------------------------------------------------------------------------------------------
    def answer_logits(self, batch: AnswerBatch) -> torch.Tensor:
        """Logits float [B, A, vocab] predicting each answer position (only these are computed)."""
        assert isinstance(self.module, AdapterLM)
        a_len = batch.labels.shape[1]
        if batch.prefix is not None:  # top-k LoRA: only the adapted blocks, the final norm and the LM head run
            assert self._prefix is not None
            split = self._prefix.split
            hidden = split.forward_top(batch.prefix.to(next(split.top.parameters()).dtype), batch.attention_mask)
            return self.module.lm.lm_head(hidden[:, -(a_len + 1):-1])
        positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = call_lm(self.module.lm, batch.input_ids, batch.attention_mask, position_ids=positions,
                      last_logits=a_len + 1)
        return out.logits[:, :-1]

    def loss(self, batch: Any, target: torch.Tensor, epoch: int) -> torch.Tensor:
        """Mean next-token cross-entropy over the answer tokens (prompt and padding excluded)."""
        logits = self.answer_logits(batch)
        return nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                           batch.labels.to(logits.device).reshape(-1), ignore_index=-100)

    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "LLMGenerative":
        if not train:
            raise ValueError("no training samples")
        self.frequencies = targets_matrix(train, ctx.n_drugs).float().mean(0).numpy()
        self._matcher = None
        super().fit(train, list(val)[: max(0, self.val_samples)], ctx)
        return self

    # --- inference -------------------------------------------------------------------------------------------------
    def generate(self, samples: Sequence[Sample]) -> list[str]:
        """The decoded greedy answers (text after the prompt, EOS excluded), in input order."""
        if self.module is None or self.ctx is None or self._backbone is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        assert isinstance(self.module, AdapterLM)
        tok = self._backbone.tokenizer
        texts = [""] * len(samples)
        was_training = self.module.training
        self.module.eval()
        order = sorted(range(len(samples)), key=lambda i: len(self.prompt_ids(samples[i])))
        step = max(1, self.eval_batch_size)
        with torch.inference_mode(), tqdm(total=len(samples), desc="llm_generative decode", unit="patient",
                                          disable=not self.ctx.progress, leave=False) as bar:
            for start in range(0, len(order), step):
                rows = order[start:start + step]
                generated = greedy_decode(self.module.lm, [self.prompt_ids(samples[i]) for i in rows],
                                          max_new_tokens=self.max_new_tokens, eos_id=tok.eos_token_id,
                                          pad_id=tok.pad_token_id)
                for i, ids in zip(rows, generated):
                    texts[i] = tok.decode(ids, skip_special_tokens=True)
                bar.update(len(rows))
        self.module.train(was_training)
        return texts

    def predict_proba(self, samples: Sequence[Sample]) -> np.ndarray:
        """float32 [n, |M|] generation-order scores (see the module docstring); sets ``last_oov_rate``,
        ``last_generations`` and ``last_parsed``."""
        if self.module is None or self.ctx is None or self.frequencies is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        texts = self.generate(samples)
        parsed = [self.matcher.parse(t) for t in texts]
        names = sum(p.n_names for p in parsed)
        self.last_generations, self.last_parsed = texts, parsed
        self.last_oov_rate = sum(p.n_oov for p in parsed) / names if names else math.nan
        return generation_scores([p.drugs for p in parsed], self.frequencies)

    def diagnostics(self) -> dict[str, float | int | str]:
        """The training loop's diagnostics plus ``oov_rate``: the out-of-vocabulary rate of the last
        :meth:`predict_proba` call (the runner reads it right after predicting the test split)."""
        return {**super().diagnostics(), "oov_rate": self.last_oov_rate}

    # --- persistence -------------------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.module is None or self.frequencies is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        state = {f"adapter.{k}": v for k, v in self.module.state_dict().items()}
        state["frequencies"] = torch.from_numpy(np.asarray(self.frequencies, dtype=np.float32))
        return state

    def load_state_tensors(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        self.frequencies = state["frequencies"].numpy().astype(np.float32)
        adapter = {k[len("adapter."):]: v for k, v in state.items() if k.startswith("adapter.")}
        super().load_state_tensors(adapter, ctx)
        self._matcher = None
