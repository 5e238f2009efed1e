"""Hyper-parameter sweeps (``medrec-bench run --sweep FILE``): a grid or seeded random search over one model's
registry parameters, run through Ray Tune, selecting on validation PRAUC.

The file (YAML; unknown keys are errors)::

    name: logistic-lr        # optional; default: the file's name without extension
    model: logistic          # a registry name or alias
    search: grid             # grid: every combination of the lists; random: `samples` draws with `seed`
    samples: 8               # random only
    seed: 0                  # random only (the sampler's seed; the runs' seeds come from --seeds)
    params:
      lr: [0.001, 0.01]      # a list: grid values, or (random) drawn uniformly from it
      epochs: [2]
      # random only: a range, {low: 1.0e-4, high: 1.0e-2, log: true}; integers when the parameter is an int

Every trial's values are checked before anything runs by the same typed / ``Range`` checks as ``--set``
(:meth:`~medrec_bench.registry.ModelEntry.resolve`); a parameter may not be both swept and ``--set``. A trial is one
configuration, run for every ``--seeds`` seed as an ordinary run (:meth:`Workbench.run_job` with ``validate``), so
the resume rule holds: a re-run sweep skips the runs that are complete and whose validation PRAUC it recorded. Ray
Tune runs one trial per configuration (its resources as :func:`~medrec_bench.executors.task_resources`; one retry
after a failure or a dead worker), reporting the mean validation PRAUC over the seeds; the results reach the driver
through a small actor. The driver stores every run, chooses the configuration with the best mean validation PRAUC
(:func:`choose`: the lowest trial number among equals, so the choice never depends on the order trials finish), and
stores the sweep and its trials (``sweeps`` / ``sweep_runs``, :meth:`ResultStore.record_sweep`) with the choice
marked. The models the swept model requires are trained once before the trials (:meth:`RayExecutor.train`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml

from .extras import require_extra
from .registry import ModelEntry, Registry, RegistryError
from .runner import Job, JobResult, Overrides, RunOutcome
from .store import ResultStore, SweepRecord, SweepTrial

if TYPE_CHECKING:
    from .executors import RayExecutor
    from .runner import Runner, Workbench

SEARCHES = ("grid", "random")
SWEEP_KEYS = {"name", "model", "search", "samples", "seed", "params"}
RANGE_KEYS = {"low", "high", "log"}
SELECTION = "val_prauc"


class SweepError(ValueError):
    """A sweep file that cannot be run; the message is one line naming the file."""


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file: the model and the list of trial configurations (param -> value, already checked)."""

    name: str
    model: str
    search: Literal["grid", "random"]
    spec: dict[str, Any]
    trials: list[dict[str, Any]]


def _range_value(rng: np.random.Generator, bounds: dict[str, Any], integer: bool) -> float | int:
    low, high, log = float(bounds["low"]), float(bounds["high"]), bool(bounds.get("log", False))
    if log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    if integer:
        return int(min(max(round(value), math.ceil(low)), math.floor(high)))
    return float(value)


def _trials(where: str, entry: ModelEntry, search: str, params: dict[str, Any], samples: int | None,
            seed: int) -> list[dict[str, Any]]:
    """The trial configurations (unchecked) of a grid or random search."""
    for name, values in params.items():
        if isinstance(values, dict):
            if search == "grid":
                raise SweepError(f"{where}: params.{name}: a grid takes a list of values, not a range")
            unknown = sorted(set(values) - RANGE_KEYS)
            if unknown or not {"low", "high"} <= set(values):
                raise SweepError(f"{where}: params.{name}: a range is {{low: ..., high: ..., log: true|false}}")
            if float(values["low"]) > float(values["high"]) or (values.get("log") and float(values["low"]) <= 0):
                raise SweepError(f"{where}: params.{name}: need low <= high (and low > 0 with log)")
        elif not isinstance(values, list) or not values:
            raise SweepError(f"{where}: params.{name}: expected a non-empty list of values or a range")
    names = list(params)
    if search == "grid":
        return [dict(zip(names, combo)) for combo in itertools.product(*(params[n] for n in names))]
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise SweepError(f"{where}: a random search needs samples: an integer >= 1")
    defaults = entry.resolved_params()
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(samples):
        trial = {}
        for n in names:
            values = params[n]
            if isinstance(values, dict):
                integer = type(defaults.get(n)) is int
                trial[n] = _range_value(rng, values, integer)
            else:
                trial[n] = values[int(rng.integers(len(values)))]
        trials.append(trial)
    return trials


def load_sweep(path: str | Path, registry: Registry, overrides: Overrides | None = None) -> Sweep:
    """Parse and check the sweep file at ``path`` (see the module docstring); ``overrides`` (``--set``) may not name
    a swept parameter. Every trial's values go through the model's typed / ``Range`` checks."""
    path = Path(path)
    where = f"sweep file {path}"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SweepError(f"{where}: cannot be read as YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise SweepError(f"{where}: expected a mapping with model, search and params")
    unknown = sorted(set(data) - SWEEP_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(SWEEP_KEYS))})")
    for key in ("model", "params"):
        if key not in data:
            raise SweepError(f"{where}: no {key!r}")
    search = data.get("search", "grid")
    if search not in SEARCHES:
        raise SweepError(f"{where}: search must be one of {', '.join(SEARCHES)}, not {search!r}")
    if search == "grid" and ("samples" in data or "seed" in data):
        raise SweepError(f"{where}: samples and seed are for search: random")
    params = data["params"]
    if not isinstance(params, dict) or not params:
        raise SweepError(f"{where}: params must be a non-empty mapping of parameter -> values")
    try:
        entry = registry.get(str(data["model"]))
        fixed = dict((overrides or {}).get(entry.name, {}))
        both = sorted(set(fixed) & set(params))
        if both:
            raise SweepError(f"{where}: {entry.name}.{both[0]} is both swept and set with --set")
        seed = data.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise SweepError(f"{where}: seed must be a non-negative integer")
        trials = _trials(where, entry, search, params, data.get("samples"), seed)
        checked = []
        for trial in trials:  # the --set checks: unknown parameters, types, ranges
            resolved = entry.resolved_params({**fixed, **trial})
            checked.append({name: resolved[name] for name in trial})
    except RegistryError as exc:
        raise SweepError(f"{where}: {exc}") from None
    return Sweep(str(data.get("name") or path.stem), entry.name, search, data, checked)


# --- running a sweep ---------------------------------------------------------------------------------------------


@dataclass
class TrialOutcome:
    """One configuration of a sweep: its values, one outcome per seed, its mean validation PRAUC (None when a run
    failed) and whether it was chosen."""

    trial: int
    params: dict[str, Any]
    outcomes: list[RunOutcome] = field(default_factory=list)
    val_prauc: float | None = None
    chosen: bool = False


@dataclass(frozen=True)
class SweepOutcome:
    sweep_id: int
    sweep: Sweep
    trials: list[TrialOutcome]

    @property
    def chosen(self) -> TrialOutcome | None:
        return next((t for t in self.trials if t.chosen), None)


def trial_overrides(sweep: Sweep, trial: dict[str, Any], overrides: Overrides) -> dict[str, dict[str, Any]]:
    """``overrides`` (``--set``) with the trial's values for the swept model."""
    out = {name: dict(values) for name, values in overrides.items()}
    out[sweep.model] = {**out.get(sweep.model, {}), **trial}
    return out


def sweep_key(runner: Runner, sweep: Sweep, seeds: list[int], overrides: Overrides) -> str:
    """What identifies a sweep in the store: its file's content, the other overrides, the cohort, the protocol, the
    split order, the seeds and the evaluation settings."""
    payload = {"spec": sweep.spec, "name": sweep.name, "overrides": overrides, "data": runner.cohort.fingerprint,
               "protocol": runner.protocol, "split_order": runner.split_order, "seeds": seeds,
               "eval": runner.settings.to_dict()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class _Collector:
    """A Ray actor holding the latest :class:`JobResult` of every (trial, seed): how results reach the driver."""

    def __init__(self) -> None:
        self.results: dict[tuple[int, int], JobResult] = {}

    def put(self, trial: int, seed: int, result: JobResult) -> None:
        self.results[(trial, seed)] = result

    def all(self) -> dict[tuple[int, int], JobResult]:
        return self.results


def _trainable(config: dict[str, Any], bench: Workbench, collector: Any,
               plan: dict[int, list[tuple[int, Job | float]]]) -> dict[str, float]:
    """One Tune trial: the jobs of its seeds (a known validation PRAUC for the runs already done); raises when one
    fails, so that Tune retries the trial."""
    import ray

    trial, scores = int(config["trial"]), []
    for seed, job in plan[trial]:
        if not isinstance(job, Job):
            scores.append(job)
            continue
        result = bench.run_job(job)
        ray.get(collector.put.remote(trial, seed, result))
        if result.status == "failed" or result.val_prauc is None:
            raise RuntimeError(f"trial {trial} seed {seed}: {result.error or 'no validation split'}")
        scores.append(result.val_prauc)
    return {SELECTION: float(np.mean(scores))}


def run_sweep(runner: Runner, sweep: Sweep, seeds: list[int], overrides: Overrides,
              executor: RayExecutor) -> SweepOutcome:
    """Run every trial x seed through Ray Tune (on ``executor``'s Ray), store the runs, the sweep and its choice
    (:func:`choose`). Tune is not started when every run is complete with a recorded validation PRAUC."""
    configs = [trial_overrides(sweep, t, overrides) for t in sweep.trials]
    for config in configs:
        runner.check_grid([sweep.model], seeds, config)
    key = sweep_key(runner, sweep, seeds, overrides)
    previous = runner.store.sweep(key)
    known = {t.run_id: t.val_prauc for t in runner.store.sweep_trials(previous.id)} if previous else {}
    trials = [TrialOutcome(i, t) for i, t in enumerate(sweep.trials)]
    done: dict[tuple[int, int], RunOutcome] = {}
    plan: dict[int, list[tuple[int, Job | float]]] = {}
    for trial, config in zip(trials, configs):
        plan[trial.trial] = []
        for seed in seeds:
            job = runner.prepare(sweep.model, seed, config, validate=True)
            if isinstance(job, RunOutcome) and known.get(job.run_id) is not None:
                done[(trial.trial, seed)] = job
                plan[trial.trial].append((seed, float(known[job.run_id])))
            else:  # to run, or complete without a recorded validation PRAUC: the cached model is scored again
                plan[trial.trial].append((seed, job if isinstance(job, Job) else Job(sweep.model, seed, config,
                                                                                       validate=True)))
    results: dict[tuple[int, int], JobResult] = {}
    if any(isinstance(job, Job) for steps in plan.values() for _, job in steps):
        results = _tune(runner, sweep, plan, configs[0], seeds, executor)
    for trial in trials:
        for seed, _ in plan[trial.trial]:
            outcome = done.get((trial.trial, seed))
            if outcome is None:
                outcome = _store(runner, results.get((trial.trial, seed)), sweep.model, seed, configs[trial.trial])
            trial.outcomes.append(outcome)
        scores = [_score(plan, results, trial.trial, seed) for seed in seeds]
        trial.val_prauc = float(np.mean(scores)) if all(s is not None for s in scores) else None
    best = choose(trials)
    for trial in trials:
        trial.chosen = trial is best
    record = SweepRecord(key, sweep.name, sweep.model, sweep.spec, runner.cohort.name, runner.protocol, SELECTION)
    rows = [SweepTrial(o.run_id, t.trial, _score(plan, results, t.trial, o.seed), t.chosen)
            for t in trials for o in t.outcomes if o.run_id is not None]
    return SweepOutcome(runner.store.record_sweep(record, rows), sweep, trials)


def choose(trials: list[TrialOutcome]) -> TrialOutcome | None:
    """The trial with the best mean validation PRAUC (the first of equals); None when none has one."""
    scored = [t for t in trials if t.val_prauc is not None and math.isfinite(t.val_prauc)]
    return max(scored, key=lambda t: (t.val_prauc, -t.trial)) if scored else None


def _tune(runner: Runner, sweep: Sweep, plan: dict[int, list[tuple[int, Job | float]]], overrides: Overrides,
          seeds: list[int], executor: RayExecutor) -> dict[tuple[int, int], JobResult]:
    """Run the trials on Ray Tune, one per configuration (the swept model's requirements trained first); the final
    :class:`JobResult` of every (trial, seed) that ran."""
    from .executors import ray_session, task_resources

    entry = runner.registry.get(sweep.model)
    with ray_session(executor.address, executor.num_cpus) as ray:
        tune = require_extra("ray.tune", "ray", "--sweep")
        if entry.requires:  # trained once, before the trials load them
            jobs = [(name, seed) for name in entry.requires for seed in seeds]
            failed = next((r for r in executor.train(runner, jobs, overrides) if r.status == "failed"), None)
            if failed is not None:
                raise ValueError(f"{sweep.model} requires {failed.job.model}, whose training (seed {failed.job.seed}) "
                                 f"failed: {failed.error}")
        collector = ray.remote(num_cpus=0)(_Collector).remote()
        resources = task_resources(entry, runner.device)  # Tune names them cpu / gpu
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, bench=runner.workbench(), collector=collector, plan=plan),
            {"cpu": resources["num_cpus"], "gpu": resources.get("num_gpus", 0)})
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        to_run = sorted(t for t, steps in plan.items() if any(isinstance(job, Job) for _, job in steps))
        tuner = tune.Tuner(trainable, param_space={"trial": tune.grid_search(to_run)},
                           tune_config=tune.TuneConfig(metric=SELECTION, mode="max"),
                           run_config=_run_config(ray, runner.cache / "tune", f"{sweep.name}-{stamp}",
                                                  executor.retries))
        tuner.fit()  # a trial that failed twice is in the collector as failed (or missing: its worker died)
        return ray.get(collector.all.remote())


def _run_config(ray: Any, storage: Path, name: str, retries: int) -> Any:
    """Tune's run settings: results under the cache, quiet, ``retries`` retries of a failed trial."""
    from ray import tune

    run_config = getattr(tune, "RunConfig", None) or ray.train.RunConfig  # moved into ray.tune in Ray 2.44
    failure_config = getattr(tune, "FailureConfig", None) or ray.train.FailureConfig
    return run_config(name=name, storage_path=str(storage.resolve()), verbose=0,
                      failure_config=failure_config(max_failures=retries))


def _score(plan: dict[int, list[tuple[int, Job | float]]], results: dict[tuple[int, int], JobResult], trial: int,
           seed: int) -> float | None:
    """The validation PRAUC of one run of a sweep: known before it, or from its job's result."""
    known = dict(plan[trial])[seed]
    if not isinstance(known, Job):
        return known
    result = results.get((trial, seed))
    return result.val_prauc if result is not None and result.status == "complete" else None


def _store(runner: Runner, result: JobResult | None, model: str, seed: int, config: Overrides) -> RunOutcome:
    """Write one trial run's final result; a run without one (its worker died on every attempt) as failed."""
    if result is None:
        record = runner.run_record(runner.registry.get(model), seed, config)
        result = JobResult(Job(model, seed, config), "failed", record, error="the trial's worker died")
    return runner.finish(result)


def sweep_table(outcome: SweepOutcome, store: ResultStore, fmt: str = "github") -> str:
    """The trials of a sweep: the swept values, mean validation PRAUC and test Jaccard (from ``store``) over the
    seeds, the runs, the choice."""
    from tabulate import tabulate

    rows = []
    for t in outcome.trials:
        jaccard = [m.mean for o in t.outcomes if o.run_id is not None for m in store.metrics_for(o.run_id)
                   if (m.group, m.averaging, m.metric) == ("overall", "sample", "jaccard")]
        rows.append([t.trial, ", ".join(f"{k}={v!r}" for k, v in t.params.items()),
                     "" if t.val_prauc is None else f"{t.val_prauc:.4f}",
                     f"{np.mean(jaccard):.4f}" if jaccard else "",
                     ", ".join(str(o.run_id) for o in t.outcomes),
                     ", ".join(sorted({o.status for o in t.outcomes})), "chosen" if t.chosen else ""])
    return tabulate(rows, headers=["trial", "params", "val PRAUC", "test Jaccard", "runs", "status", ""],
                    tablefmt=fmt, disable_numparse=True)
