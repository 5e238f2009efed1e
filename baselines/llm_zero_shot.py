"""``llm_zero_shot``: an instruction-tuned causal LM, no fine-tuning, scoring every drug name after the prompt.

The score of drug ``j`` for a sample is the length-normalised log-likelihood of its name after the prompt::

    s_j = (1 / L_j) * sum_t log p(c_t | prompt, c_<t)        c = tokens of " " + name_j, L_j = len(c)

(natural log, nats per token; names are the lower-cased WHO ATC names of :func:`medrec_bench.llm.prompts.drug_names`,
tokenized without special tokens; the prompt is :func:`medrec_bench.llm.prompts.fit_prompt` with ``reserve`` = the
longest name, so prompt + name fits ``max_length``). Drugs sharing a name share the score.

Candidates are scored in batches of ``candidate_batch_size`` (sorted by token length, so little padding). With
``use_prompt_cache=True`` (default) the prompt runs once; its KV cache (a ``DynamicCache``, copied and repeated over
the candidate batch with ``batch_repeat_interleave``, so the stored prompt cache is never mutated) is reused by every
candidate batch, which then only runs the candidate tokens (transformers 5.x takes the cache as ``cache=``, older
versions as ``past_key_values=``: :func:`medrec_bench.llm.calls.call_lm` picks by signature). With
``use_prompt_cache=False`` each batch recomputes prompt + candidate rows from scratch (the reference path). Both give
the same scores up to float rounding: within 1e-4 (tests, float64; SmolLM2-135M in float32 differs by < 1e-5).

From scores to probabilities (per sample, monotone, so the ranking and PRAUC are the scores'): with ``k`` the set
size, ``tau`` the midpoint between the k-th and (k+1)-th highest score, ``p_j = sigmoid(s_j - tau)``: the top-k get
p > 0.5 and the rest p < 0.5 (equal scores at the cut both get 0.5, i.e. both are recommended), so threshold 0.5
gives the top-k set. ``k = top_k`` when > 0, else fitted on train as the rounded mean number of drugs per visit
(at least 1). ``fit`` only computes ``k``; the checkpoint holds ``k`` and the backbone seed (which only matters for
the random ``tiny-llama`` test backbone) as tensors: no trained weights.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from medrec_bench.llm.backbones import Backbone, load_backbone
from medrec_bench.llm.calls import call_lm, input_device, output_cache
from medrec_bench.llm.prompts import PromptConfig, drug_names
from medrec_bench.llm.tokens import PromptTokens
from medrec_bench.models import Context, Recommender
from medrec_bench.registry import Range
from medrec_bench.tasks.protocols import Sample

__all__ = ["LLMZeroShot", "topk_probabilities"]


def topk_probabilities(scores: np.ndarray, k: int) -> np.ndarray:
    """float32 [n, m]: ``sigmoid(score - tau_i)`` with ``tau_i`` the midpoint between row i's k-th and (k+1)-th
    highest score (``scores`` float [n, m]; k >= m puts every drug above 0.5)."""
    scores = np.asarray(scores, dtype=np.float64)
    n, m = scores.shape
    if n == 0 or m == 0:
        return np.zeros((n, m), dtype=np.float32)
    ordered = -np.sort(-scores, axis=1)
    if k >= m:
        tau = ordered[:, -1] - 1.0
    elif k <= 0:
        tau = ordered[:, 0] + 1.0
    else:
        tau = (ordered[:, k - 1] + ordered[:, k]) / 2.0
    return (1.0 / (1.0 + np.exp(-(scores - tau[:, None])))).astype(np.float32)


class LLMZeroShot(Recommender):
    """Zero-shot drug ranking by length-normalised log-likelihood (see the module docstring).

    Units: ``max_length`` tokens; ``candidate_batch_size`` drug names per forward; ``top_k`` drugs (0 = fitted).
    ``seed`` only seeds the random ``tiny-llama`` test backbone (scoring itself is deterministic).
    """

    default_threshold: ClassVar[float] = 0.5
    param_ranges: ClassVar[dict[str, Range]] = {"max_history": Range(ge=0), "max_length": Range(ge=1),
                                                "candidate_batch_size": Range(ge=1), "top_k": Range(ge=0)}
    test_params: ClassVar[dict[str, Any]] = {"backbone": "tiny-llama", "max_length": 256,
                                             "candidate_batch_size": 128}

    def __init__(self, *, backbone: str = "smollm2-135m", dtype: str = "float32", max_history: int = 3,
                 include_profile: bool = False, max_length: int = 2048, use_prompt_cache: bool = True,
                 candidate_batch_size: int = 32, top_k: int = 0, seed: int | None = None) -> None:
        if candidate_batch_size < 1:
            raise ValueError(f"candidate_batch_size must be >= 1, not {candidate_batch_size}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = fitted), not {top_k}")
        self.backbone = backbone
        self.dtype = dtype
        self.max_history = max_history
        self.include_profile = include_profile
        self.max_length = max_length
        self.use_prompt_cache = use_prompt_cache
        self.candidate_batch_size = candidate_batch_size
        self.top_k = top_k
        self.seed = seed
        self.k: int | None = None
        self.backbone_seed: int | None = None
        self.ctx: Context | None = None
        self._backbone: Backbone | None = None
        self._candidates: list[list[int]] = []
        self._prompts: PromptTokens | None = None

    @property
    def prompt_config(self) -> PromptConfig:
        return PromptConfig(max_history=self.max_history, include_profile=self.include_profile,
                            max_length=self.max_length)

    # --- set-up ------------------------------------------------------------------------------------------------------
    def _setup(self, ctx: Context, backbone_seed: int) -> None:
        self.ctx = ctx
        self.backbone_seed = backbone_seed
        self._backbone = load_backbone(self.backbone, dtype=self.dtype, with_lm_head=True, device=ctx.device,
                                       seed=backbone_seed)
        if not self._backbone.is_causal_lm:
            raise ValueError(f"llm_zero_shot needs a causal LM backbone; {self.backbone!r} is an encoder")
        tok = self._backbone.tokenizer
        self._candidates = [list(tok(" " + name, add_special_tokens=False)["input_ids"]) or [tok.unk_token_id or 0]
                            for name in drug_names(range(ctx.n_drugs), ctx.vocab)]
        if max(len(c) for c in self._candidates) >= self.max_length:
            raise ValueError(f"max_length {self.max_length} leaves no room for the prompt")
        self._prompts = PromptTokens(tok, ctx.vocab, self.prompt_config,
                                     reserve=max(len(c) for c in self._candidates))

    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "LLMZeroShot":
        if not train:
            raise ValueError("no training samples")
        self._setup(ctx, ctx.seed if self.seed is None else self.seed)
        self.k = self.top_k or max(1, int(round(float(np.mean([len(set(s.target)) for s in train])))))
        return self

    @property
    def candidates(self) -> list[list[int]]:
        """Token ids of every drug name (``" " + name``, no special tokens), aligned with ``ctx.vocab.drugs``."""
        return self._candidates

    def prompt_ids(self, sample: Sample) -> list[int]:
        """The prompt's token ids (tokenizer's special tokens, no EOS), leaving room for the longest name."""
        if self._prompts is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._prompts(sample)

    # --- scoring -----------------------------------------------------------------------------------------------------
    def _pad_candidates(self, rows: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
        assert self._backbone is not None
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self._backbone.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, :len(r)] = 1
        return ids.to(device), mask.to(device)

    def _candidate_batches(self) -> list[list[int]]:
        """Drug indices in batches of ``candidate_batch_size``, shortest names first (little padding)."""
        order = sorted(range(len(self._candidates)), key=lambda j: (len(self._candidates[j]), j))
        step = self.candidate_batch_size
        return [order[i:i + step] for i in range(0, len(order), step)]

    @staticmethod
    def _logprob_sum(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sum of log p over the real tokens: ``logits`` [C, L, V] predict ``ids`` [C, L] (mask [C, L]) ->
        float64 [C]."""
        real = mask.bool()
        rows = real.nonzero()[:, 0]
        picked = logits[real].float()  # [N real tokens, V]: padding positions never reach the softmax
        logp = picked.gather(-1, ids[real][:, None])[:, 0] - torch.logsumexp(picked, dim=-1)
        return torch.zeros(ids.shape[0], dtype=torch.float64, device=logp.device).index_add_(0, rows, logp.double())

    def _score_cached(self, model: torch.nn.Module, prompt: list[int], device: torch.device) -> np.ndarray:
        p_ids = torch.as_tensor([prompt], dtype=torch.long, device=device)
        p_mask = torch.ones_like(p_ids)
        out = call_lm(model, p_ids, p_mask, use_cache=True, last_logits=1)
        prompt_cache, first_logits = output_cache(out), out.logits[:, -1:]  # [1, 1, V]: predicts each first token
        scores = np.zeros(len(self._candidates))
        for batch in self._candidate_batches():
            ids, mask = self._pad_candidates([self._candidates[j] for j in batch], device)
            c = ids.shape[0]
            total = self._logprob_sum(first_logits.expand(c, -1, -1), ids[:, :1], mask[:, :1])
            if ids.shape[1] > 1:
                cache = copy.deepcopy(prompt_cache)  # the prompt's cache stays untouched for the next batch
                cache.batch_repeat_interleave(c)
                feed = ids[:, :-1]
                full_mask = torch.cat([p_mask.expand(c, -1), mask[:, :-1]], dim=1)
                positions = (len(prompt) + torch.arange(feed.shape[1], device=device)).expand(c, -1)
                rest = call_lm(model, feed, full_mask, position_ids=positions, cache=cache, use_cache=True).logits
                total += self._logprob_sum(rest, ids[:, 1:], mask[:, 1:])  # [C, L - 1, V] predict tokens 1..L-1
            scores[batch] = (total / mask.sum(-1).double()).cpu().numpy()
        return scores

    def _score_uncached(self, model: torch.nn.Module, prompt: list[int], device: torch.device) -> np.ndarray:
        p_ids = torch.as_tensor([prompt], dtype=torch.long, device=device)
        scores = np.zeros(len(self._candidates))
        for batch in self._candidate_batches():
            ids, mask = self._pad_candidates([self._candidates[j] for j in batch], device)
            c, length = ids.shape
            full = torch.cat([p_ids.expand(c, -1), ids], dim=1)
            full_mask = torch.cat([torch.ones_like(p_ids).expand(c, -1), mask], dim=1)
            # the last length + 1 positions; dropping the final one leaves the L positions predicting the name
            logits = call_lm(model, full, full_mask, last_logits=length + 1).logits[:, :-1]
            scores[batch] = (self._logprob_sum(logits, ids, mask) / mask.sum(-1).double()).cpu().numpy()
        return scores

    def scores(self, samples: Sequence[Sample]) -> np.ndarray:
        """float32 [n, |M|] length-normalised log-likelihoods (nats per token) of every drug name."""
        if self._backbone is None or self.ctx is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        model = self._backbone.model
        device = input_device(model)
        score = self._score_cached if self.use_prompt_cache else self._score_uncached
        out = np.zeros((len(samples), self.ctx.n_drugs), dtype=np.float32)
        with torch.inference_mode(), tqdm(total=len(samples), desc="llm_zero_shot score", unit="patient",
                                          disable=not self.ctx.progress, leave=False) as bar:
            for i, sample in enumerate(samples):
                out[i] = score(model, self.prompt_ids(sample), device)
                bar.update(1)
        return out

    def predict_proba(self, samples: Sequence[Sample]) -> np.ndarray:
        """float32 [n, |M|]: top-k drugs > 0.5, the rest < 0.5, in score order (see the module docstring)."""
        if self.k is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return topk_probabilities(self.scores(samples), self.k)

    # --- persistence: the calibration scalar only -------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.k is None or self.backbone_seed is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return {"k": torch.tensor([self.k], dtype=torch.int64),
                "backbone_seed": torch.tensor([self.backbone_seed], dtype=torch.int64)}

    def load_state_tensors(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        self.k = int(state["k"][0])
        self._setup(ctx, int(state["backbone_seed"][0]))
