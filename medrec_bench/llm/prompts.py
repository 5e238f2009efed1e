"""A patient's record as an English prompt for LLM recommenders (the LEADER teacher and the LLM baselines).

The prompt (our own wording; ``{...}`` are comma-joined, lower-cased vocabulary names, ``none`` for an empty list)::

    [Patient profile: age group 45-64, gender f.]                  <- only with include_profile=True
    The patient has 2 previous hospital visits.                     <- or "... 5 previous hospital visits; the 3
                                                                       most recent are described below." / "no"
    Visit 1: diagnoses were {dx of visit 1}; procedures were {px}; prescribed drug classes were {drugs}.
    Visit 2: ...
    Current visit: diagnoses are {dx}; procedures are {px}.
    The drug classes to prescribe for the current visit are:

Visit numbers count from the patient's first visit, so with ``max_history=3`` and 5 earlier visits the shown
history visits are numbered 3, 4 and 5. Each history visit shows its OWN diagnoses (the authors' template repeated
the current visit's diagnoses there) and the wording is neutral ("the patient", never "he").

Truncation (:func:`fit_prompt`): the oldest shown history visits are dropped first until the tokenized prompt fits
``max_length``; the current visit is never dropped. If the current visit alone is still too long, its diagnosis and
procedure lists are cut from the end (always shortening the longer of the two lists first), keeping the sentence
structure; the visit-count sentence still gives the true number of previous visits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medrec_bench.data.schema import Vocabularies, Vocabulary
from medrec_bench.tasks.protocols import Sample

__all__ = ["PromptConfig", "answer_text", "build_prompt", "count_tokens", "drug_names", "fit_prompt",
           "QUESTION"]

#: the unfinished sentence that ends every prompt
QUESTION = "The drug classes to prescribe for the current visit are:"


@dataclass(frozen=True)
class PromptConfig:
    """How a sample becomes text: ``max_history`` previous visits shown (the most recent ones),
    ``include_profile`` (a profile sentence; off by default as in the paper), ``max_length`` in tokens."""

    max_history: int = 3
    include_profile: bool = False
    max_length: int = 2048

    def __post_init__(self) -> None:
        if self.max_history < 0:
            raise ValueError(f"max_history must be >= 0, not {self.max_history}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, not {self.max_length}")


def _names(indices: Sequence[int], vocabulary: Vocabulary) -> list[str]:
    out = []
    for i in indices:
        name = vocabulary.names[i].strip()
        if not name:  # a code without a title: show the code itself (without its namespace prefix)
            name = vocabulary.codes[i].partition(":")[2] or vocabulary.codes[i]
        out.append(name.lower())
    return out


def _join(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def drug_names(drugs: Sequence[int], vocab: Vocabularies) -> list[str]:
    """Lower-cased WHO ATC class names of drug indices ``drugs`` (in the given order)."""
    return _names(drugs, vocab.drugs)


def answer_text(drugs: Sequence[int], vocab: Vocabularies) -> str:
    """The drug names comma-joined (``"antacids, opioids"``): the target text of a generative baseline."""
    return ", ".join(drug_names(drugs, vocab))


def _profile_sentence(sample: Sample, vocab: Vocabularies) -> str | None:
    parts = []
    for field, index in sample.profile.items():
        vocabulary = vocab.profile.get(field)
        if vocabulary is None or not 0 <= index < len(vocabulary):
            continue
        value = vocabulary.names[index].strip().lower()
        if value:
            parts.append(f"{field.replace('_', ' ')} {value}")
    return f"Patient profile: {', '.join(parts)}." if parts else None


def _count_sentence(n_previous: int, n_shown: int) -> str:
    if n_previous == 0:
        return "The patient has no previous hospital visit."
    visits = "visit" if n_previous == 1 else "visits"
    sentence = f"The patient has {n_previous} previous hospital {visits}"
    if n_shown == n_previous:
        return sentence + "."
    if n_shown == 0:
        return sentence + "; none is described below."
    if n_shown == 1:
        return sentence + "; the most recent one is described below."
    return sentence + f"; the {n_shown} most recent are described below."


def _compose(sample: Sample, vocab: Vocabularies, include_profile: bool, n_history: int,
             n_dx: int | None = None, n_px: int | None = None) -> str:
    lines = []
    if include_profile:
        profile = _profile_sentence(sample, vocab)
        if profile:
            lines.append(profile)
    n_previous = len(sample.history)
    n_shown = max(0, min(n_history, n_previous))
    lines.append(_count_sentence(n_previous, n_shown))
    for number in range(n_previous - n_shown + 1, n_previous + 1):
        visit = sample.history[number - 1]
        lines.append(f"Visit {number}: diagnoses were {_join(_names(visit.diagnoses, vocab.diagnoses))}; "
                     f"procedures were {_join(_names(visit.procedures, vocab.procedures))}; "
                     f"prescribed drug classes were {_join(drug_names(visit.drugs, vocab))}.")
    dx = sample.diagnoses if n_dx is None else sample.diagnoses[:n_dx]
    px = sample.procedures if n_px is None else sample.procedures[:n_px]
    lines.append(f"Current visit: diagnoses are {_join(_names(dx, vocab.diagnoses))}; "
                 f"procedures are {_join(_names(px, vocab.procedures))}.")
    lines.append(QUESTION)
    return "\n".join(lines)


def build_prompt(sample: Sample, vocab: Vocabularies, config: PromptConfig = PromptConfig(),
                 n_history: int | None = None) -> str:
    """The prompt of ``sample`` showing its ``n_history`` most recent previous visits (default
    ``config.max_history``; capped by it and by the number of previous visits). No truncation to tokens."""
    shown = config.max_history if n_history is None else min(n_history, config.max_history)
    return _compose(sample, vocab, config.include_profile, shown)


def count_tokens(text: str, tokenizer: Any) -> int:
    """Tokens of ``text`` as the model sees it (with the tokenizer's own special tokens, e.g. a BOS)."""
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def _balanced_cut(n_dx: int, n_px: int, total: int) -> tuple[int, int]:
    """Lengths (a, b) with a + b = total, shortening the longer list first (a <= n_dx, b <= n_px)."""
    a, b = n_dx, n_px
    excess = a + b - total
    # shrink the longer list down to the shorter one, then both alternately (the diagnoses keep the extra one)
    step = min(excess, abs(a - b))
    if a > b:
        a -= step
    else:
        b -= step
    excess -= step
    b -= (excess + 1) // 2
    a -= excess // 2
    return max(a, 0), max(b, 0)


def fit_prompt(sample: Sample, vocab: Vocabularies, tokenizer: Any, config: PromptConfig = PromptConfig(), *,
               reserve: int = 1, counter: Callable[[str], int] | None = None) -> str:
    """The longest prompt of ``sample`` whose token count plus ``reserve`` (default 1: the EOS token the teacher
    appends) fits ``config.max_length``: drops the oldest history visits first, never the current visit; if the
    current visit alone is too long, cuts its diagnosis/procedure lists from the end (see the module docstring).
    If even the bare template does not fit, the bare template is returned (the caller must cut tokens)."""
    count = counter or (lambda text: count_tokens(text, tokenizer))
    budget = config.max_length - reserve
    n_max = min(config.max_history, len(sample.history))
    for n in range(n_max, -1, -1):
        text = _compose(sample, vocab, config.include_profile, n)
        if count(text) <= budget:
            return text
    # the current visit alone is too long: binary search on the number of codes kept
    n_dx, n_px = len(sample.diagnoses), len(sample.procedures)
    lo, hi = 0, n_dx + n_px - 1  # the full lists were just found too long
    best = _compose(sample, vocab, config.include_profile, 0, *_balanced_cut(n_dx, n_px, 0))
    while lo <= hi:
        mid = (lo + hi) // 2
        text = _compose(sample, vocab, config.include_profile, 0, *_balanced_cut(n_dx, n_px, mid))
        if count(text) <= budget:
            best, lo = text, mid + 1
        else:
            hi = mid - 1
    return best
