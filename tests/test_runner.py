"""The runner: a grid fills the store, re-running resumes, failures are recorded, models are cached and re-scored."""

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from baselines.popular import Popular
from medrec_bench.registry import Registry, load_registry, parse_entry
from medrec_bench.runner import EvalSettings, Runner, load_predictions, rescore
from medrec_bench.store import ResultStore


class Exploding(Popular):
    """A model whose training fails."""

    def fit(self, train, val, ctx):
        raise RuntimeError("boom: the model exploded\nsecond line with details")


class NeedsPopular(Popular):
    """Uses the artifacts of a required model (as the LEADER student uses the teacher's)."""

    seen: list = []

    def fit(self, train, val, ctx):
        teacher = ctx.artifacts["popular"]["model"]
        NeedsPopular.seen.append(ctx.artifacts["popular"]["dir"])
        self.frequencies = teacher.frequencies * 0.5
        return self


def _registry():
    base = load_registry(plugins=False)
    entries = list(base) + [
        parse_entry("exploding", {"class": "tests.test_runner:Exploding"}, "test"),
        parse_entry("needs_popular", {"class": "tests.test_runner:NeedsPopular", "requires": ["popular"]}, "test"),
    ]
    return Registry(entries)


@pytest.fixture
def runner_factory(demo_cohort, tmp_path):
    def make(store, **kw):
        return Runner(demo_cohort, store, registry=_registry(), cache=tmp_path / "cache", progress=False,
                      echo=lambda *_: None, settings=kw.pop("settings", EvalSettings(n_boot=50)), **kw)
    return make


def test_grid_fills_store_and_resumes(runner_factory, tmp_path, demo_cohort):
    with ResultStore(tmp_path / "r.db") as store:
        runner = runner_factory(store)
        out = runner.run(["popular", "logistic", "exploding"], [0, 1], {"logistic": {"epochs": 2}})
        assert [o.status for o in out] == ["complete"] * 4 + ["failed"] * 2
        failed = store.runs(status="failed")
        assert len(failed) == 2 and failed[0].error == "RuntimeError: boom: the model exploded"
        complete = store.runs(status="complete")
        assert len(complete) == 4
        metrics = store.metrics_for(complete[0].id)
        names = {(m.group, m.averaging, m.metric) for m in metrics}
        assert ("overall", "sample", "jaccard") in names and ("overall", "patient", "prauc") in names
        run = next(r for r in complete if r.model == "logistic")
        assert run.train_seconds > 0 and run.predict_ms_per_sample > 0 and run.n_parameters > 0
        assert run.threshold == 0.5 and '"torch"' in run.versions

        again = runner_factory(store).run(["popular", "logistic", "exploding"], [0, 1], {"logistic": {"epochs": 2}})
        assert [o.status for o in again] == ["skipped"] * 4 + ["failed"] * 2
        assert len(store.runs(status="complete")) == 4 and len(store.runs()) == 6

        other = runner_factory(store).run(["logistic"], [0], {"logistic": {"epochs": 1}})
        assert other[0].status == "complete"  # an override changes the config hash
        assert len(store.runs(model="logistic")) == 3


def test_predictions_hold_no_raw_ids_and_rescore(runner_factory, tmp_path, demo_cohort):
    with ResultStore(tmp_path / "r.db") as store:
        out = runner_factory(store).run(["popular"], [0])
        run = store.get_run(out[0].run_id)
        frame = pl.read_parquet(run.predictions_path)
        raw_ids = {p.patient_id for p in demo_cohort.patients}
        assert not raw_ids & set(frame["patient_key"].to_list())
        assert "patient_id" not in frame.columns
        y_true, y_prob, keys, n_visits, drugs = load_predictions(Path(run.predictions_path))
        assert drugs == demo_cohort.vocab.drugs.codes and y_prob.shape == y_true.shape
        stored = {(m.group, m.averaging, m.metric): m.mean for m in store.metrics_for(run.id)}
        same = rescore(store, run.id, n_boot=50)
        for r in same:
            assert r.mean == pytest.approx(stored[(r.group, r.averaging, r.metric)], abs=1e-12)
        lower = {(r.group, r.averaging, r.metric): r.mean for r in rescore(store, run.id, threshold=0.2, n_boot=50)}
        assert lower[("overall", "sample", "n_drugs")] > stored[("overall", "sample", "n_drugs")]


def test_trained_models_are_cached(runner_factory, tmp_path, monkeypatch):
    with ResultStore(tmp_path / "r.db") as store:
        runner_factory(store).run(["logistic"], [0], {"logistic": {"epochs": 2}})

        def no_training(*a, **k):
            raise AssertionError("the cached model should have been loaded")

        from baselines.bag_models import Logistic

        monkeypatch.setattr(Logistic, "fit", no_training)
        out = runner_factory(store, settings=EvalSettings(threshold="tuned", n_boot=20)).run(
            ["logistic"], [0], {"logistic": {"epochs": 2}})
        assert out[0].status == "complete" and len(store.runs(status="complete")) == 2


def test_required_models_provide_artifacts(runner_factory, tmp_path):
    NeedsPopular.seen.clear()
    with ResultStore(tmp_path / "r.db") as store:
        out = runner_factory(store).run(["needs_popular"], [0])
        assert out[0].status == "complete"
        assert NeedsPopular.seen and NeedsPopular.seen[0].exists()


def test_tuned_threshold_is_chosen_on_validation(runner_factory, tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        out = runner_factory(store, settings=EvalSettings(threshold="tuned", n_boot=20)).run(["popular"], [0])
        threshold = store.get_run(out[0].run_id).threshold
        assert 0.05 <= threshold <= 0.95


def test_unknown_model_fails_before_training(runner_factory, tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        with pytest.raises(ValueError, match="unknown model 'nope'"):
            runner_factory(store).run(["popular", "nope"], [0])
        assert store.runs() == []


def test_two_runner_processes_share_one_store(demo_dir, tmp_path):
    store = tmp_path / "shared.db"
    base = [sys.executable, "-m", "medrec_bench.cli", "run", "--models", "popular,last_visit_repeat", "--data",
            "mimic3", "--path", str(demo_dir), "--cache", str(tmp_path / "cache"), "--store", str(store),
            "--n-boot", "50"]
    procs = [subprocess.Popen([*base, "--seeds", seeds], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for seeds in ("0,1,2", "3,4,5")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    with ResultStore(store) as db:
        runs = db.runs(status="complete")
        assert sorted((r.model, r.seed) for r in runs) == sorted(
            (m, s) for m in ("popular", "last_visit_repeat") for s in range(6))
        for r in runs:
            assert len(db.metrics_for(r.id)) > 0
