"""Prompts tokenised once: each sample's prompt is built, fitted to the token budget and tokenised on first use, and
its token ids are reused by every later batch (training epochs, validation, prediction, features)."""

from __future__ import annotations

from typing import Any

from medrec_bench.data.schema import Vocabularies
from medrec_bench.tasks.protocols import Sample

from .prompts import PromptConfig, fit_prompt

__all__ = ["PromptTokens"]


class PromptTokens:
    """Token ids of each sample's prompt, cached per (patient id, visit id).

    The prompt (:func:`~medrec_bench.llm.prompts.fit_prompt`) leaves ``reserve`` tokens of ``config.max_length``
    free for what follows it (an answer, a candidate name, the EOS token); it is tokenised with the tokenizer's own
    special tokens (e.g. a BOS), a trailing EOS the tokenizer adds itself is removed, and the ids are cut to
    ``max_length - reserve`` (the cut only bites when even the bare template is too long). With ``append_eos`` the
    EOS token is then appended (it must be counted in ``reserve``), as the teacher pools at it.
    """

    def __init__(self, tokenizer: Any, vocab: Vocabularies, config: PromptConfig, *, reserve: int = 0,
                 append_eos: bool = False) -> None:
        if not 0 <= reserve < config.max_length:
            raise ValueError(f"need 0 <= reserve ({reserve}) < max_length ({config.max_length})")
        if append_eos and reserve < 1:
            raise ValueError("append_eos needs reserve >= 1 (the EOS token takes one place)")
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.config = config
        self.reserve = reserve
        self.append_eos = append_eos
        self._ids: dict[tuple[str, str], list[int]] = {}

    def __call__(self, sample: Sample) -> list[int]:
        """The sample's token ids (at most ``max_length - reserve``, plus the EOS with ``append_eos``)."""
        key = (sample.patient_id, sample.visit_id)
        ids = self._ids.get(key)
        if ids is None:
            tok = self.tokenizer
            text = fit_prompt(sample, self.vocab, tok, self.config, reserve=self.reserve)
            ids = list(tok(text, add_special_tokens=True)["input_ids"])
            if ids and ids[-1] == tok.eos_token_id:  # a tokenizer that appends EOS itself
                ids = ids[:-1]
            ids = ids[: self.config.max_length - self.reserve]
            if self.append_eos:
                ids.append(tok.eos_token_id)
            self._ids[key] = ids
        return ids

    def __len__(self) -> int:
        """Number of samples tokenised so far."""
        return len(self._ids)
