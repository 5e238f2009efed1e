"""Causal-LM forwards that work across ``transformers`` versions, and batched greedy decoding.

- :func:`call_lm`: a forward that passes the KV cache under the keyword this ``transformers`` version takes
  (``cache`` in 5.x, ``past_key_values`` before) and keeps only the last logits when asked;
- :func:`greedy_decode`: batched greedy decoding with the KV cache (left padding, positions from the mask);
- :func:`input_device`, :func:`output_cache`, :func:`base_model`: small accessors.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .batches import pad_tokens

__all__ = ["base_model", "call_lm", "greedy_decode", "input_device", "output_cache"]


def base_model(model: nn.Module) -> nn.Module:
    """The model under a peft wrapper (the model itself when not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _accepts(model: nn.Module, name: str) -> bool:
    return name in inspect.signature(base_model(model).forward).parameters


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
