"""The model contract every recommender honours, and the shared torch training loop.

The contract (scikit-learn-like, tiny):

- construct with keyword parameters only (typed defaults in ``__init__``; :meth:`Recommender.get_params` reads them
  back), so the registry and ``--set`` can override them and unknown names are errors;
- ``fit(train, val, ctx) -> self``: train on samples (see :class:`medrec_bench.tasks.Sample`);
- ``predict_proba(samples) -> float32 [n, |M|]``: a probability per drug of ``ctx.vocab.drugs``;
- ``save(folder)`` / ``Model.load(folder, ctx)``: safetensors + JSON, never pickle.

Class attributes declare what a model needs: ``default_threshold`` (0.5 for most; the decision threshold applied to
``predict_proba``), ``needs_resources`` (resources from the context: ``"ddi"``, ``"smiles"``; checked by
:func:`check_resources` before training).

:class:`TorchRecommender` owns batching, Adam, early stopping on validation PRAUC with patience, restoring the best
state, the progress bar and seeding, so a model file holds only its ``nn.Module`` and how to feed it.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .data.schema import Vocabularies
from .metrics import multilabel_scores
from .registry import Range
from .tasks.batching import collate_visits, targets_matrix
from .tasks.protocols import Sample

PARAMS_FILE = "params.json"
STATE_FILE = "state.safetensors"
#: the seeds numpy, torch and the splits accept (a run's seed and a model's ``seed`` parameter)
SEED_RANGE = Range(ge=0, lt=2**32)


@dataclass
class Context:
    """What a model may use besides its samples.

    ``ddi`` bool [|M|, |M|] aligned with ``vocab.drugs``; ``smiles[i]`` the SMILES of drug ``i``; ``work_dir`` a
    folder the model may write caches into; ``artifacts`` maps a required model's name to what it exposes
    (``{"model": fitted instance, "dir": its saved folder}``).
    """

    vocab: Vocabularies
    ddi: np.ndarray
    smiles: tuple[tuple[str, ...], ...]
    device: str = "cpu"
    seed: int = 0
    work_dir: Path | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    progress: bool = False

    @property
    def n_drugs(self) -> int:
        return len(self.vocab.drugs)

    @property
    def profile_fields(self) -> tuple[str, ...]:
        return tuple(self.vocab.profile)

    @classmethod
    def from_cohort(cls, cohort: Any, **kw: Any) -> "Context":
        return cls(vocab=cohort.vocab, ddi=cohort.ddi, smiles=cohort.smiles, **kw)


def check_device(device: str) -> str:
    """``device`` when torch can use it here, else a one-line ValueError saying what is available."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: no CUDA device is available on this machine (use --device cpu)")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine (use --device cpu)")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: medrec-bench runs on cpu, cuda or mps")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU results are then repeatable)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


RESOURCES = ("ddi", "smiles")


def check_resources(model: type["Recommender"], source: Any) -> None:
    """Raise a one-line ValueError when ``source`` (a :class:`Context` or a cohort: ``vocab``, ``ddi``, ``smiles``)
    lacks a resource that ``model.needs_resources`` names: ``"ddi"`` a [|M|, |M|] matrix, ``"smiles"`` one entry per
    drug with SMILES for at least one drug. Drugs without SMILES (a cohort built without ``require_smiles``) are
    allowed: the molecule models give them a learned fallback embedding."""
    name, needs, n_drugs = model.__name__, set(model.needs_resources), len(source.vocab.drugs)
    unknown = sorted(needs - set(RESOURCES))
    if unknown:
        raise ValueError(f"{name} needs the unknown resource {unknown[0]!r} (known: {', '.join(RESOURCES)})")
    if "ddi" in needs and np.shape(source.ddi) != (n_drugs, n_drugs):
        raise ValueError(f"{name} needs a DDI matrix of shape ({n_drugs}, {n_drugs}), not {np.shape(source.ddi)}")
    if "smiles" in needs:
        smiles = tuple(source.smiles)
        if len(smiles) != n_drugs:
            raise ValueError(f"{name} needs one SMILES entry per drug ({n_drugs}), not {len(smiles)}")
        if not any(smiles):
            raise ValueError(f"{name} needs SMILES, but none of the {n_drugs} drugs has any")


def _signature(func: Any) -> inspect.Signature:
    """``func``'s signature with postponed (string) annotations evaluated where they can be (``Literal`` aliases)."""
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        return inspect.signature(func)


class Recommender(ABC):
    """Base class of every model. Subclasses define ``__init__`` with keyword-only typed defaults and store each
    parameter under the same attribute name."""

    default_threshold: ClassVar[float] = 0.5
    needs_resources: ClassVar[frozenset[str]] = frozenset()
    #: a tiny configuration for the shared contract test (seconds on CPU)
    test_params: ClassVar[dict[str, Any]] = {}
    #: allowed values of numeric parameters by name, merged over the base classes (see :meth:`all_param_ranges`)
    param_ranges: ClassVar[dict[str, Range]] = {"seed": SEED_RANGE}

    # --- parameters -----------------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        sig = inspect.signature(cls.__init__)
        return tuple(n for n, p in sig.parameters.items() if n != "self" and p.kind is p.KEYWORD_ONLY)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Raise ValueError naming the first parameter ``cls`` does not take."""
        known = cls.param_names()
        for name in params:
            if name not in known:
                raise ValueError(
                    f"{cls.__name__} has no parameter {name!r} (parameters: {', '.join(known) or 'none'})"
                )

    @classmethod
    def all_param_ranges(cls) -> dict[str, Range]:
        """The :class:`~medrec_bench.registry.Range` of each parameter that has one: the ``param_ranges`` of the class
        and of its bases and mixins (the most derived wins)."""
        out: dict[str, Range] = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("param_ranges", {}))
        names = cls.param_names()
        return {name: r for name, r in out.items() if name in names}

    @classmethod
    def param_specs(cls) -> dict[str, inspect.Parameter]:
        """Each parameter of :meth:`param_names` with its typed default, as its most derived ``__init__`` declares."""
        specs: dict[str, inspect.Parameter] = {}
        for name in cls.param_names():
            for klass in cls.__mro__:
                init = vars(klass).get("__init__")
                spec = _signature(init).parameters.get(name) if init is not None else None
                if spec is not None and spec.kind is spec.KEYWORD_ONLY:
                    specs[name] = spec
                    break
        return specs

    def get_params(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.param_names()}

    # --- the contract -----------------------------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "Recommender":
        """Train on ``train`` (early stopping may use ``val``); returns self."""

    @abstractmethod
    def predict_proba(self, samples: Sequence[Sample]) -> np.ndarray:
        """float32 [len(samples), |M|] probabilities."""

    def n_parameters(self) -> int | None:
        """Number of trainable parameters (None when the notion does not apply)."""
        return None

    def diagnostics(self) -> dict[str, float | int | str]:
        """Extra per-run values worth keeping with the run (a small dict: e.g. an OOV rate, feature-cache hits,
        epochs run). Read after ``fit`` (kept with the cached model) and again after predicting the test split;
        the runner stores them and ``medrec-bench show`` prints them. Default: none."""
        return {}

    # --- persistence: subclasses provide the state as tensors -------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything learned, as named tensors (saved with safetensors)."""

    @abstractmethod
    def load_state_tensors(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        """Restore from :meth:`state_tensors` output; ``ctx`` gives vocabularies and resources."""

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / PARAMS_FILE).write_text(json.dumps({"class": type(self).__qualname__,
                                                      "params": self.get_params()}, indent=2, default=str))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_tensors().items()}
        save_file(state, str(folder / STATE_FILE))

    @classmethod
    def load(cls, folder: str | Path, ctx: Context) -> "Recommender":
        folder = Path(folder)
        data = json.loads((folder / PARAMS_FILE).read_text())
        if data.get("class") != cls.__qualname__:
            raise ValueError(f"{folder} holds a {data.get('class')}, not a {cls.__qualname__}")
        model = cls(**data["params"])
        model.load_state_tensors(load_file(str(folder / STATE_FILE)), ctx)
        return model


class TorchRecommender(Recommender):
    """A recommender whose network is an ``nn.Module`` producing logits [B, |M|].

    Subclasses implement :meth:`build` (the module, from the context) and may override :meth:`make_batch`
    (default: :func:`collate_visits`) and :meth:`loss` (default: BCE with logits). Shared parameters:
    ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``patience`` (epochs without a better validation PRAUC,
    or without a lower training loss when there is no validation set, before stopping; 0 disables early stopping),
    ``seed`` (None: the context's seed). Subclasses may set the attributes ``accumulation_steps`` (optimizer step every k batches; effective batch = k x batch_size) and
    ``max_grad_norm`` (gradient clipping; None = off).
    """

    accumulation_steps: int = 1
    max_grad_norm: float | None = None

    module: nn.Module | None = None
    epochs_run: int | None = None  #: epochs trained by the last ``fit``
    best_epoch: int | None = None  #: the epoch (counted from 1) whose state ``fit`` kept
    test_params: ClassVar[dict[str, Any]] = {"epochs": 2}
    param_ranges: ClassVar[dict[str, Range]] = {"epochs": Range(ge=1), "batch_size": Range(ge=1), "lr": Range(gt=0),
                                                "weight_decay": Range(ge=0), "patience": Range(ge=0)}

    def __init__(self, *, epochs: int = 20, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.0,
                 patience: int = 5, seed: int | None = None) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.ctx: Context | None = None
        self.history: list[dict[str, float]] = []

    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            if "__init__" in vars(klass) and issubclass(klass, TorchRecommender):
                sig = inspect.signature(vars(klass)["__init__"])
                names += [n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY and n not in names]
        return tuple(names)

    # --- what subclasses provide -------------------------------------------------------------------------------
    @abstractmethod
    def build(self, ctx: Context) -> nn.Module:
        """The network for this context (vocabulary sizes, DDI matrix, molecules ...)."""

    def make_batch(self, samples: Sequence[Sample], ctx: Context) -> Any:
        """Model inputs for ``samples`` (anything with ``.to(device)`` or a tensor / tuple of tensors)."""
        return collate_visits(samples, len(ctx.vocab.diagnoses), len(ctx.vocab.procedures), len(ctx.vocab.drugs),
                              ctx.profile_fields)

    def forward(self, batch: Any) -> torch.Tensor:
        """Logits [B, |M|] for a batch from :meth:`make_batch`."""
        assert self.module is not None
        return self.module(batch)

    def loss(self, batch: Any, target: torch.Tensor, epoch: int) -> torch.Tensor:
        """Training loss for one batch (default: BCE with logits)."""
        return nn.functional.binary_cross_entropy_with_logits(self.forward(batch), target)

    # --- the shared loop ---------------------------------------------------------------------------------------
    def _to_device(self, batch: Any) -> Any:
        device = self.ctx.device if self.ctx else "cpu"
        if isinstance(batch, torch.Tensor) or hasattr(batch, "to"):
            return batch.to(device)
        if isinstance(batch, (tuple, list)):
            return type(batch)(self._to_device(b) for b in batch)
        return batch

    def _batches(self, samples: Sequence[Sample], order: Sequence[int]):
        assert self.ctx is not None
        for start in range(0, len(order), self.batch_size):
            chunk = [samples[i] for i in order[start:start + self.batch_size]]
            target = targets_matrix(chunk, self.ctx.n_drugs).float().to(self.ctx.device)
            yield self._to_device(self.make_batch(chunk, self.ctx)), target

    def fit(self, train: Sequence[Sample], val: Sequence[Sample], ctx: Context) -> "TorchRecommender":
        if not train:
            raise ValueError("no training samples")
        seed = ctx.seed if self.seed is None else self.seed
        seed_everything(seed)
        self.ctx = ctx
        self.module = self.build(ctx).to(ctx.device)
        self.before_training(train, val)
        optimizer = self.make_optimizer()
        rng = np.random.default_rng(seed)
        best_score, best_state, bad_epochs = -math.inf, None, 0
        self.history = []
        self.epochs_run, self.best_epoch = 0, None
        bar = tqdm(range(self.epochs), desc=type(self).__name__, disable=not ctx.progress, unit="epoch", leave=False)
        for epoch in bar:
            self.epochs_run = epoch + 1
            self.module.train()
            total, n = 0.0, 0
            optimizer.zero_grad()
            n_batches = -(-len(train) // self.batch_size)
            for step, (batch, target) in enumerate(self._batches(train, self.epoch_order(train, rng)), start=1):
                loss = self.loss(batch, target, epoch)
                (loss / self.accumulation_steps).backward()
                if step % self.accumulation_steps == 0 or step == n_batches:
                    if self.max_grad_norm is not None:
                        nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                total += float(loss.detach()) * len(target)
                n += len(target)
            record = {"epoch": epoch, "loss": total / n}
            if val:
                probs = self.predict_proba(val)
                record["val_prauc"] = float(multilabel_scores(targets_matrix(val, ctx.n_drugs).numpy(), probs,
                                                              self.default_threshold)["prauc"].mean())
            self.history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", val_prauc=f"{record.get('val_prauc', float('nan')):.4f}")
            self.on_epoch_end(record)
            score = record.get("val_prauc", -record["loss"])
            if score > best_score:
                best_score, bad_epochs = score, 0
                best_state = copy.deepcopy(self.module.state_dict())
                self.best_epoch = epoch + 1
            else:
                bad_epochs += 1
                if self.patience and bad_epochs >= self.patience:
                    break
        if best_state is not None:
            self.module.load_state_dict(best_state)
        self.module.eval()
        return self

    def epoch_order(self, train: Sequence[Sample], rng: np.random.Generator) -> Sequence[int]:
        """The order of the training samples in one epoch (cut into batches of ``batch_size``): a permutation."""
        return rng.permutation(len(train))

    def before_training(self, train: Sequence[Sample], val: Sequence[Sample]) -> None:
        """Hook after :meth:`build` and before the first epoch (e.g. to precompute inputs of every sample)."""

    def on_epoch_end(self, record: dict[str, float]) -> None:
        """Hook after each epoch (``record``: epoch, loss, val_prauc); e.g. to adapt a loss weight."""

    def make_optimizer(self) -> torch.optim.Optimizer:
        assert self.module is not None
        return torch.optim.Adam(self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    @torch.no_grad()
    def predict_proba(self, samples: Sequence[Sample]) -> np.ndarray:
        if self.module is None or self.ctx is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        self.module.eval()
        out = np.zeros((len(samples), self.ctx.n_drugs), dtype=np.float32)
        for start in range(0, len(samples), max(self.batch_size, 256)):
            chunk = list(samples[start:start + max(self.batch_size, 256)])
            batch = self._to_device(self.make_batch(chunk, self.ctx))
            out[start:start + len(chunk)] = torch.sigmoid(self.forward(batch)).float().cpu().numpy()
        if len(samples):
            self.module.train(False)
        return out

    def n_parameters(self) -> int | None:
        if self.module is None:
            return None
        return sum(p.numel() for p in self.module.parameters() if p.requires_grad)

    def diagnostics(self) -> dict[str, float | int | str]:
        """``epochs_run`` and ``best_epoch`` of the last ``fit`` (nothing for a model loaded from disk)."""
        values = {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch}
        return {k: v for k, v in values.items() if v is not None}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.module is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return dict(self.module.state_dict())

    def load_state_tensors(self, state: dict[str, torch.Tensor], ctx: Context) -> None:
        self.ctx = ctx
        self.module = self.build(ctx).to(ctx.device)
        self.module.load_state_dict(state)
        self.module.eval()
