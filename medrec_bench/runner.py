"""The runner: train every model x seed on a cohort's protocol, predict the test split, evaluate, store.

- A run's key hashes the model's class and resolved parameters, the cohort fingerprint, the protocol and split
  order, the seed and the evaluation settings. A run already complete in the store is skipped (resume).
- A trained model is cached under ``<cache>/models/<key>`` (safetensors + JSON) keyed by the same hash minus the
  evaluation settings, so re-scoring with other settings never retrains.
- Test predictions are saved as parquet keyed by a salted hash of the patient id (never the raw id), so
  :func:`rescore` can re-evaluate with another threshold or averaging.
- A model that raises is recorded as failed with its one-line error and the grid goes on.
"""

from __future__ import annotations

import hashlib
import json
import platform
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from . import resources
from .data.cache import atomic_folder
from .data.cohort import Cohort
from .evaluate import MetricResult, evaluate, tune_threshold
from .models import Context, Recommender, check_resources
from .paths import cache_dir as default_cache_dir
from .registry import ModelEntry, Registry, default_registry
from .store import ResultStore, RunRecord
from .tasks.batching import targets_matrix
from .tasks.protocols import Sample, Splits, make_splits

Threshold = Literal["default", "tuned"] | float
TRAIN_INFO = "train.json"
_VERSIONED = ("medrec-bench", "torch", "numpy", "polars", "transformers", "peft", "torch-geometric", "rdkit")


@dataclass(frozen=True)
class EvalSettings:
    """How test predictions are scored: threshold (``default`` = the model's, ``tuned`` = best Jaccard on
    validation, or a number), bootstrap resamples, uncertainty method (see :func:`medrec_bench.evaluate.evaluate`)."""

    threshold: Threshold = "default"
    n_boot: int = 1000
    uncertainty: str = "bootstrap"

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "n_boot": self.n_boot, "uncertainty": self.uncertainty}


@dataclass
class RunOutcome:
    model: str
    seed: int
    status: Literal["complete", "skipped", "failed"]
    run_id: int | None = None
    error: str | None = None
    train_seconds: float | None = None
    results: list[Any] = field(default_factory=list)


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """The repository's HEAD commit, when the package runs from a git checkout."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def patient_key(patient_id: str, salt: str) -> str:
    """Salted hash of a patient id: what prediction files store instead of the id."""
    return hashlib.sha256(f"{salt}:{patient_id}".encode()).hexdigest()[:20]


def _salt(folder: Path) -> str:
    path = folder / ".salt"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x") as fh:
                fh.write(secrets.token_hex(16))
        except FileExistsError:
            pass
    return path.read_text().strip()


def save_predictions(path: Path, samples: list[Sample], y_prob: np.ndarray, drug_codes: tuple[str, ...],
                     salt: str) -> None:
    """Per-sample test predictions: salted patient key, n_visits, true drug indices, probabilities."""
    frame = pl.DataFrame({
        "patient_key": [patient_key(s.patient_id, salt) for s in samples],
        "n_visits": np.array([s.n_visits for s in samples], dtype=np.int32),
        "target": [list(s.target) for s in samples],
        "prob": list(y_prob.astype(np.float32)),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({"drugs": list(drug_codes)}))


def load_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(y_true bool [N, M], y_prob float [N, M], patient keys [N], n_visits [N], drug codes) from a predictions file."""
    frame = pl.read_parquet(path)
    drugs = tuple(json.loads(path.with_suffix(".json").read_text())["drugs"])
    y_prob = np.stack(frame["prob"].to_numpy()).astype(np.float32) if frame.height else np.zeros((0, len(drugs)))
    y_true = np.zeros(y_prob.shape, dtype=bool)
    for i, target in enumerate(frame["target"].to_list()):
        y_true[i, target] = True
    return y_true, y_prob, frame["patient_key"].to_numpy(), frame["n_visits"].to_numpy(), drugs


class Runner:
    """Runs a grid of models x seeds on one cohort and protocol, writing to a :class:`ResultStore`."""

    def __init__(self, cohort: Cohort, store: ResultStore, *, protocol: str = "last_visit",
                 split_order: str = "shuffle", settings: EvalSettings | None = None, device: str = "cpu",
                 registry: Registry | None = None, cache: str | Path | None = None,
                 predictions_dir: str | Path | None = None, progress: bool = True, echo=print) -> None:
        self.cohort = cohort
        self.store = store
        self.protocol = protocol
        self.split_order = split_order
        self.settings = settings or EvalSettings()
        self.device = device
        self.registry = registry or default_registry()
        self.cache = Path(cache) if cache else default_cache_dir()
        self.predictions_dir = Path(predictions_dir) if predictions_dir else Path(store.path).parent / "predictions"
        self.progress = progress
        self.echo = echo
        self._splits: dict[int, Splits] = {}

    # --- keys -----------------------------------------------------------------------------------------------
    def splits(self, seed: int) -> Splits:
        if seed not in self._splits:
            self._splits[seed] = make_splits(self.cohort, self.protocol, seed, self.split_order)
        return self._splits[seed]

    def model_key(self, entry: ModelEntry, params: dict[str, Any], seed: int) -> str:
        return _hash({"class": entry.class_path, "params": params, "data": self.cohort.fingerprint,
                      "protocol": self.protocol, "split_order": self.split_order, "seed": seed})

    def run_key(self, entry: ModelEntry, params: dict[str, Any], seed: int) -> str:
        return _hash({"model": self.model_key(entry, params, seed), "name": entry.name,
                      "eval": self.settings.to_dict()})

    # --- training with the model cache ----------------------------------------------------------------------
    def context(self, seed: int, artifacts: dict[str, Any] | None = None) -> Context:
        return Context.from_cohort(self.cohort, device=self.device, seed=seed, work_dir=self.cache / "work",
                                   artifacts=artifacts or {}, progress=self.progress)

    def model_folder(self, entry: ModelEntry, params: dict[str, Any], seed: int) -> Path:
        """Where the trained model of this configuration is cached."""
        return self.cache / "models" / self.model_key(entry, params, seed)[:24]

    def trained(self, entry: ModelEntry, overrides: dict[str, Any], seed: int,
                all_overrides: dict[str, dict[str, Any]]) -> tuple[Recommender, float, Path]:
        """The fitted model (from the cache when its key matches), its training seconds and its folder.

        Models named in ``entry.requires`` are trained (or loaded) first and handed over in ``ctx.artifacts``.
        """
        artifacts: dict[str, Any] = {}
        for name in entry.requires:
            req = self.registry.get(name)
            model, _, folder = self.trained(req, all_overrides.get(req.name, {}), seed, all_overrides)
            artifacts[req.name] = {"model": model, "dir": folder}
        params = entry.resolved_params(overrides)
        folder = self.model_folder(entry, params, seed)
        ctx = self.context(seed, artifacts)
        cls = entry.load_class()
        if (folder / TRAIN_INFO).exists():
            model = cls.load(folder, ctx)
            return model, float(json.loads((folder / TRAIN_INFO).read_text())["train_seconds"]), folder
        split = self.splits(seed)
        model = cls(**params)
        start = time.perf_counter()
        model.fit(list(split.train), list(split.val), ctx)
        seconds = time.perf_counter() - start

        def write(tmp: Path) -> None:
            model.save(tmp)
            (tmp / TRAIN_INFO).write_text(json.dumps({"train_seconds": seconds, "model": entry.name}))

        atomic_folder(folder, write)
        return model, seconds, folder

    # --- one run --------------------------------------------------------------------------------------------
    def run_one(self, name: str, seed: int, overrides: dict[str, dict[str, Any]]) -> RunOutcome:
        entry = self.registry.get(name)
        model_overrides = overrides.get(entry.name, {})
        params = entry.resolved_params(model_overrides)
        key = self.run_key(entry, params, seed)
        done = self.store.completed_run(key)
        if done is not None:
            return RunOutcome(entry.name, seed, "skipped", done.id, train_seconds=done.train_seconds)
        record = RunRecord(run_key=key, model=entry.name, params=params, data=self.cohort.name,
                           data_fingerprint=self.cohort.fingerprint, protocol=self.protocol, seed=seed,
                           git_commit=git_commit(), versions=package_versions())
        try:
            model, train_seconds, _ = self.trained(entry, model_overrides, seed, overrides)
            split = self.splits(seed)
            test = list(split.test)
            if not test:
                raise ValueError("the test split is empty (cohort too small for this protocol)")
            start = time.perf_counter()
            y_prob = model.predict_proba(test)
            predict_ms = (time.perf_counter() - start) * 1000 / len(test)
            threshold = self.threshold_for(model, list(split.val))
            y_true = targets_matrix(test, len(self.cohort.vocab.drugs)).numpy()
            results = evaluate(y_true, y_prob, [s.patient_id for s in test], [s.n_visits for s in test],
                               self.cohort.ddi, threshold=threshold, n_boot=self.settings.n_boot, seed=seed,
                               uncertainty=self.settings.uncertainty)
            pred_path = self.predictions_dir / f"{key[:24]}.parquet"
            save_predictions(pred_path, test, y_prob, self.cohort.vocab.drugs.codes, _salt(self.predictions_dir))
            full = RunRecord(**{**record.__dict__, "train_seconds": train_seconds,
                                "predict_ms_per_sample": predict_ms, "n_parameters": model.n_parameters(),
                                "threshold": threshold, "predictions_path": str(pred_path)})
            run_id = self.store.record_run(full, results)
            return RunOutcome(entry.name, seed, "complete", run_id, train_seconds=train_seconds, results=results)
        except Exception as exc:  # recorded, and the grid goes on
            message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            run_id = self.store.record_failure(record, message)
            return RunOutcome(entry.name, seed, "failed", run_id, error=message)

    def threshold_for(self, model: Recommender, val: list[Sample]) -> float:
        choice = self.settings.threshold
        if choice == "default":
            return float(model.default_threshold)
        if choice == "tuned":
            if not val:
                raise ValueError("--threshold tuned needs a validation split")
            y_true = targets_matrix(val, len(self.cohort.vocab.drugs)).numpy()
            return float(tune_threshold(y_true, model.predict_proba(val)))
        return float(choice)

    def run(self, models: list[str], seeds: list[int],
            overrides: dict[str, dict[str, Any]] | None = None) -> list[RunOutcome]:
        """Run every model x seed; prints a summary line per run."""
        overrides = overrides or {}
        entries = [self.registry.get(m) for m in models]  # unknown names fail before any training
        for entry in entries:
            entry.resolved_params(overrides.get(entry.name, {}))
            check_resources(entry.load_class(), self.cohort)
        outcomes = []
        grid = [(e.name, s) for e in entries for s in seeds]
        bar = tqdm(grid, desc="runs", disable=not self.progress, unit="run")
        for name, seed in bar:
            bar.set_postfix_str(f"{name} seed {seed}")
            outcome = self.run_one(name, seed, overrides)
            outcomes.append(outcome)
            self.echo(summary_line(outcome))
        return outcomes


def summary_line(o: RunOutcome) -> str:
    if o.status == "failed":
        return f"[failed]   {o.model} seed {o.seed}: {o.error}"
    if o.status == "skipped":
        return f"[done]     {o.model} seed {o.seed}: already in the store (run {o.run_id}), skipped"
    jac = next((r.mean for r in o.results if r.group == "overall" and r.averaging == "sample"
                and r.metric == "jaccard"), float("nan"))
    return f"[complete] {o.model} seed {o.seed}: jaccard {jac:.4f}, trained in {o.train_seconds:.1f} s (run {o.run_id})"


def rescore(store: ResultStore, run_id: int, *, threshold: float | None = None, n_boot: int = 1000,
            uncertainty: str = "bootstrap", seed: int | None = None) -> list[MetricResult]:
    """Re-evaluate a stored run's saved test predictions (another threshold, resamples or uncertainty method)."""
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"no run {run_id} in {store.path}")
    if not run.predictions_path or not Path(run.predictions_path).exists():
        raise ValueError(f"run {run_id} has no saved predictions (looked for {run.predictions_path})")
    y_true, y_prob, keys, n_visits, drugs = load_predictions(Path(run.predictions_path))
    ddi = resources.ddi_matrix(drugs)
    return evaluate(y_true, y_prob, keys, n_visits, ddi,
                    threshold=run.threshold if threshold is None else threshold, n_boot=n_boot,
                    seed=run.seed if seed is None else seed, uncertainty=uncertainty)
