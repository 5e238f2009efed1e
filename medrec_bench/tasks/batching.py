"""Padded tensors for torch models. Padding uses an explicit value (by default the vocabulary size, so a model can
give ``nn.Embedding(n + 1, d, padding_idx=n)``) and every padded tensor comes with a bool mask (True = real)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch

from .protocols import Sample


def pad_sets(sets: Sequence[Sequence[int]], pad: int, min_len: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Code sets -> (long [B, L], bool mask [B, L]) with L = max(len, min_len); each row's codes come first, in
    their order, then ``pad``."""
    lengths, flat = _flatten(sets)
    length = max(int(lengths.max(initial=0)), min_len)
    mask = np.arange(length)[None, :] < lengths[:, None]
    out = np.full((len(sets), length), pad, dtype=np.int64)
    out[mask] = flat  # row-major: row i's first len(set_i) cells receive set_i
    return torch.from_numpy(out), torch.from_numpy(mask)


def multi_hot(sets: Sequence[Sequence[int]], size: int) -> torch.Tensor:
    """Code sets -> float [B, size] with 1.0 at each member."""
    lengths, flat = _flatten(sets)
    out = np.zeros((len(sets), size), dtype=np.float32)
    out[np.repeat(np.arange(len(sets)), lengths), flat] = 1.0
    return torch.from_numpy(out)


def _flatten(sets: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(length of each set, all members concatenated in order) as int64 arrays."""
    lengths = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    return lengths, np.fromiter(chain.from_iterable(sets), dtype=np.int64, count=int(lengths.sum()))


@dataclass
class VisitBatch:
    """A batch of samples as a sequence of visits each: the history visits then the current one.

    ``diagnoses`` long [B, V, Ld], ``procedures`` long [B, V, Lp], ``drugs`` long [B, V, Lm] (the current visit's
    drugs are masked out: the row is all padding), their masks, ``visit_mask`` bool [B, V] (True = a real visit;
    visits are left-aligned, the current visit at index ``n_visits - 1``), ``n_visits`` long [B],
    ``profile`` long [B, F], ``target`` float [B, |M|] multi-hot.
    """

    diagnoses: torch.Tensor
    diagnoses_mask: torch.Tensor
    procedures: torch.Tensor
    procedures_mask: torch.Tensor
    drugs: torch.Tensor
    drugs_mask: torch.Tensor
    visit_mask: torch.Tensor
    n_visits: torch.Tensor
    profile: torch.Tensor
    target: torch.Tensor

    def to(self, device: torch.device | str) -> "VisitBatch":
        return VisitBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def _pad_visits(rows: list[list[tuple[int, ...]]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    n_visits = max(len(r) for r in rows)
    flat = [r[v] if v < len(r) else () for r in rows for v in range(n_visits)]
    codes, mask = pad_sets(flat, pad)
    return codes.view(len(rows), n_visits, -1), mask.view(len(rows), n_visits, -1)


def collate_visits(samples: Sequence[Sample], n_diagnoses: int, n_procedures: int, n_drugs: int,
                   profile_fields: Sequence[str] = (), max_history: int | None = None) -> VisitBatch:
    """Pad ``samples`` into a :class:`VisitBatch`; pad values are the vocabulary sizes.

    ``max_history`` keeps only the most recent history visits (None = all).
    """
    if max_history is None:
        hist = [s.history for s in samples]
    else:
        hist = [s.history[-max_history:] if max_history > 0 else () for s in samples]
    dx = [[v.diagnoses for v in h] + [s.diagnoses] for h, s in zip(hist, samples)]
    px = [[v.procedures for v in h] + [s.procedures] for h, s in zip(hist, samples)]
    rx = [[v.drugs for v in h] + [()] for h in hist]
    d, dm = _pad_visits(dx, n_diagnoses)
    p, pm = _pad_visits(px, n_procedures)
    m, mm = _pad_visits(rx, n_drugs)
    n_visits = torch.tensor([len(h) + 1 for h in hist], dtype=torch.long)
    visit_mask = torch.arange(d.shape[1])[None, :] < n_visits[:, None]
    profile = torch.tensor([[s.profile[f] for f in profile_fields] for s in samples], dtype=torch.long)
    profile = profile.view(len(samples), len(profile_fields))
    return VisitBatch(d, dm, p, pm, m, mm, visit_mask, n_visits, profile,
                      multi_hot([s.target for s in samples], n_drugs))


def targets_matrix(samples: Sequence[Sample], n_drugs: int) -> "torch.Tensor":
    """bool [N, |M|] ground truth of ``samples``."""
    return multi_hot([s.target for s in samples], n_drugs).bool()


def bag_of_codes(samples: Sequence[Sample], n_diagnoses: int, n_procedures: int, n_drugs: int) -> torch.Tensor:
    """float [B, |D| + |P| + |M|]: multi-hot current diagnoses, current procedures and the previous visit's drugs
    (all zeros for a first visit)."""
    dx = multi_hot([s.diagnoses for s in samples], n_diagnoses)
    px = multi_hot([s.procedures for s in samples], n_procedures)
    rx = multi_hot([s.history[-1].drugs if s.history else () for s in samples], n_drugs)
    return torch.cat([dx, px, rx], dim=1)


def length_bucketed_order(order: Sequence[int], lengths: Sequence[int], batch_size: int,
                          rng: np.random.Generator, window_batches: int = 50) -> list[int]:
    """A training order whose consecutive ``batch_size`` chunks hold samples of similar length.

    ``order`` (a shuffled permutation of the samples) is cut into windows of ``window_batches`` batches; each window
    is sorted by ``lengths`` (stable) and cut into batches; the full batches are then shuffled with ``rng`` (a last,
    partial batch stays last, so chunking the result by ``batch_size`` gives exactly these batches). Returns the
    flattened order."""
    if batch_size < 1 or window_batches < 1:
        raise ValueError(f"batch_size ({batch_size}) and window_batches ({window_batches}) must be >= 1")
    order = list(order)
    window = batch_size * window_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    partial = [b for b in batches if len(b) < batch_size]
    full = [b for b in batches if len(b) == batch_size]
    return [i for b in [full[j] for j in rng.permutation(len(full))] + partial for i in b]


def padding_fraction(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """Share of padded positions when ``order`` is cut into batches of ``batch_size`` sequences of ``lengths``
    (each batch padded to its longest): 1 - real tokens / padded tokens; 0.0 for no tokens."""
    real = padded = 0
    for start in range(0, len(order), batch_size):
        chunk = [lengths[i] for i in order[start:start + batch_size]]
        real += sum(chunk)
        padded += max(chunk, default=0) * len(chunk)
    return 1.0 - real / padded if padded else 0.0
