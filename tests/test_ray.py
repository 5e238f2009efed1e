"""The Ray executor and sweeps: same metrics as sequential, a killed worker loses and duplicates nothing, a sweep
stores its trials and marks the best; the schedule (requirements first, one trainer per model, one retry) without
Ray. The Ray tests share one local instance with 2 CPUs and a 200-patient synthetic cohort (about 40 s in all on the
2-core development machine)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from baselines.popular import Popular
from medrec_bench.cli import main
from medrec_bench.executors import RayExecutor, Schedule, make_executor
from medrec_bench.registry import Registry, load_registry, parse_entry
from medrec_bench.runner import EvalSettings, Runner
from medrec_bench.store import ResultStore
from medrec_bench.sweep import SweepError, load_sweep

REPO = Path(__file__).resolve().parents[1]


class DiesOnce(Popular):
    """Kills its worker process the first time it trains for a seed (a marker file under the work cache)."""

    def fit(self, train, val, ctx):
        marker = Path(ctx.work_dir) / f"died-once-{ctx.seed}"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os._exit(1)
        return super().fit(train, val, ctx)


class NeedsPopular(Popular):
    def fit(self, train, val, ctx):
        self.frequencies = ctx.artifacts["popular"]["model"].frequencies * 0.5
        return self


class NeedsPopularToo(NeedsPopular):
    """Another model (class) with the same requirement."""


class Exploding(Popular):
    def fit(self, train, val, ctx):
        raise RuntimeError("boom")


def _registry() -> Registry:
    extra = [parse_entry("dies_once", {"class": "tests.test_ray:DiesOnce"}, "test"),
             parse_entry("needs_popular", {"class": "tests.test_ray:NeedsPopular", "requires": ["popular"]}, "test"),
             parse_entry("needs_popular_too", {"class": "tests.test_ray:NeedsPopularToo", "requires": ["popular"]},
                         "test"),
             parse_entry("exploding", {"class": "tests.test_ray:Exploding"}, "test"),
             parse_entry("needs_exploding", {"class": "tests.test_ray:NeedsPopular", "requires": ["exploding"]},
                         "test")]
    return Registry([*load_registry(plugins=False), *extra])


@pytest.fixture(scope="module")
def cohort(cache_root):
    from medrec_bench.data import load_cohort

    return load_cohort("synthetic", patients=200, cache=cache_root)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs, no dashboard) for the module; its workers can import ``tests``. Without Ray
    the tests are skipped, except under CI (``CI`` set), where they fail: the README's set-up installs the extra."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the Ray tests need the ray extra, which the README's set-up installs", pytrace=False)
        pytest.skip("needs ray (pip install -e '.[ray]')")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), before) if p)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = before


def _runner(cohort, store, cache, executor=None, **kw):
    return Runner(cohort, store, registry=_registry(), cache=cache, progress=False, echo=kw.pop("echo", lambda *_: None),
                  settings=EvalSettings(n_boot=50), executor=executor, **kw)


def _metrics(store: ResultStore) -> dict:
    return {(r.model, r.seed, r.run_key): {(m.group, m.averaging, m.metric): (m.mean, m.ci_low, m.ci_high)
                                           for m in store.metrics_for(r.id)} for r in store.runs()}


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_ray_grid_gives_the_sequential_metrics(ray_local, cohort, tmp_path):
    grid = (["popular", "logistic"], [0, 1], {"logistic": {"epochs": 2}})
    with ResultStore(tmp_path / "seq.db") as seq, ResultStore(tmp_path / "ray.db") as par:
        sequential = _runner(cohort, seq, tmp_path / "seq-cache").run(*grid)
        parallel = _runner(cohort, par, tmp_path / "ray-cache", RayExecutor()).run(*grid)
        assert [(o.model, o.seed, o.status) for o in parallel] == [(o.model, o.seed, o.status) for o in sequential]
        assert all(o.status == "complete" for o in parallel)
        assert _metrics(par) == _metrics(seq) and len(_metrics(par)) == 4  # same keys, bit-identical numbers
        again = _runner(cohort, par, tmp_path / "ray-cache", RayExecutor()).run(*grid)
        assert [o.status for o in again] == ["skipped"] * 4  # the resume rule of sequential


def test_a_killed_worker_is_retried_and_nothing_is_lost_or_duplicated(ray_local, cohort, tmp_path):
    lines = []
    with ResultStore(tmp_path / "r.db") as store:
        out = _runner(cohort, store, tmp_path / "cache", RayExecutor(), echo=lines.append).run(
            ["popular", "dies_once"], [0, 1])
        assert [o.status for o in out] == ["complete"] * 4
        assert sum(line.startswith("[retry]    dies_once") for line in lines) == 2  # each seed died once
        assert "WorkerCrashedError" in next(line for line in lines if line.startswith("[retry]"))
        runs = store.runs()
        assert sorted((r.model, r.seed, r.status) for r in runs) == [
            ("dies_once", 0, "complete"), ("dies_once", 1, "complete"), ("popular", 0, "complete"),
            ("popular", 1, "complete")]
        per_run = {len(store.metrics_for(r.id)) for r in runs}
        assert len(per_run) == 1 and _count(tmp_path / "r.db", "metrics") == 4 * per_run.pop()
        again = _runner(cohort, store, tmp_path / "cache", RayExecutor()).run(["popular", "dies_once"], [0, 1])
        assert [o.status for o in again] == ["skipped"] * 4 and _count(tmp_path / "r.db", "runs") == 4


def test_sweep_stores_every_trial_and_marks_the_best(ray_local, cohort, cache_root, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("model: logistic\nsearch: grid\nparams:\n  lr: [1.0e-4, 5.0e-2]\n  epochs: [2]\n")
    store = tmp_path / "r.db"
    args = ["run", "--sweep", str(sweep), "--patients", "200", "--cache", str(cache_root), "--store",
            str(store), "--n-boot", "50"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "chosen" in result.output
    with ResultStore(store) as db:
        runs = db.runs(status="complete")
        assert len(runs) == 2 and {r.model for r in runs} == {"logistic"}
        sweep_row = db.sweep(db._read("SELECT sweep_key FROM sweeps")[0][0])
        trials = db.sweep_trials(sweep_row.id)
        assert sweep_row.name == "sweep" and len(trials) == 2
        best = max(trials, key=lambda t: t.val_prauc)
        assert [t.chosen for t in trials] == [t is best for t in trials] and best.val_prauc > 0
        assert '"lr":0.05' in db.get_run(best.run_id).params  # the larger step learns more in 2 epochs
    again = CliRunner().invoke(main, args, catch_exceptions=False)  # resumed: nothing runs, the same choice
    assert again.exit_code == 0 and again.output.count("skipped") == 2
    with ResultStore(store) as db:
        assert len(db.runs()) == 2 and [t.chosen for t in db.sweep_trials(sweep_row.id)] == [t.chosen for t in trials]


# --- without Ray ---------------------------------------------------------------------------------------------------


def _in_process(runner, schedule, retries=1, crash_first=()):
    """Run a schedule in this process (the Ray executor's loop with a synchronous submit); ``crash_first``: models
    whose first attempt ends as a dead worker would."""
    from medrec_bench.runner import JobResult

    order, final = [], {}
    crashed = set()

    def submit(node):
        order.append((node.job.model, node.job.train_only))
        if node.job.model in crash_first and node.job.model not in crashed:
            crashed.add(node.job.model)
            return id(node), JobResult(node.job, "failed", None, error="WorkerCrashedError: killed")
        return id(node), runner.workbench().run_job(node.job)

    handles = {}

    def submit_tracked(node):
        handle, result = submit(node)
        handles[handle] = result
        return handle

    def wait(pending):
        return pending[0], handles.pop(pending[0])

    schedule.execute(submit_tracked, wait, retries, lambda node, result, last: final.__setitem__(id(node), result))
    return order, final


def test_schedule_trains_requirements_first_and_once(cohort, tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        runner = _runner(cohort, store, tmp_path / "cache")
        schedule = Schedule(runner, {})
        for name in ("needs_popular", "needs_popular_too", "popular"):
            schedule.add(runner.prepare(name, 0, {}), None)
        # popular is required but not yet scheduled: a train-only job, which both dependants and popular's run wait for
        assert [(n.job.model, n.job.train_only, n.needs) for n in schedule.nodes] == [
            ("popular", True, []), ("needs_popular", False, [0]), ("needs_popular_too", False, [0]),
            ("popular", False, [0])]
        order, final = _in_process(runner, schedule)
        assert order[0] == ("popular", True) and len(order) == 4
        assert all(r.status == "complete" for r in final.values())
        trained = [folder for r in final.values() for folder in r.trained]
        assert len(trained) == len(set(trained)) == 3  # popular once, each dependant once; popular's run loads it


def test_schedule_retries_once_then_fails_the_dependants(cohort, tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        runner = _runner(cohort, store, tmp_path / "cache")
        schedule = Schedule(runner, {})
        for name in ("needs_exploding", "popular"):
            schedule.add(runner.prepare(name, 0, {}), None)
        order, final = _in_process(runner, schedule, crash_first={"popular"})
        assert order.count(("exploding", True)) == 2 and order.count(("popular", False)) == 2
        assert ("needs_exploding", False) not in order  # never started: what it needs failed for good
        by_model = {r.job.model: r for r in final.values()}
        assert by_model["popular"].status == "complete"  # its worker died once, the retry completed
        assert by_model["needs_exploding"].error == "required model exploding (seed 0) failed"


def test_executor_and_sweep_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        make_executor("sequential", "auto")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: logistic\nparams:\n  lr: [0.01, -1]\n")
    with pytest.raises(SweepError, match=r"bad.yaml: model 'logistic': parameter 'lr' = -1 is out of range"):
        load_sweep(bad, load_registry(plugins=False))
    bad.write_text("model: logistic\nsearch: random\nsamples: 3\nseed: 1\nparams:\n  lr: {low: 1.0e-4, high: 0.1, "
                   "log: true}\n  epochs: {low: 1, high: 4}\n")
    sweep = load_sweep(bad, load_registry(plugins=False), {"logistic": {"batch_size": 16}})
    assert len(sweep.trials) == 3 and sweep.trials == load_sweep(bad, load_registry(plugins=False)).trials  # seeded
    assert all(1e-4 <= t["lr"] <= 0.1 and type(t["epochs"]) is int and 1 <= t["epochs"] <= 4 for t in sweep.trials)
    with pytest.raises(SweepError, match="logistic.lr is both swept and set with --set"):
        load_sweep(bad, load_registry(plugins=False), {"logistic": {"lr": 0.1}})
    result = CliRunner().invoke(main, ["run", "--models", "popular", "--sweep", str(bad)])
    assert result.exit_code == 1 and "give either --models or --sweep" in result.output
