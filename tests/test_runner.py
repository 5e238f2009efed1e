"""The runner: a grid fills the store, re-running resumes, failures are recorded, models are cached and re-scored."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from baselines.bag_models import Logistic
from baselines.popular import Popular
from medrec_bench.predictions import load_predictions
from medrec_bench.registry import Registry, load_registry, parse_entry
from medrec_bench.runner import EvalSettings, Runner, code_hash, code_modules, rescore, summary_line
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


class CountingPopular(Popular):
    """Counts its trainings; reports diagnostics from training and from the latest prediction."""

    fits = 0

    def fit(self, train, val, ctx):
        CountingPopular.fits += 1
        self.predict_calls = 0
        return super().fit(train, val, ctx)

    def predict_proba(self, samples):
        self.predict_calls = getattr(self, "predict_calls", 0) + 1
        return super().predict_proba(samples)

    def diagnostics(self):
        return {"fit_number": np.int64(CountingPopular.fits), "predict_calls": self.predict_calls, "kind": "count"}


class BadDiagnostics(Popular):
    def diagnostics(self):
        return {"per_drug": [0.1, 0.2]}


def _registry(*extra):
    base = load_registry(plugins=False)
    entries = list(base) + [
        parse_entry("exploding", {"class": "tests.test_runner:Exploding"}, "test"),
        parse_entry("needs_popular", {"class": "tests.test_runner:NeedsPopular", "requires": ["popular"]}, "test"),
        parse_entry("counting", {"class": "tests.test_runner:CountingPopular"}, "test"),
        parse_entry("bad_diagnostics", {"class": "tests.test_runner:BadDiagnostics"}, "test"),
        *extra,
    ]
    return Registry(entries)


@pytest.fixture
def runner_factory(demo_cohort, tmp_path):
    def make(store, registry=None, **kw):
        return Runner(demo_cohort, store, registry=registry or _registry(), cache=tmp_path / "cache",
                      progress=False, echo=lambda *_: None, settings=kw.pop("settings", EvalSettings(n_boot=50)),
                      **kw)
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


def _write_package(root: Path, name: str, files: dict[str, str]) -> None:
    (root / name).mkdir()
    for file, text in {"__init__.py": "", **files}.items():
        (root / name / file).write_text(textwrap.dedent(text))


def test_code_hash_covers_the_class_and_its_project_bases(tmp_path, monkeypatch):
    pkg = f"edited_{tmp_path.name}"
    _write_package(tmp_path, pkg, {
        "base.py": "from baselines.popular import Popular\n\nclass Base(Popular):\n    pass\n",
        "model.py": f"from {pkg}.base import Base\n\nclass Model(Base):\n    pass\n",
        "helper.py": "X = 1\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    from importlib import import_module

    model = import_module(f"{pkg}.model").Model
    assert code_modules(model) == [f"{pkg}.model", f"{pkg}.base", "baselines.popular", "medrec_bench.models"]
    assert code_modules(Logistic) == ["baselines.bag_models", "medrec_bench.models"]
    before = code_hash(model)
    (tmp_path / pkg / "helper.py").write_text("X = 2\n")
    assert code_hash(model) == before  # not a base class: not covered (documented; --force)
    (tmp_path / pkg / "base.py").write_text((tmp_path / pkg / "base.py").read_text() + "# edited\n")
    assert code_hash(model) != before
    assert len(before) == 16 and code_hash(Logistic) != code_hash(Popular)


def test_editing_a_model_retrains_and_reruns_it(runner_factory, tmp_path, monkeypatch):
    pkg = f"edited_{tmp_path.name}"
    _write_package(tmp_path, pkg, {"model.py": "from baselines.popular import Popular\n\n"
                                               "class Edited(Popular):\n    pass\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = _registry(parse_entry("edited", {"class": f"{pkg}.model:Edited"}, "test"))
    models = tmp_path / "cache" / "models"
    with ResultStore(tmp_path / "r.db") as store:
        assert runner_factory(store, registry).run(["edited"], [0])[0].status == "complete"
        assert runner_factory(store, registry).run(["edited"], [0])[0].status == "skipped"
        (tmp_path / pkg / "model.py").write_text((tmp_path / pkg / "model.py").read_text() + "# a fix\n")
        again = runner_factory(store, registry).run(["edited"], [0])
        assert again[0].status == "complete"  # neither the stored run nor the cached model was reused
        assert len(list(models.iterdir())) == 2
        runs = store.runs(status="complete")
        assert len(runs) == 2 and runs[0].code_hash != runs[1].code_hash


def test_a_required_models_key_is_part_of_the_key(runner_factory, tmp_path):
    registry = _registry(parse_entry("needs_logistic", {"class": "tests.test_runner:NeedsPopular",
                                                        "requires": ["logistic"]}, "test"))
    with ResultStore(tmp_path / "r.db") as store:
        runner = runner_factory(store, registry)
        entry = registry.get("needs_logistic")
        plain = runner.model_key(entry, 0, {})
        assert runner.model_key(entry, 0, {"popular": {}}) == plain
        # what the required model is trained with reaches the key of the model that needs it
        assert runner.model_key(entry, 0, {"logistic": {"epochs": 1}}) != plain


def test_force_retrains_and_replaces_the_run(runner_factory, tmp_path):
    CountingPopular.fits = 0
    with ResultStore(tmp_path / "r.db") as store:
        first = runner_factory(store).run(["counting"], [0])[0]
        assert runner_factory(store).run(["counting"], [0])[0].status == "skipped" and CountingPopular.fits == 1
        forced = runner_factory(store, force=True).run(["counting", "counting"], [0])
        assert [o.status for o in forced] == ["complete", "complete"]
        assert CountingPopular.fits == 2  # retrained once per runner, then taken from the fresh cache
        runs = store.runs()
        assert len(runs) == 1 and runs[0].run_key == store.get_run(first.run_id).run_key
        assert json.loads(runs[0].diagnostics)["fit_number"] == 2


def test_diagnostics_are_stored(runner_factory, tmp_path):
    CountingPopular.fits = 0
    with ResultStore(tmp_path / "r.db") as store:
        tuned = EvalSettings(threshold="tuned", n_boot=20)
        out = runner_factory(store, settings=tuned).run(["counting", "logistic", "bad_diagnostics"], [0],
                                                        {"logistic": {"epochs": 3, "patience": 0}})
        counting, logistic, bad = (store.get_run(o.run_id) for o in out)
        # read after the test prediction, before the validation one that tunes the threshold
        assert json.loads(counting.diagnostics) == {"fit_number": 1, "predict_calls": 1, "kind": "count"}
        assert summary_line(out[0]).endswith("; fit_number 1, predict_calls 1, kind count")  # the run log says it
        values = json.loads(logistic.diagnostics)
        assert values["epochs_run"] == 3 and 1 <= values["best_epoch"] <= 3
        assert bad.status == "failed" and bad.error.startswith("TypeError: diagnostics 'per_drug'")
        # a model loaded from the cache keeps its training-time diagnostics
        cached = runner_factory(store).run(["logistic"], [0], {"logistic": {"epochs": 3, "patience": 0}})[0]
        assert json.loads(store.get_run(cached.run_id).diagnostics) == values


def test_torch_fit_records_epochs_run_and_best_epoch(runner_factory, tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        runner = runner_factory(store)
        split = runner.splits(0)
        model = Logistic(epochs=4, patience=0).fit(list(split.train), list(split.val), runner.context(0))
    praucs = [h["val_prauc"] for h in model.history]
    assert model.epochs_run == 4 == len(praucs)
    assert model.best_epoch == 1 + int(np.argmax(praucs))
    assert model.diagnostics() == {"epochs_run": 4, "best_epoch": model.best_epoch}
    assert Logistic().diagnostics() == {}


class RacedPopular(Popular):
    """While this instance trains, another runner on the same store completes the same run (the race of two
    identical `run` commands)."""

    racing = False
    other_runner = None  # set by the test
    entry_name = "raced"

    def fit(self, train, val, ctx):
        if not RacedPopular.racing:
            RacedPopular.racing = True
            try:
                assert RacedPopular.other_runner.run_one(self.entry_name, 0, {}).status == "complete"
            finally:
                RacedPopular.racing = False
        return super().fit(train, val, ctx)


class FailsAfterTheRace(RacedPopular):
    """Loses the race and then fails (as the fixed temporary file of old did)."""

    entry_name = "fails_after_the_race"

    def predict_proba(self, samples):
        if not RacedPopular.racing:
            raise FileNotFoundError("[Errno 2] No such file or directory: 'x.tmp' -> 'x.parquet'")
        return super().predict_proba(samples)


@pytest.mark.parametrize("model", ["raced", "fails_after_the_race"])
def test_a_run_another_process_completed_first_counts_as_skipped(runner_factory, tmp_path, model):
    registry = _registry(parse_entry("raced", {"class": "tests.test_runner:RacedPopular"}, "test"),
                         parse_entry("fails_after_the_race", {"class": "tests.test_runner:FailsAfterTheRace"}, "test"))
    with ResultStore(tmp_path / "r.db") as store, ResultStore(tmp_path / "r.db") as other_connection:
        RacedPopular.other_runner = runner_factory(other_connection, registry=registry)
        out = runner_factory(store, registry=registry).run_one(model, 0, {})
        assert out.status == "skipped"
        assert [r.status for r in store.runs()] == ["complete"]


def test_runs_record_start_and_end_and_stores_keep_their_own_prediction_files(runner_factory, tmp_path):
    paths = []
    for name in ("a.db", "b.db"):
        with ResultStore(tmp_path / name) as store:
            out = runner_factory(store).run(["logistic"], [0], {"logistic": {"epochs": 2}})
            run = store.get_run(out[0].run_id)
            assert run.started_at < run.ended_at
            paths.append(Path(run.predictions_path))
    assert paths[0] != paths[1] and paths[0].parent.name == "a" and paths[1].parent.name == "b"
    with ResultStore(tmp_path / "a.db") as store:  # the second store did not overwrite the first store's file
        assert rescore(store, 1, n_boot=10)
