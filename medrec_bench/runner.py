"""The runner: train every model x seed on a cohort's protocol, predict the test split, evaluate, store.

Two halves, so that one job function serves every executor:

- :class:`Workbench` holds what a job needs and no store: the cohort, protocol, evaluation settings, registry and
  caches. :meth:`Workbench.run_job` is *the* job function: train (or load) one model x seed, predict and score its
  test split, and return a :class:`JobResult` (the run row, its metrics and the test probabilities), never raising
  for a model's error. It runs in this process (``sequential``) or in a worker (:mod:`medrec_bench.executors`).
- :class:`Runner` (a workbench with a :class:`ResultStore`) is the driver: the resume rule (:meth:`Runner.prepare`),
  the grid (:meth:`Runner.run`, through an executor) and, alone, the writes (:meth:`Runner.finish`: the saved
  predictions and the store row).

- A run's key hashes the model's class, its code (:func:`code_hash`) and resolved parameters, the keys of the models
  it requires, the cohort fingerprint, the protocol and split order, the seed and the evaluation settings. A run
  already complete in the store is skipped (resume) unless ``force``.
- A trained model is cached under ``<cache>/models/<key>`` (safetensors + JSON) keyed by the same hash minus the
  evaluation settings, so re-scoring with other settings never retrains; editing the model's code retrains it.
- Test predictions are saved by :mod:`medrec_bench.predictions` under ``predictions/<store name>/`` beside the store
  (patient ids as HMACs under the store's secret, never the raw id), so :func:`rescore` can re-evaluate with another
  threshold or averaging.
- Concurrent runners on one store: a run another process completed first counts as skipped, never as failed; each
  run records when it started and when it ended.
- The model's :meth:`~medrec_bench.models.Recommender.diagnostics` (training-time values kept with the cached model,
  merged with those after predicting the test split) are stored with the run.
- A model that raises is recorded as failed with its one-line error and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm.auto import tqdm

from . import resources
from .data.cache import atomic_folder, discard_if_corrupt
from .data.cohort import Cohort
from .evaluate import evaluate, tune_threshold
from .metrics import multilabel_scores
from .models import Context, Recommender, check_resources
from .paths import cache_dir as default_cache_dir
from .predictions import load_predictions, save_predictions
from .records import MetricResult
from .registry import ModelEntry, Registry, default_registry
from .store import ResultStore, RunRecord, utc_now
from .tasks.batching import targets_matrix
from .tasks.protocols import Sample, Splits, make_splits

if TYPE_CHECKING:
    from .executors import Executor

Threshold = Literal["default", "tuned"] | float
Diagnostics = dict[str, float | int | str]
Overrides = Mapping[str, Mapping[str, Any]]
TRAIN_INFO = "train.json"
_VERSIONED = ("medrec-bench", "torch", "numpy", "polars", "transformers", "peft", "torch-geometric", "rdkit")
#: top-level packages whose modules count as the project's code in :func:`code_hash`
PROJECT_PACKAGES = ("medrec_bench", "leader", "baselines")


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
    results: list[MetricResult] = field(default_factory=list)
    diagnostics: dict[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Trained:
    """A fitted model with its training seconds, its cache folder and its training-time diagnostics."""

    model: Recommender
    train_seconds: float
    folder: Path
    diagnostics: Diagnostics = field(default_factory=dict)


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


def code_modules(cls: type) -> list[str]:
    """Names of the modules :func:`code_hash` covers: those defining ``cls`` and its base classes in the project.

    The project is the class's own top-level package plus :data:`PROJECT_PACKAGES`; so a model in
    ``baselines/safedrug.py`` comes with ``medrec_bench/models.py`` (its base classes, with the shared training
    loop), and a plugin with its own package's base classes. Order: the method resolution order.
    """
    packages = {*PROJECT_PACKAGES, cls.__module__.partition(".")[0]}
    names: list[str] = []
    for klass in cls.__mro__:
        if klass.__module__.partition(".")[0] in packages and klass.__module__ not in names:
            names.append(klass.__module__)
    return names


def code_hash(cls: type) -> str:
    """Hash (16 hex chars) of the source files of :func:`code_modules` (``cls``'s code as it is on disk now).

    Any edit of those files, comments included, changes it, and with it the model and run keys. Helper modules
    that hold no base class (e.g. ``medrec_bench/llm/...``) are not covered: after changing one, run with
    ``--force``. A module without a readable source file is hashed by its name only.
    """
    digest = hashlib.sha256()
    for name in code_modules(cls):
        file = getattr(sys.modules.get(name), "__file__", None)
        source = Path(file).read_bytes() if file and Path(file).is_file() else b""
        digest.update(f"{name}\0{len(source)}\0".encode() + source)
    return digest.hexdigest()[:16]


def check_diagnostics(values: Any) -> Diagnostics:
    """A model's diagnostics as a JSON-ready dict of str -> float | int | str (numpy scalars converted)."""
    if not isinstance(values, dict):
        raise TypeError(f"diagnostics() must return a dict, got {type(values).__name__}")
    out: Diagnostics = {}
    for key, value in values.items():
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(key, str) or not isinstance(value, (float, int, str)):
            raise TypeError(f"diagnostics {key!r}: expected str -> float | int | str, got {type(value).__name__}")
        out[key] = value
    return out


@dataclass(frozen=True)
class Job:
    """One unit of work: train (or load) ``model`` for ``seed`` and, unless ``train_only``, predict and score its
    test split. ``overrides``: model name -> params, for every model (as :meth:`Workbench.model_key` takes them);
    ``validate``: also score the validation split (:attr:`JobResult.val_prauc`, what sweeps select on); ``fresh``:
    model folders (re)trained earlier in this grid, which ``force`` / ``rebuild`` then load instead of retraining."""

    model: str
    seed: int
    overrides: Overrides = field(default_factory=dict)
    train_only: bool = False
    validate: bool = False
    fresh: frozenset[str] = frozenset()


@dataclass
class JobResult:
    """What :meth:`Workbench.run_job` hands back to the driver: the run row (None for a ``train_only`` job; without
    its predictions path, which the driver sets), its metrics and test probabilities when complete, the one-line
    error when failed, and the model folders the job trained (not loaded)."""

    job: Job
    status: Literal["complete", "failed"]
    record: RunRecord | None
    error: str | None = None
    results: list[MetricResult] = field(default_factory=list)
    y_prob: np.ndarray | None = None
    val_prauc: float | None = None
    trained: tuple[str, ...] = ()


def validation_prauc(samples: list[Sample], y_prob: np.ndarray, n_drugs: int) -> float:
    """Mean per-sample PRAUC of ``y_prob`` on ``samples``: the score the shared training loop early-stops on and
    sweeps select on (threshold-free)."""
    return float(multilabel_scores(targets_matrix(samples, n_drugs).numpy(), y_prob)["prauc"].mean())


def one_line(exc: BaseException) -> str:
    """``ExcType: first line of the message``: how a failure is recorded."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class Workbench:
    """What a job needs besides the store: the cohort and its protocol, the evaluation settings, the registry and the
    caches; :meth:`run_job` is the one job function of every executor. Picklable (a Ray worker gets a copy)."""

    def __init__(self, cohort: Cohort, *, protocol: str = "last_visit", split_order: str = "shuffle",
                 settings: EvalSettings | None = None, device: str = "cpu", registry: Registry | None = None,
                 cache: str | Path | None = None, progress: bool = True, force: bool = False,
                 rebuild: bool = False, writes: bool = True) -> None:
        """``force``: retrain every model (once per workbench, or per grid: :attr:`Job.fresh`) and re-run every run,
        even when cached or complete. ``rebuild``: retrain every model that runs (likewise once) instead of loading
        it from the cache; complete runs are still skipped. ``cache``: the root of the model and work caches
        (default :func:`cache_dir`); workers on several machines need it on a shared file system. ``writes``: False
        on the other processes of a data-parallel launch (:mod:`medrec_bench.distributed`), which read the caches and
        the store but leave every write to the main process."""
        self.cohort = cohort
        self.protocol = protocol
        self.split_order = split_order
        self.settings = settings or EvalSettings()
        self.device = device
        self.registry = registry or default_registry()
        self.cache = Path(cache) if cache else default_cache_dir()
        self.progress = progress
        self.force = force
        self.rebuild = rebuild
        self.writes = writes
        self._splits: dict[int, Splits] = {}
        self._trained_here: set[Path] = set()

    def workbench(self) -> Workbench:
        """A plain :class:`Workbench` with this one's settings and nothing else (no store): what workers get."""
        return Workbench(self.cohort, protocol=self.protocol, split_order=self.split_order, settings=self.settings,
                         device=self.device, registry=self.registry, cache=self.cache, progress=False,
                         force=self.force, rebuild=self.rebuild, writes=self.writes)

    # --- keys -----------------------------------------------------------------------------------------------
    def splits(self, seed: int) -> Splits:
        if seed not in self._splits:
            self._splits[seed] = make_splits(self.cohort, self.protocol, seed, self.split_order)
        return self._splits[seed]

    def check_splits(self, seed: int) -> None:
        """ValueError when the cohort is too small for this protocol: the train or test split of ``seed`` is empty."""
        split = self.splits(seed)
        empty = next((name for name in ("train", "test") if not split[name]), None)
        if empty is not None:
            raise ValueError(f"cohort {self.cohort.name} has {len(self.cohort.patients)} patient(s): the {empty} split "
                             f"of the {self.protocol} protocol (seed {seed}) is empty; use a larger cohort")

    def model_key(self, entry: ModelEntry, seed: int, overrides: Overrides) -> str:
        """Hash of what a trained model depends on: class, its code, resolved params, the required models' keys,
        cohort fingerprint, protocol, split order and seed. ``overrides``: model name -> params, for every model."""
        params = entry.resolved_params(overrides.get(entry.name, {}))
        requires = [self.model_key(self.registry.get(name), seed, overrides) for name in entry.requires]
        return _hash({"class": entry.class_path, "code": code_hash(entry.load_class()), "params": params,
                      "requires": requires, "data": self.cohort.fingerprint, "protocol": self.protocol,
                      "split_order": self.split_order, "seed": seed})

    def run_key(self, entry: ModelEntry, seed: int, overrides: Overrides) -> str:
        """:meth:`model_key` plus the registry name and the evaluation settings."""
        return _hash({"model": self.model_key(entry, seed, overrides), "name": entry.name,
                      "eval": self.settings.to_dict()})

    def run_record(self, entry: ModelEntry, seed: int, overrides: Overrides) -> RunRecord:
        """The run's row as it starts (configuration, versions, start time; no results yet)."""
        return RunRecord(run_key=self.run_key(entry, seed, overrides), model=entry.name,
                         params=entry.resolved_params(overrides.get(entry.name, {})), data=self.cohort.name,
                         data_fingerprint=self.cohort.fingerprint, protocol=self.protocol, seed=seed,
                         git_commit=git_commit(), versions=package_versions(),
                         code_hash=code_hash(entry.load_class()), uncertainty=self.settings.uncertainty,
                         started_at=utc_now())

    # --- training with the model cache ----------------------------------------------------------------------
    def context(self, seed: int, artifacts: dict[str, Any] | None = None) -> Context:
        return Context.from_cohort(self.cohort, device=self.device, seed=seed, work_dir=self.cache / "work",
                                   artifacts=artifacts or {}, progress=self.progress)

    def model_folder(self, entry: ModelEntry, seed: int, overrides: Overrides) -> Path:
        """Where the trained model of this configuration is cached."""
        return self.cache / "models" / self.model_key(entry, seed, overrides)[:24]

    def trained(self, entry: ModelEntry, seed: int, overrides: Overrides) -> Trained:
        """The fitted model: from the cache when its key matches and its files match their checksums (unless
        ``force`` or ``rebuild`` and not yet trained by this workbench), else trained and cached; a cache entry that
        fails its checksum is warned about once and retrained. Models named in ``entry.requires`` come first,
        handed over in ``ctx.artifacts``."""
        artifacts: dict[str, Any] = {}
        for name in entry.requires:
            req = self.registry.get(name)
            done = self.trained(req, seed, overrides)
            artifacts[req.name] = {"model": done.model, "dir": done.folder}
        params = entry.resolved_params(overrides.get(entry.name, {}))
        folder = self.model_folder(entry, seed, overrides)
        ctx = self.context(seed, artifacts)
        cls = entry.load_class()
        reuse = folder in self._trained_here or not (self.force or self.rebuild)
        if reuse and (folder / TRAIN_INFO).exists() and not discard_if_corrupt(folder, f"trained model {entry.name}"):
            info = json.loads((folder / TRAIN_INFO).read_text())
            return Trained(cls.load(folder, ctx), float(info["train_seconds"]), folder, info.get("diagnostics", {}))
        split = self.splits(seed)
        model = cls(**params)
        start = time.perf_counter()
        model.fit(list(split.train), list(split.val), ctx)
        seconds = time.perf_counter() - start
        diagnostics = check_diagnostics(model.diagnostics())

        def write(tmp: Path) -> None:
            model.save(tmp)
            info = {"train_seconds": seconds, "model": entry.name, "diagnostics": diagnostics}
            (tmp / TRAIN_INFO).write_text(json.dumps(info))

        if self.writes:
            if folder.exists():  # a stale copy (--force) would otherwise win over the fresh one
                shutil.rmtree(folder)
            atomic_folder(folder, write)
        self._trained_here.add(folder)
        return Trained(model, seconds, folder, diagnostics)

    # --- the job function -----------------------------------------------------------------------------------
    def run_job(self, job: Job) -> JobResult:
        """Train (or load) one model x seed and, unless ``job.train_only``, predict its test split and evaluate it.
        A model that raises gives a failed result with its one-line error; nothing is written but the caches."""
        entry = self.registry.get(job.model)
        self._trained_here |= {Path(p) for p in job.fresh}
        before = set(self._trained_here)
        record = None if job.train_only else self.run_record(entry, job.seed, job.overrides)
        try:
            fitted = self.trained(entry, job.seed, job.overrides)
            trained = tuple(sorted(str(p) for p in self._trained_here - before))
            if record is None:
                return JobResult(job, "complete", None, trained=trained)
            model, split = fitted.model, self.splits(job.seed)
            test, val = list(split.test), list(split.val)
            if not test:
                raise ValueError("the test split is empty (cohort too small for this protocol)")
            start = time.perf_counter()
            y_prob = model.predict_proba(test)
            predict_ms = (time.perf_counter() - start) * 1000 / len(test)
            diagnostics = {**fitted.diagnostics, **check_diagnostics(model.diagnostics())}  # before validation
            wants_val = job.validate or self.settings.threshold == "tuned"
            val_prob = model.predict_proba(val) if wants_val and val else None
            threshold = self.threshold_for(model, val, val_prob)
            n_drugs = len(self.cohort.vocab.drugs)
            y_true = targets_matrix(test, n_drugs).numpy()
            results = evaluate(y_true, y_prob, [s.patient_id for s in test], [s.n_visits for s in test],
                               self.cohort.ddi, threshold=threshold, n_boot=self.settings.n_boot, seed=job.seed,
                               uncertainty=self.settings.uncertainty)
            full = dataclasses.replace(record, train_seconds=fitted.train_seconds, predict_ms_per_sample=predict_ms,
                                       n_parameters=model.n_parameters(), threshold=threshold,
                                       diagnostics=diagnostics)
            val_prauc = validation_prauc(val, val_prob, n_drugs) if job.validate and val_prob is not None else None
            return JobResult(job, "complete", full, results=results, y_prob=y_prob, val_prauc=val_prauc,
                             trained=trained)
        except Exception as exc:  # recorded by the driver, and the grid goes on
            trained = tuple(sorted(str(p) for p in self._trained_here - before))
            return JobResult(job, "failed", record, error=one_line(exc), trained=trained)

    def threshold_for(self, model: Recommender, val: list[Sample], val_prob: np.ndarray | None) -> float:
        """The decision threshold of the settings: the model's, a number, or (``tuned``) the best Jaccard on the
        validation samples ``val``, from their probabilities ``val_prob``."""
        choice = self.settings.threshold
        if choice == "default":
            return float(model.default_threshold)
        if choice == "tuned":
            if not val or val_prob is None:
                raise ValueError("--threshold tuned needs a validation split")
            y_true = targets_matrix(val, len(self.cohort.vocab.drugs)).numpy()
            return float(tune_threshold(y_true, val_prob))
        return float(choice)


class Runner(Workbench):
    """Runs a grid of models x seeds on one cohort and protocol, writing to a :class:`ResultStore`: the driver. Its
    ``executor`` (default :class:`~medrec_bench.executors.Sequential`) runs the jobs; the runner alone writes."""

    def __init__(self, cohort: Cohort, store: ResultStore, *, protocol: str = "last_visit",
                 split_order: str = "shuffle", settings: EvalSettings | None = None, device: str = "cpu",
                 registry: Registry | None = None, cache: str | Path | None = None,
                 predictions_dir: str | Path | None = None, progress: bool = True, echo=print,
                 force: bool = False, rebuild: bool = False, executor: Executor | None = None,
                 writes: bool = True) -> None:
        """See :class:`Workbench` for the job settings; ``predictions_dir``: where test predictions are saved
        (default ``predictions/<store name>/`` beside the store); ``echo``: where summary lines go."""
        super().__init__(cohort, protocol=protocol, split_order=split_order, settings=settings, device=device,
                         registry=registry, cache=cache, progress=progress, force=force, rebuild=rebuild,
                         writes=writes)
        self.store = store
        store_path = Path(store.path)  # one predictions folder per store: stores side by side never share files
        self.predictions_dir = Path(predictions_dir) if predictions_dir else \
            store_path.parent / "predictions" / store_path.stem
        self.echo = echo
        self.executor = executor

    # --- the driver's half of a run ---------------------------------------------------------------------------
    def prepare(self, name: str, seed: int, overrides: Overrides, **job: Any) -> Job | RunOutcome:
        """The resume rule: a ``skipped`` outcome when the run is complete in the store (unless ``force``), else the
        :class:`Job` that runs it (``job``: its other fields)."""
        entry = self.registry.get(name)
        done = None if self.force else self.store.completed_run(self.run_key(entry, seed, overrides))
        if done is not None:
            return RunOutcome(entry.name, seed, "skipped", done.id, train_seconds=done.train_seconds)
        return Job(entry.name, seed, overrides, **job)

    def finish(self, result: JobResult) -> RunOutcome:
        """Write a job's result: the test predictions and the complete run, or the failure. A run another process
        completed first counts as skipped, never as failed."""
        record, seed = result.record, result.job.seed
        assert record is not None, "train-only jobs have no run to store"
        if not self.writes:  # another process of a data-parallel launch stores it
            return RunOutcome(record.model, seed, result.status, None, error=result.error,
                              train_seconds=record.train_seconds)
        if result.status == "failed":
            done = None if self.force else self.store.completed_run(record.run_key)
            if done is not None:  # another process completed the same run meanwhile: nothing is lost
                return RunOutcome(record.model, seed, "skipped", done.id, train_seconds=done.train_seconds)
            run_id = self.store.record_failure(record, result.error or "unknown error")
            return RunOutcome(record.model, seed, "failed", run_id, error=result.error)
        test = list(self.splits(seed).test)
        pred_path = self.predictions_dir / f"{record.run_key[:24]}.parquet"
        save_predictions(pred_path, test, result.y_prob, self.cohort.vocab.drugs.codes, self.store.patient_secret())
        run_id = self.store.record_run(dataclasses.replace(record, predictions_path=str(pred_path)), result.results,
                                       replace=self.force)
        stored = self.store.get_run(run_id)
        if stored is not None and stored.started_at != record.started_at:  # another process completed it first
            return RunOutcome(record.model, seed, "skipped", run_id, train_seconds=stored.train_seconds)
        diagnostics = record.diagnostics if isinstance(record.diagnostics, dict) else json.loads(record.diagnostics)
        return RunOutcome(record.model, seed, "complete", run_id, train_seconds=record.train_seconds,
                          results=result.results, diagnostics=diagnostics)

    def run_one(self, name: str, seed: int, overrides: Overrides) -> RunOutcome:
        """Train (or load), predict the test split, evaluate and store one model x seed, in this process."""
        job = self.prepare(name, seed, overrides)
        return job if isinstance(job, RunOutcome) else self.finish(self.run_job(job))

    def check_grid(self, models: list[str], seeds: list[int], overrides: Overrides) -> list[ModelEntry]:
        """The entries of ``models`` after the checks that come before any training: names, parameters, resources,
        splits (RegistryError / ValueError)."""
        entries = [self.registry.get(m) for m in models]  # unknown names fail before any training
        for entry in entries:
            entry.resolved_params(overrides.get(entry.name, {}))
            check_resources(entry.load_class(), self.cohort)
        for seed in seeds:
            self.check_splits(seed)
        return entries

    def run(self, models: list[str], seeds: list[int],
            overrides: Overrides | None = None) -> list[RunOutcome]:
        """Run every model x seed through the executor; prints a summary line per run."""
        from .executors import Sequential

        overrides = overrides or {}
        entries = self.check_grid(models, seeds, overrides)
        grid = [(e.name, s) for e in entries for s in seeds]
        return (self.executor or Sequential()).run(self, grid, overrides)


def summary_line(o: RunOutcome) -> str:
    if o.status == "failed":
        return f"[failed]   {o.model} seed {o.seed}: {o.error}"
    if o.status == "skipped":
        return f"[done]     {o.model} seed {o.seed}: already in the store (run {o.run_id}), skipped"
    jac = next((r.mean for r in o.results if r.group == "overall" and r.averaging == "sample"
                and r.metric == "jaccard"), float("nan"))
    line = f"[complete] {o.model} seed {o.seed}: jaccard {jac:.4f}, trained in {o.train_seconds:.1f} s (run {o.run_id})"
    if o.diagnostics:  # e.g. epochs run, prefix states cached vs computed, out-of-vocabulary rate
        line += "; " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in o.diagnostics.items())
    return line


def rescore(store: ResultStore, run_id: int, *, threshold: float | None = None, n_boot: int = 1000,
            uncertainty: str = "bootstrap", seed: int | None = None) -> list[MetricResult]:
    """Re-evaluate a stored run's saved test predictions (another threshold, resamples or uncertainty method)."""
    run = store.get_run(run_id)
    if run is None:
        raise ValueError(f"no run {run_id} in {store.path}")
    if not run.predictions_path or not Path(run.predictions_path).exists():
        raise ValueError(f"run {run_id} has no saved predictions (looked for {run.predictions_path})")
    pred = load_predictions(Path(run.predictions_path))
    return evaluate(pred.y_true, pred.y_prob, pred.patient_keys, pred.n_visits, resources.ddi_matrix(pred.drugs),
                    threshold=run.threshold if threshold is None else threshold, n_boot=n_boot,
                    seed=run.seed if seed is None else seed, uncertainty=uncertainty)
