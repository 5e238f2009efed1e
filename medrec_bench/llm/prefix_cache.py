"""Frozen-prefix hidden states for LoRA on the top ``k`` blocks of a decoder-only LM.

With LoRA adapters only on the top ``k`` of ``L`` transformer blocks, everything below block ``L - k`` is frozen:
the hidden states that enter that block depend on the prompt alone. :class:`DecoderSplit` cuts a decoder (a
Hugging Face ``*Model`` with ``.layers`` and ``.norm``, e.g. Llama / SmolLM2, Mistral, Qwen2) into two views that
share its weights: ``bottom`` (embeddings + blocks ``0 .. L-k-1``, no final norm) and ``top`` (blocks
``L-k .. L-1`` + final norm, fed through ``inputs_embeds``). Both run through the model's own ``forward`` (so the
causal mask, the rotary position embeddings and the attention implementation are the model's), with positions
counted over real tokens (``cumsum(mask) - 1``) so left and right padding agree.

:class:`PrefixStates` computes the bottom's output once per sample (inference mode, no autograd, optionally through
int8 dynamically quantised Linear layers on CPU) and keeps it in an :class:`~medrec_bench.llm.features.ArrayStore`
(float16 [tokens, hidden] per sample, memory-mapped shards on disk). Rows are keyed by the sample and its token ids
(so a truncated prompt is stored as truncated); the folder is keyed by the backbone fingerprint, the prompt
settings, ``k`` and the prefix precision.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .backbones import Backbone, backbone_fingerprint
from .batches import PADDING_SIDES, TokenBatch, pad_tokens
from .calls import base_model
from .features import ArrayStore, sample_key
from .lora import apply_lora

__all__ = ["PREFIX_DTYPES", "DecoderSplit", "PrefixBatch", "PrefixStates", "TopLoRA", "check_lora_layers",
           "check_prefix_dtype",
           "decoder_of", "last_positions", "mask_positions", "top_lora"]

#: how the frozen prefix is computed: in the backbone's own dtype, or with int8 dynamically quantised Linear layers
PREFIX_DTYPES = ("backbone", "int8")


def mask_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids long [B, T] counting real tokens only (``mask`` [B, T], 1 = real), 0 on padding."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index long [B] of the last real token of each row of ``mask`` [B, T] (1 = real; left or right padding)."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * positions).argmax(dim=1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` [..., head_dim] (halves rotated) with ``cos`` / ``sin`` broadcast to it."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder stack (the module holding ``.layers`` and ``.norm``) of a backbone, a ``*ForCausalLM`` or a peft
    wrapper of either; a ValueError for a model without one (e.g. an encoder such as MiniLM)."""
    model = base_model(model)
    for candidate in (model, getattr(model, "model", None)):
        if candidate is not None and isinstance(getattr(candidate, "layers", None), nn.ModuleList) \
                and hasattr(candidate, "norm"):
            return candidate
    raise ValueError(f"{type(model).__name__} has no decoder stack with .layers and .norm: top-k LoRA with a frozen "
                     f"prefix needs a decoder-only LM (Llama-style)")


def _view(decoder: nn.Module, layers: Sequence[nn.Module], norm: nn.Module) -> nn.Module:
    """A shallow copy of ``decoder`` with its own module table: ``layers`` and ``norm`` replaced, every other
    submodule and every weight shared."""
    view = copy.copy(decoder)
    view._modules = dict(decoder._modules)
    view._parameters = dict(decoder._parameters)
    view._buffers = dict(decoder._buffers)
    view.layers = nn.ModuleList(layers)
    view.norm = norm
    return view


class DecoderSplit:
    """``decoder`` cut before block ``L - k``: ``bottom`` and ``top`` views sharing its weights (module docstring)."""

    def __init__(self, decoder: nn.Module, k: int) -> None:
        self.n_layers = len(decoder.layers)
        if not 1 <= k < self.n_layers:
            raise ValueError(f"a split needs 1 <= k < {self.n_layers} top blocks, not {k}")
        self.k = k
        self.decoder = decoder
        self.bottom = _view(decoder, list(decoder.layers[: self.n_layers - k]), nn.Identity())
        self.top = _view(decoder, list(decoder.layers[self.n_layers - k:]), decoder.norm)
        # the top blocks but the last, for :meth:`forward_last` (None when k = 1)
        self.body = _view(decoder, list(decoder.layers[self.n_layers - k:-1]), nn.Identity()) if k > 1 else None
        self.last_token_only = True  # False: forward_last runs the whole top (a benchmark's reference arm)

    @property
    def cut(self) -> int:
        """Index of the first top block (``L - k``)."""
        return self.n_layers - self.k

    def prefix(self, batch: TokenBatch, bottom: nn.Module | None = None) -> torch.Tensor:
        """Hidden states entering block ``L - k``: float [B, T, hidden] (``bottom``: another view to run, e.g. an int8
        copy)."""
        mask = batch.attention_mask
        out = (bottom or self.bottom)(input_ids=batch.input_ids, attention_mask=mask,
                                      position_ids=mask_positions(mask), use_cache=False)
        return out.last_hidden_state

    def forward_top(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final-layer hidden states float [B, T, hidden] from prefix states ``hidden`` [B, T, hidden]."""
        out = self.top(inputs_embeds=hidden, attention_mask=attention_mask,
                       position_ids=mask_positions(attention_mask), use_cache=False)
        return out.last_hidden_state

    def forward_last(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final-layer hidden state (after the final norm) at the last real token of each row: float [B, hidden],
        from prefix states ``hidden`` [B, T, hidden].

        The same numbers as ``forward_top(...)`` gathered at the last real token, for less work: the last block's
        output is needed at one position only, so that block computes keys and values over all tokens but its query,
        attention output, MLP and the final norm at the last token alone (the MLP is about three quarters of a
        block's FLOPs). Blocks below the last one run through the model's own forward. A block this path does not
        know (not Llama-style, or a sliding window shorter than the prompt) falls back to ``forward_top``.
        """
        last = last_positions(attention_mask).to(hidden.device)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if not (self.last_token_only and self._last_token_supported(hidden.shape[1])):
            return self.forward_top(hidden, attention_mask)[rows, last]
        positions = mask_positions(attention_mask)
        if self.body is not None:
            hidden = self.body(inputs_embeds=hidden, attention_mask=attention_mask, position_ids=positions,
                               use_cache=False).last_hidden_state
        layer = self.decoder.layers[-1]
        attn = layer.self_attn
        batch, length = hidden.shape[:2]
        x = layer.input_layernorm(hidden)
        cos, sin = self.decoder.rotary_emb(hidden, positions)  # [B, T, head_dim]
        query = attn.q_proj(x[rows, last]).view(batch, 1, -1, attn.head_dim).transpose(1, 2)
        keys = attn.k_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        values = attn.v_proj(x).view(batch, length, -1, attn.head_dim).transpose(1, 2)
        query = _rotate(query, cos[rows, last][:, None, None], sin[rows, last][:, None, None])
        keys = _rotate(keys, cos[:, None], sin[:, None])
        groups = query.shape[1] // keys.shape[1]  # grouped-query attention: each key/value head serves `groups`
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
        dropout = float(getattr(attn, "attention_dropout", 0.0) or 0.0) if attn.training else 0.0
        mixed = nn.functional.scaled_dot_product_attention(
            query, keys, values, attn_mask=attention_mask.to(hidden.device).bool()[:, None, None, :],
            dropout_p=dropout, scale=attn.scaling)  # the last real token sees every real token
        out = hidden[rows, last] + attn.o_proj(mixed.transpose(1, 2).reshape(batch, -1))
        out = out + layer.mlp(layer.post_attention_layernorm(out))
        return self.decoder.norm(out)

    def _last_token_supported(self, length: int) -> bool:
        """Whether :meth:`forward_last` knows the last block: a Llama-style block (RMSNorm, q/k/v/o projections
        without q/k norms, an MLP) with rotary positions and no sliding window shorter than ``length`` tokens."""
        layer = self.decoder.layers[-1]
        attn = getattr(layer, "self_attn", None)
        needed = (hasattr(self.decoder, "rotary_emb") and attn is not None
                  and all(hasattr(layer, a) for a in ("input_layernorm", "post_attention_layernorm", "mlp"))
                  and all(hasattr(attn, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling"))
                  and not any(hasattr(attn, a) for a in ("q_norm", "k_norm")))
        window = getattr(self.decoder.config, "sliding_window", None)
        sliding = window is not None and getattr(self.decoder.config, "use_sliding_window", True)
        return bool(needed) and (not sliding or length <= int(window))

    def int8_bottom(self) -> nn.Module:
        """A copy of the bottom view with its Linear layers dynamically quantised to int8 (CPU inference only)."""
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(self.bottom).float().eval(), {nn.Linear}, dtype=torch.qint8)


def check_prefix_dtype(prefix_dtype: str) -> str:
    """``prefix_dtype`` if it is one of :data:`PREFIX_DTYPES`, else a ValueError naming it."""
    if prefix_dtype not in PREFIX_DTYPES:
        raise ValueError(f"prefix_dtype must be one of {PREFIX_DTYPES}, not {prefix_dtype!r}")
    return prefix_dtype


def check_lora_layers(lora_layers: int | str) -> int | str:
    """``lora_layers`` if it is ``"all"`` or a number of top blocks >= 1, else a ValueError naming it."""
    if lora_layers == "all" or (isinstance(lora_layers, int) and not isinstance(lora_layers, bool) and lora_layers >= 1):
        return lora_layers
    raise ValueError(f"lora_layers must be 'all' or a number of top blocks >= 1, not {lora_layers!r}")


@dataclass
class TopLoRA:
    """A backbone with LoRA on its top ``k`` blocks: ``model`` (the peft model), ``split`` (None when ``k`` covers
    every block: nothing to cache) and ``backbone_key`` (the frozen backbone's fingerprint, taken before the adapters
    were added; "" without a split)."""

    model: nn.Module
    split: DecoderSplit | None
    backbone_key: str


def top_lora(backbone: Backbone, lora_layers: int | str, *, dtype: str, **lora: Any) -> TopLoRA:
    """Add LoRA adapters (``lora``: :func:`~medrec_bench.llm.lora.apply_lora`'s keywords) on the top ``lora_layers``
    blocks of ``backbone.model`` (``"all"``: every block, the paper's setting) and cut it for a prefix cache."""
    n_layers = len(decoder_of(backbone.model).layers)
    k = n_layers if check_lora_layers(lora_layers) == "all" else int(lora_layers)
    if k > n_layers:
        raise ValueError(f"lora_layers {k} > the backbone's {n_layers} blocks")
    key = backbone_fingerprint(backbone, dtype=dtype) if k < n_layers else ""
    model = apply_lora(backbone.model, layers=None if k == n_layers else range(n_layers - k, n_layers), **lora)
    return TopLoRA(model, DecoderSplit(decoder_of(model), k) if k < n_layers else None, key)


@dataclass
class PrefixBatch:
    """Padded prefix states: ``hidden`` float [B, T, hidden] (zeros on padding), ``attention_mask`` long [B, T]."""

    hidden: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: torch.device | str) -> "PrefixBatch":
        return PrefixBatch(self.hidden.to(device), self.attention_mask.to(device))

    def __len__(self) -> int:
        return int(self.hidden.shape[0])


def _row_key(sample: Any, ids: Sequence[int]) -> str:
    h = hashlib.sha256(sample_key(sample).encode())
    h.update(np.asarray(ids, dtype=np.int64).tobytes())
    return h.hexdigest()


class PrefixStates:
    """Prefix states of samples, computed once by ``split`` and stored in ``folder`` (None: in memory).

    ``token_ids(sample) -> list[int]`` gives a sample's prompt; ``fingerprint`` (a dict: backbone fingerprint, prompt
    settings, ...) keys the folder together with ``k`` and ``prefix_dtype``. ``batch_size`` prompts per bottom
    forward; ``pad_id`` and ``padding_side`` as the model pads. ``cached`` / ``computed`` count prompts found in the
    store by each :meth:`ensure` (one per phase: training, prediction, features) and prompts computed, over the
    object's life.
    """

    def __init__(self, split: DecoderSplit, token_ids: Callable[[Any], list[int]], *, fingerprint: dict[str, Any],
                 folder: Path | None, pad_id: int, padding_side: str = "right", prefix_dtype: str = "backbone",
                 batch_size: int = 8, progress: bool = False) -> None:
        check_prefix_dtype(prefix_dtype)
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding side must be one of {PADDING_SIDES}, not {padding_side!r}")
        self.split = split
        self.token_ids = token_ids
        self.pad_id = pad_id
        self.padding_side = padding_side
        self.prefix_dtype = prefix_dtype
        self.batch_size = max(1, batch_size)
        self.progress = progress
        self.key = hashlib.sha256(json.dumps({**fingerprint, "k": split.k, "layers": split.n_layers,
                                              "prefix_dtype": prefix_dtype}, sort_keys=True,
                                             default=str).encode()).hexdigest()
        hidden = int(split.decoder.config.hidden_size)
        self.store = ArrayStore(Path(folder) / self.key[:32] if folder is not None else None, self.key, hidden)
        self.cached = 0
        self.computed = 0
        self._int8: nn.Module | None = None

    def _bottom(self) -> nn.Module:
        if self.prefix_dtype == "backbone":
            return self.split.bottom
        if self._int8 is None:
            if next(self.split.decoder.parameters()).device.type != "cpu":
                raise ValueError("prefix_dtype 'int8' (dynamic quantisation) runs on CPU only")
            self._int8 = self.split.int8_bottom()
        return self._int8

    def ensure(self, samples: Sequence[Any], desc: str = "prefix pass", count: bool = True) -> None:
        """Compute and store the prefix states of the samples not stored yet (length-sorted batches, a bar);
        ``count`` adds the samples found stored to ``cached`` (a phase's lookup, not a batch's re-read)."""
        todo: dict[str, tuple[Any, list[int]]] = {}
        seen = 0
        for s in samples:
            ids = self.token_ids(s)
            key = _row_key(s, ids)
            if key in self.store:
                seen += 1
            elif key not in todo:
                todo[key] = (s, ids)
        self.cached += seen if count else 0
        if not todo:
            return
        keys = sorted(todo, key=lambda k: len(todo[k][1]))
        device = next(self.split.decoder.parameters()).device
        bottom = self._bottom()
        with torch.inference_mode(), tqdm(total=len(keys), desc=desc, unit="prompt", disable=not self.progress,
                                          leave=False) as bar:
            for start in range(0, len(keys), self.batch_size):
                chunk = keys[start:start + self.batch_size]
                batch = pad_tokens([todo[k][1] for k in chunk], self.pad_id, "right").to(device)
                hidden = self.split.prefix(batch, bottom).float().cpu().numpy()
                lengths = batch.attention_mask.sum(1).tolist()
                self.store.write(chunk, [hidden[i, :n] for i, n in enumerate(lengths)])
                self.computed += len(chunk)
                bar.update(len(chunk))

    def rows(self, samples: Sequence[Any]) -> list[np.ndarray]:
        """float16 [tokens_i, hidden] prefix states of each sample (computed first where missing)."""
        self.ensure(samples, count=False)
        return [self.store.read(_row_key(s, self.token_ids(s))) for s in samples]

    def batch(self, samples: Sequence[Any]) -> PrefixBatch:
        """The samples' prefix states, padded on ``padding_side`` (computed first where missing)."""
        rows = self.rows(samples)
        length = max([len(r) for r in rows] + [1])
        hidden = torch.zeros((len(rows), length, self.store.dim), dtype=torch.float32)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            cols = slice(0, len(r)) if self.padding_side == "right" else slice(length - len(r), length)
            hidden[i, cols] = torch.from_numpy(np.asarray(r, dtype=np.float32))
            mask[i, cols] = 1
        return PrefixBatch(hidden, mask)
