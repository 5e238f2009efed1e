"""Caches are verified, not trusted: a cohort, a trained model, teacher/prefix array shards and saved predictions carry
sha256 checksums; a changed file is rebuilt (cohort, model, arrays) or refused (predictions), never used."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from safetensors.torch import load_file, save_file

from medrec_bench.data import load_cohort
from medrec_bench.data.cache import CHECKSUM_FILE, CacheRebuiltWarning, atomic_folder, checksum_problem
from medrec_bench.llm.features import ArrayStore
from medrec_bench.predictions import load_predictions
from medrec_bench.runner import EvalSettings, Runner, rescore
from medrec_bench.store import ResultStore

PATIENTS = 120


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A built synthetic cohort cache (120 patients) and a second one (seed 1) to swap files from."""
    root = tmp_path_factory.mktemp("pristine")
    cohort = load_cohort("synthetic", patients=PATIENTS, cache=root / "a")
    other = load_cohort("synthetic", patients=PATIENTS, seed=1, cache=root / "b")
    folder = next((root / "a" / "cohorts").iterdir())
    return cohort, folder, next((root / "b" / "cohorts").iterdir()), other


def _edit_json(key_path, change):
    def edit(folder, _other):
        data = json.loads((folder / "cohort.json").read_text())
        target = data
        for key in key_path[:-1]:
            target = target[key]
        change(target, key_path[-1])
        (folder / "cohort.json").write_text(json.dumps(data))
    return edit


def _truncate(name, size):
    def edit(folder, _other):
        with open(folder / name, "r+b") as fh:
            fh.truncate(size)
    return edit


def _zero(folder, _other):
    path = folder / "visits.parquet"
    path.write_bytes(bytes(path.stat().st_size))


def _drop_rows(folder, _other):
    frame = pl.read_parquet(folder / "visits.parquet")
    frame.head(frame.height - 50).write_parquet(folder / "visits.parquet")


def _swap_parquet(folder, other):
    shutil.copy(other / "visits.parquet", folder / "visits.parquet")


def _swap_folder(folder, other):  # another cohort's complete, self-consistent cache under this key
    shutil.rmtree(folder)
    shutil.copytree(other, folder)


CORRUPTIONS = {
    "truncated visits.parquet": _truncate("visits.parquet", 100),
    "zeroed visits.parquet": _zero,
    "50 dropped rows": _drop_rows,
    "another cohort's parquet": _swap_parquet,
    "another cohort's whole folder": _swap_folder,
    "cohort.json key removed": _edit_json(["vocab"], lambda d, k: d.pop(k)),
    "shortened drug vocabulary": _edit_json(["vocab", "drugs", "codes"], lambda d, k: d.__setitem__(k, d[k][:-3])),
    "emptied DDI pairs": _edit_json(["ddi_pairs"], lambda d, k: d.__setitem__(k, [])),
    "edited fingerprint": _edit_json(["fingerprint"], lambda d, k: d.__setitem__(k, "0" * 64)),
    "truncated cohort.json": _truncate("cohort.json", 10),
    "checksum file removed": lambda folder, _other: (folder / CHECKSUM_FILE).unlink(),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_changed_cohort_cache_is_rebuilt_with_one_warning(pristine, tmp_path, corruption):
    cohort, folder, other_folder, _ = pristine
    cache = tmp_path / "cache"
    shutil.copytree(folder.parent.parent, cache)
    CORRUPTIONS[corruption](cache / "cohorts" / folder.name, other_folder)
    with pytest.warns(CacheRebuiltWarning, match="cached cohort at .* rebuilding it") as caught:
        again = load_cohort("synthetic", patients=PATIENTS, cache=cache)
    assert len([w for w in caught if w.category is CacheRebuiltWarning]) == 1
    assert again.fingerprint == cohort.fingerprint and again.visits.equals(cohort.visits)
    assert np.array_equal(again.ddi, cohort.ddi) and again.vocab.drugs.codes == cohort.vocab.drugs.codes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is clean again
        load_cohort("synthetic", patients=PATIENTS, cache=cache)


def test_checksum_problem_names_the_file(tmp_path):
    atomic_folder(tmp_path / "entry", lambda tmp: (tmp / "a.bin").write_bytes(b"abc"))
    assert checksum_problem(tmp_path / "entry") is None
    (tmp_path / "entry" / "a.bin").write_bytes(b"abd")
    assert checksum_problem(tmp_path / "entry") == "a.bin does not match its checksum"
    (tmp_path / "entry" / "b.bin").write_bytes(b"")
    assert checksum_problem(tmp_path / "entry") == "a.bin does not match its checksum"
    (tmp_path / "entry" / "a.bin").unlink()
    assert checksum_problem(tmp_path / "entry") == "a.bin is missing"


def test_a_killed_build_leaves_no_temporary_folder(tmp_path):
    """A build killed with SIGKILL leaves its temporary folder; the next build of the same target removes it, and
    the synthetic raw tables are written inside that folder (nothing under /tmp)."""
    script = (f"import os, signal\nfrom medrec_bench.data.cache import atomic_folder\n"
              f"def write(tmp):\n    (tmp / 'x').write_text('half')\n    os.kill(os.getpid(), signal.SIGKILL)\n"
              f"atomic_folder(__import__('pathlib').Path({str(tmp_path / 'entry')!r}), write)\n")
    res = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert res.returncode == -9
    assert [p.name.split(".")[1] for p in tmp_path.iterdir()] == ["entry"]  # the killed build's ".entry.<pid>.*"
    atomic_folder(tmp_path / "entry", lambda tmp: (tmp / "x").write_text("whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


def test_synthetic_raw_tables_stay_inside_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    load_cohort("synthetic", patients=30, cache=tmp_path / "cache")
    assert list((tmp_path / "tmp").iterdir()) == []
    folder = next((tmp_path / "cache" / "cohorts").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [CHECKSUM_FILE, "cohort.json", "visits.parquet"]


# --- trained models ----------------------------------------------------------------------------------------------


def _truncate_state(folder):
    with open(folder / "state.safetensors", "r+b") as fh:
        fh.truncate(50)


def _zero_weights(folder):  # still a valid safetensors file
    state = load_file(str(folder / "state.safetensors"))
    save_file({k: v * 0 for k, v in state.items()}, str(folder / "state.safetensors"))


def _edit_params(folder):
    data = json.loads((folder / "params.json").read_text())
    data["params"]["lr"] = 0.5
    (folder / "params.json").write_text(json.dumps(data))


@pytest.mark.parametrize("corrupt", [_truncate_state, _zero_weights, _edit_params], ids=lambda f: f.__name__)
def test_a_changed_model_cache_is_retrained_and_gives_the_same_results(pristine, tmp_path, corrupt):
    cohort = pristine[0]
    settings = EvalSettings(n_boot=20)

    def run(store_name):
        with ResultStore(tmp_path / store_name) as store:
            runner = Runner(cohort, store, cache=tmp_path / "cache", settings=settings, progress=False,
                            echo=lambda *_: None)
            out = runner.run(["logistic"], [0], {"logistic": {"epochs": 2}})
            return out[0], {(m.group, m.averaging, m.metric): m.mean for m in store.metrics_for(out[0].run_id)}

    first, metrics = run("a.db")
    folder = next((tmp_path / "cache" / "models").iterdir())
    corrupt(folder)
    with pytest.warns(CacheRebuiltWarning, match="cached trained model logistic .* rebuilding it"):
        again, metrics_again = run("b.db")
    assert again.status == "complete" and metrics_again == metrics
    assert checksum_problem(folder) is None


def test_rebuild_retrains_cached_models(pristine, tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        def runner(**kw):
            return Runner(pristine[0], store, cache=tmp_path / "cache", settings=EvalSettings(n_boot=20),
                          progress=False, echo=lambda *_: None, **kw)

        runner().run(["logistic"], [0], {"logistic": {"epochs": 1}})
        folder = next((tmp_path / "cache" / "models").iterdir())
        before = (folder / "train.json").stat().st_mtime_ns
        rebuilt = runner(rebuild=True)
        rebuilt.trained(rebuilt.registry.get("logistic"), 0, {"logistic": {"epochs": 1}})
        assert (folder / "train.json").stat().st_mtime_ns != before


# --- teacher features / prefix states (ArrayStore) ---------------------------------------------------------------


def _corrupt_shard(folder, how):
    shard = folder / "shard-0000.npy"
    if how == "truncated":
        with open(shard, "r+b") as fh:
            fh.truncate(shard.stat().st_size - 8)
    elif how == "zeroed values":
        values = np.load(shard)
        np.save(shard, np.zeros_like(values))
    else:
        shard.unlink()


@pytest.mark.parametrize("how", ["truncated", "zeroed values", "deleted"])
def test_a_changed_array_shard_is_dropped_and_recomputed(tmp_path, how):
    store = ArrayStore(tmp_path / "arrays", "fp", 4)
    store.write(["a", "b"], [np.ones((2, 4)), np.full((1, 4), 2.0)])
    store.write(["c"], [np.full((3, 4), 3.0)])
    _corrupt_shard(tmp_path / "arrays", how)
    with pytest.warns(CacheRebuiltWarning, match="shard-0000.npy missing or not what was written"):
        reopened = ArrayStore(tmp_path / "arrays", "fp", 4)
    assert "a" not in reopened and "b" not in reopened and "c" in reopened
    assert np.array_equal(reopened.read("c"), np.full((3, 4), 3.0, dtype=np.float16))
    reopened.write(["a"], [np.ones((2, 4))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(ArrayStore(tmp_path / "arrays", "fp", 4).read("a"), np.ones((2, 4), np.float16))


# --- saved predictions (rescore) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["truncated", "rewritten", "sidecar without checksum", "sidecar removed"])
def test_rescore_refuses_changed_predictions_in_one_line(pristine, tmp_path, how):
    with ResultStore(tmp_path / "r.db") as store:
        out = Runner(pristine[0], store, cache=tmp_path / "cache", settings=EvalSettings(n_boot=20), progress=False,
                     echo=lambda *_: None).run(["popular"], [0])
        path = Path(store.get_run(out[0].run_id).predictions_path)
        assert rescore(store, out[0].run_id, n_boot=10)
        if how == "truncated":
            with open(path, "r+b") as fh:
                fh.truncate(path.stat().st_size // 2)
        elif how == "rewritten":  # valid parquet, other probabilities
            frame = pl.read_parquet(path)
            frame.with_columns(pl.Series("prob", list(np.stack(frame["prob"].to_numpy()) * 0))).write_parquet(path)
        elif how == "sidecar without checksum":
            sidecar = json.loads(path.with_suffix(".json").read_text())
            path.with_suffix(".json").write_text(json.dumps({"drugs": sidecar["drugs"]}))
        else:
            path.with_suffix(".json").unlink()
        with pytest.raises(ValueError, match=f"predictions {path} .*re-run the model with --force") as err:
            rescore(store, out[0].run_id, n_boot=10)
        assert "\n" not in str(err.value)
        with pytest.raises(ValueError):
            load_predictions(path)
