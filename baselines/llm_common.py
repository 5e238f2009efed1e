"""Shared pieces of the LLM recommender baselines (``llm_generative``, ``llm_zero_shot``, ``llm_embed_probe``).

- :class:`DrugNameMatcher`: generated text -> drug indices, by exact then fuzzy (``difflib``) name matching, with
  out-of-vocabulary counting;
- :func:`greedy_decode`: batched greedy decoding with the model's KV cache (left padding, positions from the mask);
- :func:`call_lm`: a causal LM forward that passes the KV cache under the keyword this ``transformers`` version
  takes (``cache`` in 5.x, ``past_key_values`` before) and keeps only the last logits when asked;
- :class:`AdapterLM`: a module around a LoRA-adapted causal LM whose ``state_dict`` holds only trainable tensors.

Prompts and backbones come from :mod:`leader.prompts` and :mod:`leader.backbones`; nothing here builds text.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from leader.lora import LORA_TARGETS, apply_lora
from leader.teacher import TrainableStateModule, pad_tokens

__all__ = ["AdapterLM", "DrugNameMatcher", "LORA_TARGETS", "ParsedAnswer", "apply_lora", "call_lm",
           "greedy_decode", "input_device", "normalize_name", "output_cache"]
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_SEPARATORS = re.compile(r"[,;\n]")


# --- name matching ------------------------------------------------------------------------------------------------
def _count_pieces(name: str) -> int:
    return sum(1 for p in _SEPARATORS.split(name) if normalize_name(p))


def normalize_name(text: str) -> str:
    """Lower-case, every run of non-alphanumeric characters -> one space, stripped (``"Gastro-Oesophageal (GORD)"``
    -> ``"gastro oesophageal gord"``), so tokenizer spacing and punctuation never decide a match."""
    return _NON_ALNUM.sub(" ", text.lower()).strip()


@dataclass
class ParsedAnswer:
    """One generated answer: ``drugs`` (drug indices, first-mention order, no repeats), ``names`` (the text segments
    read as drug names, in order), ``matched`` (per segment: the drug index, or None when out of vocabulary)."""

    drugs: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    matched: list[int | None] = field(default_factory=list)

    @property
    def n_names(self) -> int:
        return len(self.names)

    @property
    def n_oov(self) -> int:
        """Segments that matched no drug (out-of-vocabulary names)."""
        return sum(m is None for m in self.matched)


class DrugNameMatcher:
    """Maps generated text to drug indices.

    The text is split at ``,``, ``;`` and newlines into pieces. Because some WHO ATC names contain commas
    (``"antiarrhythmics, class i and iii"``), consecutive pieces may form one name: a dynamic programme segments the
    pieces to maximise the covered pieces weighted by match quality (exact match 1, fuzzy match its ``difflib`` ratio,
    no match 0; only single pieces may be unmatched; ties: fewer segments). Matching compares
    :func:`normalize_name` forms; a fuzzy match needs ratio >= ``threshold`` (1.0 = exact only) and, for a span of
    several pieces, a name of at least that many comma-separated pieces (so junk after a name is never absorbed
    into it: ``"antacids, made-up drug"`` is one match and one out-of-vocabulary name). Several drugs with the same
    name (ATC has e.g. three ``"antiinfectives"``) map to the one with the highest ``priority`` (training frequency;
    ties: lowest index).
    """

    def __init__(self, names: Sequence[str], threshold: float = 0.8,
                 priority: Sequence[float] | np.ndarray | None = None) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"match threshold must be in (0, 1], not {threshold}")
        self.threshold = float(threshold)
        prio = np.zeros(len(names)) if priority is None else np.asarray(priority, dtype=np.float64)
        self._exact: dict[str, int] = {}
        self._pieces: dict[str, int] = {}
        for index, name in enumerate(names):
            key = normalize_name(name)
            if not key:
                continue
            best = self._exact.get(key)
            if best is None or prio[index] > prio[best]:
                self._exact[key] = index
            self._pieces[key] = max(self._pieces.get(key, 1), _count_pieces(name))
        self._keys = sorted(self._exact)
        self.max_span = max(self._pieces.values(), default=1)
        self._fuzzy: dict[tuple[str, int], tuple[int | None, float]] = {}

    def match(self, text: str, pieces: int = 1) -> tuple[int | None, float]:
        """(drug index or None, score): exact -> 1.0; else the best fuzzy ratio if >= threshold among the names of
        at least ``pieces`` comma-separated pieces; else (None, 0)."""
        key = normalize_name(text)
        if key in self._exact:
            return self._exact[key], 1.0
        if self.threshold >= 1.0 or not key:
            return None, 0.0
        cached = self._fuzzy.get((key, pieces))
        if cached is None:
            best, best_ratio = None, 0.0
            matcher = difflib.SequenceMatcher(None, autojunk=False)
            matcher.set_seq2(key)
            for name in self._keys:
                if self._pieces[name] < pieces:
                    continue
                # 2 * min / (la + lb) bounds the ratio from above: skip hopeless lengths cheaply
                if 2 * min(len(name), len(key)) / (len(name) + len(key)) < max(self.threshold, best_ratio):
                    continue
                matcher.set_seq1(name)
                if matcher.quick_ratio() < max(self.threshold, best_ratio):
                    continue
                ratio = matcher.ratio()
                if ratio > best_ratio:  # names are sorted: ties go to the alphabetically first
                    best, best_ratio = name, ratio
            cached = (self._exact[best], best_ratio) if best is not None and best_ratio >= self.threshold \
                else (None, 0.0)
            self._fuzzy[(key, pieces)] = cached
        return cached

    def parse(self, text: str) -> ParsedAnswer:
        """Segment ``text`` into drug names (see the class docstring)."""
        pieces = [p.strip() for p in _SEPARATORS.split(text)]
        pieces = [p for p in pieces if normalize_name(p)]
        n = len(pieces)
        # best[i]: (score, -segments) of the best segmentation of pieces[:i]; back[i]: (start, drug or None)
        best: list[tuple[float, int]] = [(0.0, 0)] + [(-1.0, 0)] * n
        back: list[tuple[int, int | None]] = [(0, None)] * (n + 1)
        for end in range(1, n + 1):
            for start in range(max(0, end - self.max_span), end):
                span = end - start
                drug, ratio = self.match(", ".join(pieces[start:end]), span)
                if drug is None and span > 1:
                    continue
                candidate = (best[start][0] + ratio * span, best[start][1] - 1)
                if candidate > best[end]:
                    best[end], back[end] = candidate, (start, drug)
        segments: list[tuple[str, int | None]] = []
        end = n
        while end > 0:
            start, drug = back[end]
            segments.append((", ".join(pieces[start:end]), drug))
            end = start
        segments.reverse()
        out = ParsedAnswer(names=[s for s, _ in segments], matched=[d for _, d in segments])
        seen: set[int] = set()
        for drug in out.matched:
            if drug is not None and drug not in seen:
                seen.add(drug)
                out.drugs.append(drug)
        return out


# --- model calls ----------------------------------------------------------------------------------------------------
def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _accepts(model: nn.Module, name: str) -> bool:
    return name in inspect.signature(_base(model).forward).parameters


def input_device(model: nn.Module) -> torch.device:
    """Where a model's inputs go (its input embeddings' device; with ``device="auto"`` the model is spread)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and getattr(embeddings, "weight", None) is not None:
        return embeddings.weight.device
    return next(model.parameters()).device


def output_cache(output: Any) -> Any:
    """The KV cache of a model output (``.cache`` in transformers 5.x, ``.past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def call_lm(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
            position_ids: torch.Tensor | None = None, cache: Any = None, use_cache: bool = False,
            last_logits: int = 0) -> Any:
    """Forward of a causal LM: ``input_ids`` / ``attention_mask`` long [B, T] (the mask covers cached tokens too:
    [B, cached + T]); ``cache`` a KV cache (passed as ``cache`` or ``past_key_values``, whichever the model takes);
    ``last_logits`` > 0 keeps only the logits of the last that many positions (when the model supports it; the
    output is then sliced here otherwise). Returns the model output (``.logits`` float [B, T or last, vocab])."""
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": use_cache}
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if cache is not None or use_cache:
        kwargs["cache" if _accepts(model, "cache") else "past_key_values"] = cache
    keep = last_logits and _accepts(model, "logits_to_keep")
    if keep:
        kwargs["logits_to_keep"] = last_logits
    out = model(**kwargs)
    if last_logits and not keep:
        out.logits = out.logits[:, -last_logits:]
    return out


@torch.no_grad()
def greedy_decode(model: nn.Module, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, eos_id: int,
                  pad_id: int) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids), batched with left padding and the KV cache.

    Returns per prompt the generated ids without the EOS token: at most ``max_new_tokens`` of them, fewer when EOS
    (``eos_id``) comes first. Positions count real tokens only, so a prompt decodes the same alone or in a batch (up
    to float rounding). Deterministic: ties in the argmax go to the lowest token id.
    """
    if not prompts:
        return []
    device = input_device(model)
    batch = pad_tokens(prompts, pad_id, "left").to(device)
    ids, mask = batch.input_ids, batch.attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    n = ids.shape[0]
    finished = [False] * n
    out: list[list[int]] = [[] for _ in range(n)]
    cache = None
    step_ids, step_positions = ids, positions
    for _ in range(max_new_tokens):
        result = call_lm(model, step_ids, mask, position_ids=step_positions, cache=cache, use_cache=True,
                         last_logits=1)
        cache = output_cache(result)
        tokens = result.logits[:, -1].float().argmax(-1).tolist()
        for row, t in enumerate(tokens):
            if finished[row]:
                tokens[row] = pad_id  # a finished row keeps running (batched) on padding, never read
            elif t == eos_id:
                finished[row] = True
            else:
                out[row].append(t)
        if all(finished):
            break
        step_ids = torch.tensor(tokens, dtype=torch.long, device=device)[:, None]
        step_positions = step_positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)
    return out


# --- LoRA -----------------------------------------------------------------------------------------------------------
class AdapterLM(TrainableStateModule):
    """A LoRA-adapted causal LM (``peft_model``) whose ``state_dict`` / ``load_state_dict`` cover only the trainable
    tensors (the adapters), so best-state copies and checkpoints stay small; the frozen backbone is rebuilt from its
    name. ``lm``: the model to call (the base model, adapters injected)."""

    state_label = "adapter state"

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.freeze_state_keys()

    @property
    def lm(self) -> nn.Module:
        return _base(self.peft_model)

    def to(self, *args: Any, **kwargs: Any) -> "AdapterLM":
        if args and isinstance(args[0], str) and args[0] == "auto":  # already placed by accelerate
            return self
        return super().to(*args, **kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits float [B, T, vocab]."""
        return call_lm(self.lm, input_ids, attention_mask).logits
