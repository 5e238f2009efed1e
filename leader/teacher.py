"""LEADER's teacher (``leader_t``): an LLM fine-tuned with LoRA whose language head is replaced by a linear
classifier over the drug vocabulary (Liu et al. 2024, arXiv 2402.02803), so it can never name a drug that does not
exist.

Pipeline: the sample's prompt (:mod:`medrec_bench.llm.prompts`, fitted to ``max_length`` tokens by dropping the oldest
history visits first), tokenized once per sample with the tokenizer's own special tokens, then an EOS token appended ->
the backbone without LM head (:mod:`medrec_bench.llm.backbones`) -> the final-layer hidden state at that EOS token (the
last real token, found from the attention mask, so left and right padding give the same result; position ids are
computed from the mask too) -> a bias-free ``Linear(hidden, |M|)`` -> BCE with logits against the multi-hot target.

Training reuses :class:`medrec_bench.models.TorchRecommender`'s loop (Adam, early stopping on validation PRAUC,
best-state restore) with: LoRA (``peft``) on the attention and MLP projections; gradient accumulation to
``effective_batch_size`` (``accumulation_steps = effective_batch_size // batch_size``); gradient clipping at 1.0
(the Hugging Face Trainer default the authors ran with); an optional ``max_steps`` cap on optimizer steps; a step
progress bar with the loss and steps/s.

Precision (``dtype``): ``float32`` or ``bfloat16`` for the frozen backbone; the LoRA weights (peft upcasts them) and
the head are always float32, so the optimizer never updates bf16 weights. Use ``bfloat16`` on GPUs: the authors
trained LLaMA-2-7B in fp16, which underflowed (NaN losses are a known issue of fp16 LLaMA fine-tuning); bf16 has
fp32's exponent range. ``float16`` is accepted but not recommended.

Devices: ``ctx.device`` ``cpu`` (the tested path), ``cuda`` / ``cuda:N``, or ``auto`` (accelerate's
``device_map="auto"`` spreads a large backbone over all visible GPUs; the head and the inputs go to the input
embedding's device). Data parallel over several GPUs: under ``accelerate launch`` (:mod:`medrec_bench.distributed`)
each process trains on its share of every batch through DDP and predicts / extracts features for its share of the
samples, gathered so that every process holds all of them; only the main process writes the feature cache.

LoRA blocks (``lora_layers``): the top 2 of the backbone's blocks by default, so that the teacher trains on a laptop
CPU: the hidden states entering them are computed once per prompt by the frozen lower blocks and cached
(:mod:`medrec_bench.llm.prefix_cache`); ``"all"`` is the paper's setting. On a 500-patient synthetic cohort after 2
epochs (1 seed, SmolLM2-135M, 2 threads) top-2 fitted in 347 s at 2.8 GB peak RSS against 3,235 s and 22.8 GB for
all blocks, with validation PRAUC 0.652 vs 0.683 (Jaccard 0.431 vs 0.432): a deviation that costs ranking quality
after equal epochs (see bench/README.md).

Checkpoint: only the LoRA adapter weights and the head (the module's ``state_dict`` holds only trainable tensors;
the frozen backbone is rebuilt from the ``backbone`` parameter on load).

For distillation, :meth:`LeaderTeacher.features` gives the pooled hidden state (float16 [n, hidden]) of any
samples, cached on disk under ``ctx.work_dir`` (see :mod:`medrec_bench.llm.features`) and keyed by a fingerprint of the
trained state and parameters.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medrec_bench import distributed
from medrec_bench.llm.backbones import Backbone, load_backbone
from medrec_bench.llm.batches import PADDING_SIDES, TokenBatch, TrainableStateModule, pad_tokens
from medrec_bench.llm.features import FeatureCache
from medrec_bench.llm.lora import LORA_TARGETS, PromptLoRATraining, check_effective_batch_size
from medrec_bench.llm.prefix_cache import (DecoderSplit, PrefixBatch, PrefixStates, check_lora_layers,
                                           check_prefix_dtype, last_positions, mask_positions,
                                           top_lora)
from medrec_bench.llm.tokens import PromptTokens
from medrec_bench.models import Context, TorchRecommender
from medrec_bench.tasks.batching import length_bucketed_order, padding_fraction, targets_matrix
from medrec_bench.tasks.protocols import Sample

__all__ = ["LeaderTeacher", "TeacherNet"]


class TeacherNet(TrainableStateModule):
    """LoRA-adapted backbone + bias-free linear head over the drugs: logits float32 [B, |M|].

    ``state_dict`` / ``load_state_dict`` cover only the trainable tensors (LoRA weights and the head), so copies of
    the best state and checkpoints stay small even for a 7B backbone.
    """

    state_label = "teacher state"

    def __init__(self, backbone: nn.Module, hidden_size: int, n_drugs: int,
                 split: DecoderSplit | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, n_drugs, bias=False)
        self.split = split  # top-k LoRA: batches of cached prefix states run only the top blocks
        base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
        accepted = inspect.signature(base.forward).parameters
        self._pass_positions = "position_ids" in accepted
        self._pass_use_cache = "use_cache" in accepted
        self.freeze_state_keys()

    # --- devices (``auto``: the backbone is spread by accelerate; only the head is placed) --------------------------
    @property
    def input_device(self) -> torch.device:
        return self.backbone.get_input_embeddings().weight.device

    def to(self, *args: Any, **kwargs: Any) -> "TeacherNet":
        if args and isinstance(args[0], str) and args[0] == "auto":
            self.head.to(self.input_device)
            return self
        return super().to(*args, **kwargs)

    # --- forward --------------------------------------------------------------------------------------------------
    def pool(self, batch: TokenBatch | PrefixBatch) -> torch.Tensor:
        """Final-layer hidden state at the last real token of each prompt (its EOS): [B, hidden], backbone dtype.
        A :class:`PrefixBatch` (states entering block L - k) runs only the top k blocks and the final norm, the last
        block at the last token only (:meth:`~medrec_bench.llm.prefix_cache.DecoderSplit.forward_last`)."""
        mask = batch.attention_mask
        if isinstance(batch, PrefixBatch):
            if self.split is None:
                raise ValueError("a batch of prefix states needs a teacher with LoRA on the top blocks only")
            dtype = next(self.split.top.parameters()).dtype
            return self.split.forward_last(batch.hidden.to(dtype), mask)
        kwargs: dict[str, Any] = {"input_ids": batch.input_ids, "attention_mask": mask}
        if self._pass_positions:  # positions count real tokens only, so left padding changes nothing
            kwargs["position_ids"] = mask_positions(mask)
        if self._pass_use_cache:
            kwargs["use_cache"] = False
        out = self.backbone(**kwargs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        last = last_positions(mask).to(hidden.device)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def forward(self, batch: TokenBatch | PrefixBatch) -> torch.Tensor:
        pooled = self.pool(batch)
        return self.head(pooled.to(device=self.head.weight.device, dtype=self.head.weight.dtype))


class LeaderTeacher(PromptLoRATraining, TorchRecommender):
    """LEADER(T): LoRA-fine-tuned LLM with a linear classifier over the drugs (see the module docstring).

    Units: ``max_length`` tokens; ``batch_size`` / ``eval_batch_size`` / ``effective_batch_size`` samples;
    ``max_steps`` optimizer steps (0 = no cap; training stops at whichever of ``epochs`` / ``max_steps`` comes first).
    ``eval_batch_size`` is also the prefix pass's batch. At equal prompt lengths 8 and 16 are as fast (3.01 vs 3.02
    prompts/s of 232 tokens on 2 CPU cores, ``python bench/prefix_batch.py --length 232 --prompts 32``); 8 pads less
    where few length-sorted prompts are batched together (bench/README.md).
    """

    default_threshold: ClassVar[float] = 0.5
    max_grad_norm: float | None = 1.0
    test_params: ClassVar[dict[str, Any]] = {"backbone": "tiny-llama", "epochs": 1, "batch_size": 4,
                                             "effective_batch_size": 8, "eval_batch_size": 64, "max_length": 256}

    def __init__(self, *, backbone: str = "smollm2-135m", dtype: str = "float32", lora_r: int = 8,
                 lora_alpha: int = 32, lora_dropout: float = 0.1, lora_targets: str = LORA_TARGETS,
                 max_history: int = 3, include_profile: bool = False, max_length: int = 2048,
                 epochs: int = 20, max_steps: int = 3000, batch_size: int = 4, effective_batch_size: int = 32,
                 eval_batch_size: int = 8, lr: float = 2e-4, weight_decay: float = 0.0, patience: int = 3,
                 padding_side: str = "right", gradient_checkpointing: bool = False, lora_layers: int | str = 2,
                 prefix_dtype: str = "backbone", seed: int | None = None) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                         seed=seed)
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, not {padding_side!r}")
        self.backbone = backbone
        self.dtype = dtype
        self.lora_r = lora_r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.max_history = max_history
        self.include_profile = include_profile
        self.max_length = max_length
        self.max_steps = max_steps
        self.effective_batch_size = check_effective_batch_size(effective_batch_size, batch_size)
        self.eval_batch_size = eval_batch_size
        self.padding_side = padding_side
        self.gradient_checkpointing = gradient_checkpointing
        check_lora_layers(lora_layers)
        check_prefix_dtype(prefix_dtype)
        self.lora_layers = lora_layers
        self.prefix_dtype = prefix_dtype
        self._prefix: PrefixStates | None = None
        self.padding_fraction = math.nan  #: padded share of the training batches' tokens (last epoch)
        self._backbone: Backbone | None = None
        self._tokens: PromptTokens | None = None
        self._fingerprint: str | None = None
        self._features: FeatureCache | None = None
        self._train_bar: Any = None
        self._train_net: nn.Module | None = None  # the module as the accelerator prepared it (DDP), while fitting
        self._steps_done = 0
        self._last_loss = float("nan")

    # --- the network -------------------------------------------------------------------------------------------------
    def build(self, ctx: Context) -> nn.Module:
        self._backbone = load_backbone(self.backbone, dtype=self.dtype, with_lm_head=False, device=ctx.device)
        self._tokens = PromptTokens(self._backbone.tokenizer, ctx.vocab, self.prompt_config, reserve=1,
                                    append_eos=True)
        self._fingerprint = None
        self._features = None
        lora = top_lora(self._backbone, self.lora_layers, dtype=self.dtype, r=self.lora_r, alpha=self.lora_alpha,
                        dropout=self.lora_dropout, targets=self.lora_targets,
                        gradient_checkpointing=self.gradient_checkpointing)
        peft_model, split = lora.model, lora.split
        self._prefix = None
        if split is not None:
            folder = Path(ctx.work_dir) / "leader_t_prefix" if ctx.work_dir is not None else None
            self._prefix = PrefixStates(
                split, self.token_ids, folder=folder, pad_id=self._backbone.tokenizer.pad_token_id,
                padding_side=self.padding_side, prefix_dtype=self.prefix_dtype, batch_size=self.eval_batch_size,
                progress=ctx.progress, fingerprint={"backbone": lora.backbone_key,
                                                    "prompt": self.prompt_config.__dict__})
        net = TeacherNet(peft_model, self._backbone.hidden_size, ctx.n_drugs, split)
        if ctx.device == "auto":
            net.head.to(net.input_device)
        return net

    def before_training(self, train: Sequence[Sample], val: Sequence[Sample]) -> None:
        """Top-k LoRA: the frozen prefix states of every training and validation prompt, computed once."""
        if self._prefix is not None:
            self._prefix.ensure(list(train) + list(val), "leader_t prefix pass")
        self._train_net = distributed.wrap_for_training(self.module)

    def on_epoch_end(self, record: dict[str, float]) -> None:
        """Data parallel: every process keeps the mean training loss, so all take the same early-stopping step."""
        record["loss"] = distributed.mean_over_processes(record["loss"])

    def epoch_order(self, train: Sequence[Sample], rng: np.random.Generator) -> Sequence[int]:
        """Length-bucketed: shuffled, sorted by prompt length within windows of 50 batches, batches shuffled; the
        epoch's padding share is kept in ``padding_fraction``."""
        lengths = [len(self.token_ids(s)) for s in train]
        order = length_bucketed_order(rng.permutation(len(train)), lengths, self.batch_size, rng)
        self.padding_fraction = padding_fraction(lengths, order, self.batch_size)
        return order

    # --- inputs ------------------------------------------------------------------------------------------------------
    def token_ids(self, sample: Sample) -> list[int]:
        """The sample's prompt as token ids, EOS last (at most ``max_length``); tokenised once per fit."""
        if self._tokens is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._tokens(sample)

    def make_batch(self, samples: Sequence[Sample], ctx: Context) -> TokenBatch | PrefixBatch:
        assert self._backbone is not None
        if self._prefix is not None:
            return self._prefix.batch(samples)
        return pad_tokens([self.token_ids(s) for s in samples], self._backbone.tokenizer.pad_token_id,
                          self.padding_side)

    def _to_device(self, batch: Any) -> Any:
        if isinstance(self.module, TeacherNet):
            return batch.to(self.module.input_device)
        return super()._to_device(batch)

    # --- training: the shared loop, plus max_steps and a step progress bar ---------------------------------------
    def loss(self, batch: Any, target: torch.Tensor, epoch: int) -> torch.Tensor:
        logits = self.forward(batch) if self._train_net is None else self._train_net(batch)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target.to(logits.device))
        self._last_loss = float(loss.detach())
        return loss

    def _batches(self, samples: Sequence[Sample], order: Sequence[int]) -> Iterator[tuple[Any, torch.Tensor]]:
        assert self.ctx is not None
        n_batches = -(-len(order) // self.batch_size)
        for number, start in enumerate(range(0, len(order), self.batch_size), start=1):
            chunk = distributed.shard([samples[i] for i in order[start:start + self.batch_size]])
            target = targets_matrix(chunk, self.ctx.n_drugs).float()
            yield self._to_device(self.make_batch(chunk, self.ctx)), target
            if number % self.accumulation_steps == 0 or number == n_batches:  # the loop just stepped
                self._steps_done += 1
                if self._train_bar is not None:
                    self._train_bar.update(1)
                    self._train_bar.set_postfix(loss=f"{self._last_loss:.4f}", refresh=False)
                if self.max_steps and self._steps_done >= self.max_steps:
                    return

    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "LeaderTeacher":
        distributed.check_batch_size(self.batch_size)
        steps_per_epoch = math.ceil(math.ceil(len(train) / self.batch_size) / self.accumulation_steps)
        epochs = self.epochs
        if self.max_steps and steps_per_epoch:
            epochs = min(epochs, math.ceil(self.max_steps / steps_per_epoch))
        self._steps_done = 0
        self._train_bar = tqdm(total=min(epochs * steps_per_epoch, self.max_steps or epochs * steps_per_epoch),
                               desc="leader_t train", unit="step", disable=not ctx.progress, leave=False)
        configured = self.epochs
        self.epochs = epochs
        try:
            super().fit(train, val, ctx)
        finally:
            self.epochs = configured
            self._train_bar.close()
            self._train_bar = None
            self._train_net = None
        self._fingerprint = None
        self._features = None
        return self

    # --- inference -------------------------------------------------------------------------------------------------
    def _run(self, samples: Sequence[Sample], fn: Any, width: int, dtype: Any, desc: str) -> np.ndarray:
        """``fn(batch) -> [B, width]`` over ``samples`` in length-sorted batches of ``eval_batch_size`` (data
        parallel: this process's share, the others' gathered)."""
        if self.module is None or self.ctx is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        out = np.zeros((len(samples), width), dtype=dtype)
        if not len(samples):
            return out
        mine = distributed.shard(range(len(samples)))
        if self._prefix is not None:
            self._prefix.ensure([samples[i] for i in mine], "leader_t prefix pass")
        was_training = self.module.training
        self.module.eval()
        order = sorted(mine, key=lambda i: len(self.token_ids(samples[i])))
        step = max(1, self.eval_batch_size)
        with torch.inference_mode(), tqdm(total=len(order), desc=desc, unit="patient",
                                          disable=not self.ctx.progress, leave=False) as bar:
            for start in range(0, len(order), step):
                rows = order[start:start + step]
                batch = self._to_device(self.make_batch([samples[i] for i in rows], self.ctx))
                out[rows] = fn(batch).float().cpu().numpy().astype(dtype, copy=False)
                bar.update(len(rows))
        self.module.train(was_training)
        return out if len(mine) == len(samples) else distributed.gather_rows(out[mine], len(samples)).astype(dtype)

    def predict_proba(self, samples: Sequence[Sample]) -> np.ndarray:
        """float32 [n, |M|] drug probabilities."""
        if self.module is None or self.ctx is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        net = self.module
        return self._run(samples, lambda b: torch.sigmoid(net(b)), self.ctx.n_drugs, np.float32, "leader_t predict")

    # --- features for distillation ---------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        """Width of :meth:`features` rows."""
        if self._backbone is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._backbone.hidden_size

    def fingerprint(self) -> str:
        """sha256 of the parameters and the trained (LoRA + head) state: the key of the feature cache."""
        if self._fingerprint is None:
            h = hashlib.sha256(json.dumps({"class": type(self).__qualname__, "params": self.get_params()},
                                          sort_keys=True, default=str).encode())
            for name, tensor in sorted(self.state_tensors().items()):
                t = tensor.detach().cpu().contiguous()
                h.update(name.encode())
                h.update(str(t.dtype).encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _feature_cache(self) -> FeatureCache | None:
        if self._features is None and self.ctx is not None and self.ctx.work_dir is not None:
            fp = self.fingerprint()
            folder = Path(self.ctx.work_dir) / "leader_t_features" / fp[:32]
            self._features = FeatureCache(folder, fp, self.hidden_size, writable=distributed.is_main())
        return self._features

    def compute_features(self, samples: Sequence[Sample]) -> np.ndarray:
        """float16 [n, hidden]: the pooled final-layer hidden state (at the EOS token) of each sample, no cache."""
        assert self.module is not None
        net = self.module
        return self._run(samples, lambda b: net.pool(b), self.hidden_size, np.float16, "leader_t features")

    def features(self, samples: Sequence[Sample]) -> np.ndarray:
        """float16 [n, hidden] teacher hidden states for distillation, computed once and cached on disk under
        ``ctx.work_dir / "leader_t_features" / <fingerprint>`` (memory-mapped shards + JSON index); without a
        ``work_dir`` they are computed every call."""
        cache = self._feature_cache()
        if cache is None:
            return self.compute_features(samples)
        return cache.get(samples, self.compute_features)

    def diagnostics(self) -> dict[str, float | int | str]:
        """The training loop's diagnostics plus the training batches' ``padding_fraction`` and, with top-k LoRA, the
        prefix states found cached vs computed; ``feature_cache_hits`` / ``features_computed`` once features were
        asked for. A teacher loaded from disk has no ``padding_fraction`` (the fit's value stays with the cached
        model's train info instead of being overwritten by NaN)."""
        out: dict[str, float | int | str] = dict(super().diagnostics())
        if not math.isnan(self.padding_fraction):
            out["padding_fraction"] = self.padding_fraction
        if self._prefix is not None:
            out |= {"prefix_cached": self._prefix.cached, "prefix_computed": self._prefix.computed}
        if self._features is not None:
            out |= {"feature_cache_hits": self._features.hits, "features_computed": self._features.computed}
        return out

    def load_state_tensors(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        super().load_state_tensors(state, ctx)
        self._fingerprint = None
        self._features = None

