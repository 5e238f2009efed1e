"""Executors: how a grid's jobs run. Both call the one job function, :meth:`Workbench.run_job`, and hand every result
to the driver's :meth:`Runner.finish`, the only writer of the store.

- :class:`Sequential` (the default, no Ray): each model x seed in this process, in grid order.
- :class:`RayExecutor` (``run --executor ray``, the ``ray`` extra): each job a Ray task on a local instance (started
  here and shut down after) or a running cluster (``address``: ``auto`` or ``HOST:PORT``). The workbench (with the
  cohort, built once by the driver) goes into the object store once; each task asks for :func:`task_resources`.
  A :class:`Schedule` orders the jobs: a model's ``requires`` are trained before its dependants start, and one model
  folder (model x params x seed x cohort) has one trainer per grid, so two workers never train the same model (a
  required model outside the grid gets a train-only job). A job that fails, or whose worker dies, is recorded as
  failed and run once more (``retries``); its dependants fail when it fails for good. Re-running skips what is done
  (:meth:`Runner.prepare`, the same resume rule as sequential).

The caches (trained models, teacher features, prefix states) live under the workbench's ``cache`` folder, which every
worker must see: on a cluster of several machines, a shared file system (and the same ``--cache`` path) on each.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tqdm.auto import tqdm

from .extras import require_extra
from .registry import ModelEntry
from .runner import Job, JobResult, Overrides, RunOutcome, summary_line

if TYPE_CHECKING:
    from .runner import Runner, Workbench

EXECUTORS = ("sequential", "ray")
#: the registry tag of models that want a whole GPU under Ray with ``--device cuda``
GPU_TAG = "llm"
#: the GPU share of every other model with ``--device cuda`` (small models share a GPU)
SMALL_MODEL_GPU = 0.25


class Executor(Protocol):
    def run(self, runner: Runner, grid: list[tuple[str, int]], overrides: Overrides) -> list[RunOutcome]:
        """The outcome of every (model, seed) of ``grid``, in grid order."""


class Sequential:
    """Every job in this process, one after the other, in grid order (needs no Ray)."""

    def run(self, runner: Runner, grid: list[tuple[str, int]], overrides: Overrides) -> list[RunOutcome]:
        outcomes = []
        bar = tqdm(grid, desc="runs", disable=not runner.progress, unit="run")
        for name, seed in bar:
            bar.set_postfix_str(f"{name} seed {seed}")
            outcome = runner.run_one(name, seed, overrides)
            outcomes.append(outcome)
            runner.echo(summary_line(outcome))
        return outcomes


def task_resources(entry: ModelEntry, device: str) -> dict[str, float]:
    """The Ray resources of one job of ``entry``: with a CUDA ``device`` a whole GPU for an ``llm``-tagged model and
    :data:`SMALL_MODEL_GPU` of one for the others, else one CPU core."""
    if device.startswith("cuda"):
        return {"num_cpus": 1, "num_gpus": 1.0 if GPU_TAG in entry.tags else SMALL_MODEL_GPU}
    return {"num_cpus": 1}


# --- the schedule: dependencies, one trainer per model folder, one retry ------------------------------------------


@dataclass
class Node:
    """One job of a :class:`Schedule`: its place in the grid (None: a train-only job for a required model), the
    nodes it waits for, and its attempts so far."""

    job: Job
    index: int | None
    needs: list[int]
    attempts: int = 0
    state: Literal["waiting", "running", "complete", "failed"] = "waiting"


@dataclass
class Schedule:
    """The jobs of a grid and what each waits for. A node waits for the trainers of its required models and, when an
    earlier node trains the same model folder, for that node (which it then loads from the cache)."""

    runner: Runner
    overrides: Overrides
    nodes: list[Node] = field(default_factory=list)
    _trainer: dict[Path, int] = field(default_factory=dict)

    def add(self, job: Job, index: int | None) -> int:
        """Add ``job`` (after the trainers of what it requires); returns its node id."""
        entry = self.runner.registry.get(job.model)
        needs = [self.require(self.runner.registry.get(name), job.seed) for name in entry.requires]
        folder = self.runner.model_folder(entry, job.seed, self.overrides)
        if folder in self._trainer:
            needs.append(self._trainer[folder])
        self.nodes.append(Node(job, index, needs))
        self._trainer.setdefault(folder, len(self.nodes) - 1)
        return len(self.nodes) - 1

    def require(self, entry: ModelEntry, seed: int) -> int:
        """The node that trains ``entry`` for ``seed``: the one already scheduled, or a new train-only job."""
        folder = self.runner.model_folder(entry, seed, self.overrides)
        if folder in self._trainer:
            return self._trainer[folder]
        return self.add(Job(entry.name, seed, self.overrides, train_only=True), None)

    def ready(self) -> Iterator[Node]:
        """Waiting nodes whose needs are all complete."""
        for node in self.nodes:
            if node.state == "waiting" and all(self.nodes[n].state == "complete" for n in node.needs):
                yield node

    def blocked(self) -> Iterator[tuple[Node, Node]]:
        """(waiting node, a need of it that failed for good)."""
        for node in self.nodes:
            failed = next((self.nodes[n] for n in node.needs if self.nodes[n].state == "failed"), None)
            if node.state == "waiting" and failed is not None:
                yield node, failed

    def execute(self, submit: Callable[[Node], Any], wait: Callable[[list[Any]], tuple[Any, JobResult]],
                retries: int, on_result: Callable[[Node, JobResult, bool], None]) -> None:
        """Run every node: ``submit(node)`` starts it and returns a handle, ``wait(handles)`` blocks until one is done
        and returns (handle, result); ``on_result(node, result, final)`` sees every result (``final`` false for a
        failure that is retried)."""
        running: dict[Any, Node] = {}
        fresh: set[str] = set()
        while True:
            while blocked := next(self.blocked(), None):  # until none is left: a failure blocks a whole chain
                node, failed = blocked
                node.state = "failed"
                error = f"required model {failed.job.model} (seed {failed.job.seed}) failed"
                on_result(node, JobResult(node.job, "failed", None, error=error), True)
            for node in list(self.ready()):
                node.state, node.attempts = "running", node.attempts + 1
                node.job = dataclasses.replace(node.job, fresh=frozenset(fresh))
                running[submit(node)] = node
            if not running:
                return
            handle, result = wait(list(running))
            node = running.pop(handle)
            fresh |= set(result.trained)
            final = result.status == "complete" or node.attempts > retries
            on_result(node, result, final)
            node.state = result.status if final else "waiting"


# --- Ray ------------------------------------------------------------------------------------------------------------


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """The ``ray`` module, connected: to the cluster at ``address`` (``auto``, ``HOST:PORT``), else to a local
    instance started here with ``num_cpus`` (None: all cores) and no dashboard, shut down on exit. An instance this
    process already runs is used as it is."""
    ray = require_extra("ray", "ray", "--executor ray")
    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


def check_gpus(ray: Any, device: str) -> None:
    """ValueError when ``device`` is CUDA and the Ray cluster has no GPU (its tasks would wait forever), or names
    one GPU (Ray assigns them: each task sees its own as ``cuda``)."""
    if not device.startswith("cuda"):
        return
    if device != "cuda":
        raise ValueError(f"--device {device} with --executor ray: Ray assigns the GPUs, use --device cuda")
    if not ray.cluster_resources().get("GPU", 0):
        raise ValueError("--device cuda with --executor ray: the Ray cluster has no GPU")


def _run_job(bench: Workbench, job: Job) -> JobResult:
    """The Ray task: the one job function, in a worker."""
    return bench.run_job(job)


@dataclass
class RayExecutor:
    """Each job a Ray task (see the module docstring). ``address``: a running cluster (``auto``, ``HOST:PORT``);
    None starts a local instance with ``num_cpus`` cores. ``retries``: further attempts of a failed job."""

    address: str | None = None
    num_cpus: int | None = None
    retries: int = 1

    def run(self, runner: Runner, grid: list[tuple[str, int]], overrides: Overrides) -> list[RunOutcome]:
        outcomes: list[RunOutcome | None] = [None] * len(grid)
        schedule = Schedule(runner, overrides)
        for index, (name, seed) in enumerate(grid):
            job = runner.prepare(name, seed, overrides)
            if isinstance(job, RunOutcome):
                outcomes[index] = job
                runner.echo(summary_line(job))
            else:
                schedule.add(job, index)

        def record(node: Node, result: JobResult, final: bool) -> None:
            if node.index is None:  # a train-only job: nothing to store
                if not final:
                    runner.echo(f"[retry]    training {node.job.model} seed {node.job.seed}: {result.error}")
                return
            if result.record is None:  # failed before it ran (a required model failed) or its worker died
                entry = runner.registry.get(node.job.model)
                result = dataclasses.replace(result, record=runner.run_record(entry, node.job.seed, overrides))
            outcome = runner.finish(result)
            if final:
                outcomes[node.index] = outcome
                runner.echo(summary_line(outcome))
            else:
                runner.echo(f"[retry]    {node.job.model} seed {node.job.seed}: {result.error}")

        self.execute(runner, schedule, record)
        return [o for o in outcomes if o is not None]

    def train(self, runner: Runner, jobs: list[tuple[str, int]], overrides: Overrides) -> list[JobResult]:
        """Train (or load) these models x seeds, each once, before other work needs them (e.g. a sweep's required
        models); the final result of each."""
        schedule = Schedule(runner, overrides)
        for name, seed in jobs:
            schedule.require(runner.registry.get(name), seed)
        results: dict[int, JobResult] = {}
        self.execute(runner, schedule, lambda node, result, final: results.__setitem__(id(node), result))
        return list(results.values())

    def execute(self, runner: Runner, schedule: Schedule,
                on_result: Callable[[Node, JobResult, bool], None]) -> None:
        """Run ``schedule`` on Ray: one task per node, worker deaths turned into failed results."""
        if not schedule.nodes:
            return
        with ray_session(self.address, self.num_cpus) as ray:
            check_gpus(ray, runner.device)
            task = ray.remote(max_retries=0)(_run_job)
            bench = ray.put(runner.workbench())

            jobs: dict[Any, Job] = {}

            def submit(node: Node) -> Any:
                entry = runner.registry.get(node.job.model)
                handle = task.options(**task_resources(entry, runner.device)).remote(bench, node.job)
                jobs[handle] = node.job
                return handle

            def wait(pending: list[Any]) -> tuple[Any, JobResult]:
                (handle,), _ = ray.wait(pending, num_returns=1)
                job = jobs.pop(handle)
                try:
                    return handle, ray.get(handle)
                except ray.exceptions.RayError as exc:  # the worker died (or Ray lost the task)
                    return handle, JobResult(job, "failed", None, error=worker_error(exc))

            schedule.execute(submit, wait, self.retries, on_result)


def worker_error(exc: BaseException) -> str:
    """A one-line error for a task Ray could not finish (a killed worker, a lost node)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def make_executor(name: str, address: str | None = None, num_cpus: int | None = None) -> Executor:
    """The executor called ``name`` (:data:`EXECUTORS`); ``address`` and ``num_cpus`` are Ray's."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r} (choose from {', '.join(EXECUTORS)})")
    if name == "sequential":
        if address is not None:
            raise ValueError("--ray-address needs --executor ray")
        return Sequential()
    return RayExecutor(address=address, num_cpus=num_cpus)
