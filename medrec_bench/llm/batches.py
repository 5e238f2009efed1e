"""Padded token batches and the module whose state holds only its trainable tensors."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["PADDING_SIDES", "TokenBatch", "TrainableStateModule", "pad_tokens"]

PADDING_SIDES = ("right", "left")


@dataclass
class TokenBatch:
    """Padded prompts: ``input_ids`` long [B, T], ``attention_mask`` long [B, T] (1 = real token)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device))

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def pad_tokens(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> TokenBatch:
    """Token id lists -> a :class:`TokenBatch` padded with ``pad_id`` on ``side`` (``right`` or ``left``)."""
    if side not in PADDING_SIDES:
        raise ValueError(f"padding side must be one of {PADDING_SIDES}, not {side!r}")
    length = max([len(s) for s in sequences] + [1])
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, seq in enumerate(sequences):
        n = len(seq)
        if not n:
            continue
        cols = slice(0, n) if side == "right" else slice(length - n, length)
        ids[i, cols] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[i, cols] = 1
    return TokenBatch(ids, mask)


class TrainableStateModule(nn.Module):
    """An ``nn.Module`` whose state dict holds only its trainable tensors (LoRA weights, heads), so checkpoints and
    best-state copies stay small even with a frozen 7B backbone. Subclasses call :meth:`freeze_state_keys` once their
    parameters are set up; a strict load must then provide exactly those keys."""

    state_label = "state"  # names the module in a load error, e.g. "teacher state mismatch: ..."

    def freeze_state_keys(self) -> None:
        self._trainable = frozenset(n for n, p in self.named_parameters() if p.requires_grad)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        full = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        return OrderedDict((k, v) for k, v in full.items() if k[len(prefix):] in self._trainable)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        keys = set(state_dict)
        if strict and keys != self._trainable:
            missing, unexpected = sorted(self._trainable - keys), sorted(keys - self._trainable)
            raise RuntimeError(f"{self.state_label} mismatch: missing {missing[:3]}, unexpected {unexpected[:3]} "
                               f"({len(missing)} / {len(unexpected)} keys)")
        return super().load_state_dict(state_dict, strict=False, assign=assign)
