"""``llm_embed_probe``: a frozen language model embeds each prompt once; a small head learns the drugs from that.

It measures how much of LEADER(T)'s gain comes from fine-tuning the LLM: same prompts (:mod:`medrec_bench.llm.prompts`,
fitted to ``max_length`` tokens, capped by the backbone's position limit), but the backbone is frozen and only a head on
its pooled hidden states is trained.

- Backbone (:mod:`medrec_bench.llm.backbones`, loaded without LM head): ``minilm`` (all-MiniLM-L6-v2, 384-d; default) or
  any causal LM (``smollm2-135m``, a local folder, ``tiny-llama`` for tests; built with seed 0).
- Pooling of the final-layer hidden states over the prompt's real tokens: ``mean`` (default; as sentence-transformers
  pools MiniLM) or ``last`` (the last real token; the natural choice for a causal LM).
- Embeddings (float16 [dim] per prompt) are cached in memory and on disk under ``ctx.work_dir / "llm_embed_probe" /
  <backbone fingerprint>`` as ``.npy`` shards + a JSON index (:class:`medrec_bench.llm.features.FeatureCache`), keyed by
  the sha256 of the prompt text; the fingerprint covers the backbone (name, dtype, pooling, and its files' sizes and
  times, or its weights when it has no folder). Never pickled.
- Head (``head``): ``linear`` (logistic regression) or ``mlp`` (one hidden layer of ``hidden`` units, ReLU,
  dropout) on the embeddings standardised with the training mean and standard deviation; the output bias starts at
  the logit of each drug's training frequency (so training starts from ``popular``); BCE with logits, trained by
  :class:`medrec_bench.models.TorchRecommender` (Adam, early stopping on validation PRAUC, best-state restore).

Checkpoint: the head and the standardisation statistics (the frozen backbone is rebuilt from ``backbone``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medrec_bench.llm.backbones import Backbone, backbone_fingerprint, load_backbone
from medrec_bench.llm.batches import pad_tokens
from medrec_bench.llm.calls import input_device
from medrec_bench.llm.features import FeatureCache
from medrec_bench.llm.prompts import PromptConfig, fit_prompt
from medrec_bench.models import Context, TorchRecommender
from medrec_bench.registry import Range
from medrec_bench.tasks.batching import targets_matrix
from medrec_bench.tasks.protocols import Sample

__all__ = ["LLMEmbedProbe", "ProbeNet"]

POOLINGS = ("mean", "last")
HEADS = ("linear", "mlp")
CACHE_FOLDER = "llm_embed_probe"


@dataclass(frozen=True)
class _PromptKey:
    """Stands in for a sample in :class:`FeatureCache` (its row key hashes ``patient_id`` and ``visit_id``): the
    ``patient_id`` is the prompt's sha256, so rows are keyed by prompt text."""

    patient_id: str
    visit_id: str = "prompt"


class ProbeNet(nn.Module):
    """Standardise (buffers ``mean`` / ``std`` float [dim]) then a linear or one-hidden-layer MLP head:
    embeddings float [B, dim] -> logits [B, |M|]."""

    def __init__(self, dim: int, n_drugs: int, head: str = "linear", hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {head!r}")
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        if head == "linear":
            self.layers: nn.Module = nn.Linear(dim, n_drugs)
        else:
            self.layers = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(hidden, n_drugs))

    @property
    def output(self) -> nn.Linear:
        """The last linear layer (its bias: the drugs' base logits)."""
        return self.layers if isinstance(self.layers, nn.Linear) else self.layers[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.std)

    def to(self, *args: Any, **kwargs: Any) -> "ProbeNet":
        if args and isinstance(args[0], str) and args[0] == "auto":  # the backbone is spread; the head: one device
            return super().to("cuda" if torch.cuda.is_available() else "cpu")
        return super().to(*args, **kwargs)


class LLMEmbedProbe(TorchRecommender):
    """Frozen-LM prompt embeddings + a trained linear / MLP head (see the module docstring).

    Units: ``max_length`` tokens; ``embed_batch_size`` prompts per encoder forward; ``hidden`` units.
    """

    default_threshold: ClassVar[float] = 0.5
    test_params: ClassVar[dict[str, Any]] = {"backbone": "tiny-llama", "epochs": 3, "batch_size": 16,
                                             "max_length": 512, "embed_batch_size": 16}
    param_ranges: ClassVar[dict[str, Range]] = {"hidden": Range(ge=1), "dropout": Range(ge=0, lt=1),
                                                "max_history": Range(ge=0), "max_length": Range(ge=1),
                                                "embed_batch_size": Range(ge=1)}

    def __init__(self, *, backbone: str = "minilm", dtype: str = "float32", pooling: str = "mean",
                 head: str = "linear", hidden: int = 256, dropout: float = 0.2, max_history: int = 3,
                 include_profile: bool = False, max_length: int = 512, embed_batch_size: int = 16,
                 epochs: int = 50, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-5,
                 patience: int = 5, seed: int | None = None) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                         seed=seed)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {head!r}")
        self.backbone = backbone
        self.dtype = dtype
        self.pooling = pooling
        self.head = head
        self.hidden = hidden
        self.dropout = dropout
        self.max_history = max_history
        self.include_profile = include_profile
        self.max_length = max_length
        self.embed_batch_size = embed_batch_size
        self._backbone: Backbone | None = None
        self._fingerprint: str | None = None
        self._disk: FeatureCache | None = None
        self._disk_dir: Path | None = None
        self._memory: dict[str, np.ndarray] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._texts: dict[str, str] = {}
        self._stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # mean, std, drug frequencies

    # --- the frozen encoder ---------------------------------------------------------------------------------------
    def _load(self, ctx: Context) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone(self.backbone, dtype=self.dtype, with_lm_head=False, device=ctx.device)
            for p in self._backbone.model.parameters():
                p.requires_grad_(False)
            self._fingerprint = None
        return self._backbone

    @property
    def dim(self) -> int:
        """Embedding width (the backbone's hidden size)."""
        if self._backbone is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._backbone.hidden_size

    @property
    def prompt_config(self) -> PromptConfig:
        limit = self.max_length
        if self._backbone is not None:
            positions = getattr(self._backbone.model.config, "max_position_embeddings", None)
            if positions:
                limit = min(limit, int(positions))
        return PromptConfig(max_history=self.max_history, include_profile=self.include_profile, max_length=limit)

    def fingerprint(self) -> str:
        """sha256 of what decides an embedding besides the prompt: the backbone (name, files or weights), dtype and
        pooling."""
        if self._fingerprint is None:
            assert self._backbone is not None
            self._fingerprint = backbone_fingerprint(self._backbone, dtype=self.dtype, pooling=self.pooling)
        return self._fingerprint

    def _disk_cache(self) -> FeatureCache | None:
        if self.ctx is None or self.ctx.work_dir is None:
            return None
        folder = Path(self.ctx.work_dir) / CACHE_FOLDER / self.fingerprint()[:32]
        if self._disk is None or self._disk_dir != folder:
            self._disk, self._disk_dir = FeatureCache(folder, self.fingerprint(), self.dim), folder
        return self._disk

    def prompt_key(self, sample: Sample) -> str:
        """sha256 (hex) of the sample's fitted prompt text (the row key of the embedding caches)."""
        key = (sample.patient_id, sample.visit_id)
        digest = self._keys.get(key)
        if digest is None:
            assert self._backbone is not None and self.ctx is not None
            text = fit_prompt(sample, self.ctx.vocab, self._backbone.tokenizer, self.prompt_config, reserve=0)
            digest = hashlib.sha256(text.encode()).hexdigest()
            self._keys[key] = digest
            self._texts[digest] = text
        return digest

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Run the frozen encoder: float16 [len(texts), dim] pooled final-layer hidden states (no cache)."""
        assert self._backbone is not None
        tok, model = self._backbone.tokenizer, self._backbone.model
        out = np.zeros((len(texts), self.dim), dtype=np.float16)
        if not len(texts):
            return out
        limit = self.prompt_config.max_length
        ids = [list(tok(t, add_special_tokens=True)["input_ids"])[:limit] for t in texts]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        device = input_device(model)
        step = max(1, self.embed_batch_size)
        progress = bool(self.ctx and self.ctx.progress)
        with torch.inference_mode(), tqdm(total=len(ids), desc="llm_embed_probe embed", unit="prompt",
                                          disable=not progress, leave=False) as bar:
            for start in range(0, len(order), step):
                rows = order[start:start + step]
                batch = pad_tokens([ids[i] for i in rows], tok.pad_token_id, "right").to(device)
                result = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                hidden = (result.last_hidden_state if hasattr(result, "last_hidden_state") else result[0]).float()
                mask = batch.attention_mask.to(hidden.device)
                if self.pooling == "mean":
                    weights = mask.float()[..., None]
                    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
                else:
                    last = (mask.sum(1) - 1).clamp(min=0)
                    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
                pooled = pooled.clamp(-65504, 65504)  # no inf in float16
                out[rows] = pooled.cpu().numpy().astype(np.float16)
                bar.update(len(rows))
        return out

    def embed(self, samples: Sequence[Sample]) -> np.ndarray:
        """float16 [len(samples), dim] prompt embeddings: from memory, else from the disk cache, else encoded (then
        stored in both)."""
        if self._backbone is None or self.ctx is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        keys = [self.prompt_key(s) for s in samples]
        missing = list(dict.fromkeys(k for k in keys if k not in self._memory))
        if missing:
            disk = self._disk_cache()
            if disk is None:
                rows = self.encode([self._texts[k] for k in missing])
            else:
                rows = disk.get([_PromptKey(k) for k in missing],
                                lambda todo: self.encode([self._texts[k.patient_id] for k in todo]))
            for key, row in zip(missing, np.asarray(rows, dtype=np.float16)):
                self._memory[key] = row.copy()
        out = np.empty((len(samples), self.dim), dtype=np.float16)
        for i, key in enumerate(keys):
            out[i] = self._memory[key]
        return out

    # --- the head ----------------------------------------------------------------------------------------------------
    def build(self, ctx: Context) -> nn.Module:
        self._load(ctx)
        net = ProbeNet(self.dim, ctx.n_drugs, self.head, self.hidden, self.dropout)
        if self._stats is not None:
            mean, std, prior = self._stats
            net.mean.copy_(mean)
            net.std.copy_(std)
            with torch.no_grad():  # start from the training drug frequencies (popular), not from p = 0.5
                net.output.bias.copy_(torch.logit(prior.clamp(1e-4, 1 - 1e-4)))
        return net

    def _to_device(self, batch: Any) -> Any:
        if isinstance(self.module, ProbeNet):
            return batch.to(self.module.mean.device)
        return super()._to_device(batch)

    def make_batch(self, samples: Sequence[Sample], ctx: Context) -> torch.Tensor:
        """float32 [B, dim] embeddings (the head standardises them)."""
        return torch.from_numpy(self.embed(samples).astype(np.float32))

    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "LLMEmbedProbe":
        if not train:
            raise ValueError("no training samples")
        self.ctx = ctx
        self._load(ctx)
        self._keys, self._texts = {}, {}  # prompts depend on the context's vocabulary
        x = self.embed(list(train) + list(val))[: len(train)].astype(np.float64)
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 1e-6, std, 1.0)
        prior = targets_matrix(train, ctx.n_drugs).float().mean(0)
        self._stats = (torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32), prior)
        super().fit(train, val, ctx)
        return self

    def load_state_tensors(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        self.ctx = ctx
        self._stats = None
        super().load_state_tensors(state, ctx)
