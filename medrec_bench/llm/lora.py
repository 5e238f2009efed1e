"""LoRA fine-tuning pieces shared by the LEADER teacher and the generative LLM baseline: adapters on a frozen
backbone (peft), the adapted LM as a module with a trainable-only state (:class:`AdapterLM`), and the training
settings of a prompt-based :class:`~medrec_bench.models.TorchRecommender` (:class:`PromptLoRATraining`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..registry import Range
from .batches import TrainableStateModule
from .calls import base_model, call_lm
from .prompts import PromptConfig

__all__ = ["LORA_TARGETS", "AdapterLM", "PromptLoRATraining", "apply_lora", "check_effective_batch_size"]

#: the attention and MLP projections of LLaMA-style decoders (LEADER adapts all of them)
LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def apply_lora(model: nn.Module, *, r: int, alpha: int, dropout: float, targets: str,
               gradient_checkpointing: bool = False, layers: Sequence[int] | None = None) -> nn.Module:
    """Freeze ``model`` and add LoRA adapters (peft) on ``targets`` (comma-separated module names, or
    ``all-linear``); returns the peft model (its ``get_base_model()`` runs with the adapters active).
    ``gradient_checkpointing`` recomputes activations in the backward pass (less memory, slower). ``layers``: the
    transformer blocks (indices) that get adapters (peft's ``layers_to_transform``; None = all)."""
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    modules: str | list[str] = targets if targets == "all-linear" else \
        [t.strip() for t in targets.split(",") if t.strip()]
    if layers is not None and isinstance(modules, str):
        raise ValueError("LoRA on some blocks only needs the target modules by name, not 'all-linear'")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, bias="none",
                        layers_to_transform=None if layers is None else list(layers),
                        layers_pattern=None if layers is None else "layers")  # the ModuleList of the blocks
    return get_peft_model(model, config)


def check_effective_batch_size(effective_batch_size: int, batch_size: int) -> int:
    """``effective_batch_size`` if it is at least ``batch_size`` (accumulation cannot shrink a batch), else a
    ValueError naming both."""
    if effective_batch_size < batch_size:
        raise ValueError(f"effective_batch_size ({effective_batch_size}) < batch_size ({batch_size})")
    return effective_batch_size


class PromptLoRATraining:
    """Mixin for a prompt-based, LoRA-tuned :class:`~medrec_bench.models.TorchRecommender` with the attributes
    ``effective_batch_size``, ``batch_size``, ``max_history``, ``include_profile``, ``max_length``, ``lr`` and
    ``weight_decay``: gradient accumulation up to the effective batch, the prompt settings, and Adam over the
    trainable tensors only (the adapters and any head)."""

    effective_batch_size: int
    batch_size: int
    max_history: int
    include_profile: bool
    max_length: int
    lr: float
    weight_decay: float
    module: Any
    param_ranges: ClassVar[dict[str, Range]] = {
        "lora_r": Range(ge=1), "lora_alpha": Range(gt=0), "lora_dropout": Range(ge=0, lt=1), "max_history": Range(ge=0),
        "max_length": Range(ge=1), "effective_batch_size": Range(ge=1), "eval_batch_size": Range(ge=1)}

    @property
    def accumulation_steps(self) -> int:
        """Batches per optimizer step: effective batch = ``accumulation_steps * batch_size``."""
        return max(1, self.effective_batch_size // self.batch_size)

    @property
    def prompt_config(self) -> PromptConfig:
        return PromptConfig(max_history=self.max_history, include_profile=self.include_profile,
                            max_length=self.max_length)

    def make_optimizer(self) -> torch.optim.Optimizer:
        assert self.module is not None
        params = [p for p in self.module.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)


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
        return base_model(self.peft_model)

    def to(self, *args: Any, **kwargs: Any) -> "AdapterLM":
        if args and isinstance(args[0], str) and args[0] == "auto":  # already placed by accelerate
            return self
        return super().to(*args, **kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits float [B, T, vocab]."""
        return call_lm(self.lm, input_ids, attention_mask).logits
