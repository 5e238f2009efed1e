"""Benchmark: the wall time of one grid with the sequential executor vs the Ray executor, and how it grows with the
number of jobs.

Usage: ``python bench/scale.py [--jobs 2,4,8] [--models mlp] [--epochs 10] [--patients 1000] [--num-cpus 2]``

The grid is ``--models`` x seeds 0..k-1 (k jobs per model, so ``--jobs`` must be multiples of the number of models)
on the embedded synthetic cohort (``--patients``, built once, untimed), each model's ``epochs`` set to ``--epochs``
and ``patience`` 0 so that every job does the same work. For each job count the grid runs twice in this process,
sequential then Ray, each into a fresh store and a fresh model cache (so every job trains), 200 bootstrap resamples.
The sequential executor runs on one torch thread, as each Ray worker does (Ray sets ``OMP_NUM_THREADS`` to the task's
one core). One local Ray instance with ``--num-cpus`` cores serves every Ray grid: its start-up, and an untimed
warm-up grid (the first model x one seed per core, 1 epoch) that starts its workers, are timed once and reported
apart; the same warm-up grid runs sequentially first (imports, first-call costs). The workers import the same
``medrec_bench`` as this process (its folder goes first on ``PYTHONPATH``). The script prints, per job
count, the seconds of each executor (``time.perf_counter`` around ``Runner.run``), their ratio (sequential / Ray:
above 1 means Ray is faster) and the seconds per job, and checks that both stores hold the same metrics.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

try:
    import medrec_bench
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import medrec_bench

from medrec_bench.data import load_cohort  # noqa: E402
from medrec_bench.executors import RayExecutor, ray_session  # noqa: E402
from medrec_bench.runner import EvalSettings, Runner  # noqa: E402
from medrec_bench.store import ResultStore  # noqa: E402


def timed_grid(cohort, root: Path, models: list[str], seeds: list[int], overrides: dict, executor) -> tuple[float, dict]:
    """Seconds of one grid into a fresh store and model cache under ``root``, and its metrics by (model, seed)."""
    with ResultStore(root / "r.db", create_parents=True) as store:
        runner = Runner(cohort, store, cache=root / "cache", settings=EvalSettings(n_boot=200), progress=False,
                        echo=lambda *_: None, executor=executor)
        start = time.perf_counter()
        outcomes = runner.run(models, seeds, overrides)
        seconds = time.perf_counter() - start
        failed = [o for o in outcomes if o.status != "complete"]
        if failed:
            raise SystemExit(f"{failed[0].model} seed {failed[0].seed}: {failed[0].status} {failed[0].error}")
        metrics = {(r.model, r.seed): [(m.group, m.averaging, m.metric, m.mean) for m in store.metrics_for(r.id)]
                   for r in store.runs()}
    return seconds, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="2,4,8", help="comma-separated job counts")
    parser.add_argument("--models", default="mlp")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patients", type=int, default=1000, help="size of the synthetic cohort")
    parser.add_argument("--num-cpus", type=int, default=2, help="cores of the local Ray instance")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    counts = [int(j) for j in args.jobs.split(",")]
    if any(n % len(models) for n in counts):
        raise SystemExit(f"--jobs must be multiples of the {len(models)} model(s)")
    overrides = {m: {"epochs": args.epochs, "patience": 0} for m in models if m not in ("popular",
                                                                                        "last_visit_repeat")}
    cohort = load_cohort("synthetic", patients=args.patients)
    code = str(Path(medrec_bench.__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (code, os.environ.get("PYTHONPATH")) if p)
    rows = []
    with tempfile.TemporaryDirectory(prefix="medrec-scale-") as tmp:
        start = time.perf_counter()
        with ray_session(num_cpus=args.num_cpus):
            ray_start = time.perf_counter() - start
            warm = ([models[0]], list(range(args.num_cpus)), {m: {**o, "epochs": 1} for m, o in overrides.items()})
            timed_grid(cohort, Path(tmp) / "warm-up-seq", *warm, None)
            warm_up = timed_grid(cohort, Path(tmp) / "warm-up-ray", *warm, RayExecutor())[0]
            for n in counts:
                seeds = list(range(n // len(models)))
                seq, seq_metrics = timed_grid(cohort, Path(tmp) / f"seq-{n}", models, seeds, overrides, None)
                par, par_metrics = timed_grid(cohort, Path(tmp) / f"ray-{n}", models, seeds, overrides,
                                              RayExecutor())
                if seq_metrics != par_metrics:
                    raise SystemExit(f"{n} jobs: the Ray grid's metrics differ from the sequential grid's")
                rows.append((n, f"{seq:.1f}", f"{par:.1f}", f"{seq / par:.2f}", f"{seq / n:.2f}", f"{par / n:.2f}"))
    print(f"cohort {cohort.name} ({len(cohort.patients)} patients), models {','.join(models)}, epochs {args.epochs}, "
          f"Ray with {args.num_cpus} CPUs (start-up {ray_start:.1f} s, warm-up grid {warm_up:.1f} s: not in the grid "
          f"times)")
    print(tabulate(rows, headers=["jobs", "sequential s", "ray s", "ratio seq/ray", "seq s/job", "ray s/job"],
                   tablefmt="github", disable_numparse=True))
    print("metrics: identical between the executors for every job count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
