"""Generated text -> drug indices for the generative LLM baseline (``llm_generative``).

:class:`DrugNameMatcher` matches by exact then fuzzy (``difflib``) name comparison, re-joins names that contain
commas and counts out-of-vocabulary names (:class:`ParsedAnswer`). Prompts, backbones and decoding live in
:mod:`medrec_bench.llm`; nothing here builds text or calls a model.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DrugNameMatcher", "ParsedAnswer", "normalize_name"]
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
