"""Data parallelism through accelerate: the teacher's accelerate path on CPU (``Accelerator(cpu=True)``, tiny-llama)
gives the plain path's result, in one process and in two (``torchrun``, gloo); sharding and gathering rows over
processes put every row back in its place; a data-parallel launch refuses what it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from leader.teacher import LeaderTeacher
from medrec_bench import distributed
from medrec_bench.cli import main
from medrec_bench.models import Context
from medrec_bench.tasks import make_splits


@pytest.fixture
def cpu_accelerator():
    accelerate = pytest.importorskip("accelerate")
    yield accelerate.Accelerator(cpu=True)
    accelerate.state.AcceleratorState._reset_state(reset_partial_state=True)


def test_the_accelerate_path_gives_the_plain_result_on_cpu(demo_cohort, tmp_path, cpu_accelerator):
    split = make_splits(demo_cohort, "last_visit", seed=0)
    train, val, test = list(split.train)[:24], list(split.val)[:8], list(split.test)[:8]
    params = dict(backbone="tiny-llama", epochs=2, batch_size=4, effective_batch_size=8, eval_batch_size=16,
                  max_length=128, patience=0)

    def fit_and_infer(work):
        ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path / work)
        model = LeaderTeacher(**params).fit(train, val, ctx)
        return model, model.predict_proba(test), model.features(test)

    plain, plain_probs, plain_features = fit_and_infer("plain")
    with distributed.use(cpu_accelerator):
        accelerated, probs, features = fit_and_infer("accelerated")
        assert accelerated._features.folder is not None and len(accelerated._features) == len(test)  # main writes
    assert [h["loss"] for h in accelerated.history] == [h["loss"] for h in plain.history]
    np.testing.assert_array_equal(probs, plain_probs)
    np.testing.assert_array_equal(features, plain_features)
    for name, tensor in plain.state_tensors().items():
        assert torch.equal(accelerated.state_tensors()[name], tensor), name


_TWO_PROCESSES = """
import sys
import numpy as np
import torch
from leader.teacher import LeaderTeacher
from medrec_bench import distributed
from medrec_bench.data import load_cohort
from medrec_bench.models import Context
from medrec_bench.tasks import make_splits

torch.set_num_threads(1)
demo, cache, out = sys.argv[1:4]
cohort = load_cohort("mimic3", demo, cache=cache)
split = make_splits(cohort, "last_visit", seed=0)
ctx = Context.from_cohort(cohort, seed=0, work_dir=out + "/work")
model = LeaderTeacher(**PARAMS).fit(list(split.train)[:24], list(split.val)[:8], ctx)
probs, features = model.predict_proba(list(split.test)[:9]), model.features(list(split.test)[:9])
if distributed.is_main():
    np.save(out + "/probs.npy", probs)
    np.save(out + "/features.npy", features)
"""
_PARAMS = dict(backbone="tiny-llama", epochs=2, batch_size=4, effective_batch_size=8, eval_batch_size=4,
               max_length=128, patience=0, lora_dropout=0.0)


@pytest.mark.slow
def test_two_cpu_processes_give_the_one_process_result(demo_cohort, demo_dir, cache_root, tmp_path):
    """A real launch: two processes on CPU (gloo), each half of every batch, predictions and features gathered."""
    pytest.importorskip("accelerate")
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(_TWO_PROCESSES).replace("**PARAMS", f"**{_PARAMS!r}"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                           str(demo_dir), str(cache_root), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    split = make_splits(demo_cohort, "last_visit", seed=0)
    ctx = Context.from_cohort(demo_cohort, seed=0, work_dir=tmp_path / "plain")
    plain = LeaderTeacher(**_PARAMS).fit(list(split.train)[:24], list(split.val)[:8], ctx)
    test = list(split.test)[:9]  # 9 samples: shares of 5 and 4, gathered back in order
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), plain.predict_proba(test), atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "features.npy").astype(np.float32),
                               plain.features(test).astype(np.float32), atol=2e-3)  # float16 rounding
    assert len(list((tmp_path / "work" / "leader_t_features").iterdir())) == 1  # one writer


class _FakeProcesses:
    """``num_processes`` accelerators in one process: ``gather`` concatenates what each rank passed."""

    device = "cpu"

    def __init__(self, world: int, rank: int, sent: dict) -> None:
        self.num_processes, self.process_index, self.sent = world, rank, sent

    def gather(self, tensor):
        self.sent[self.process_index] = tensor  # ranks not yet seen send zeros: only the last rank's result is full
        return torch.cat([self.sent.get(r, torch.zeros_like(tensor)) for r in range(self.num_processes)])


@pytest.mark.parametrize("n", [7, 9, 2])
def test_sharded_rows_are_gathered_back_in_sample_order(n):
    world, rows = 3, np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    sent: dict = {}
    shares = []
    for rank in range(world):  # each rank sends its padded share first, then the last one gathers them all
        with distributed.use(_FakeProcesses(world, rank, sent)):
            mine = distributed.shard(range(n))
            shares.append(mine)
            gathered = distributed.gather_rows(rows[mine], n)
    assert sorted(i for share in shares for i in share) == list(range(n))
    np.testing.assert_array_equal(gathered, rows)
    with distributed.use(_FakeProcesses(world, 0, {})), pytest.raises(ValueError, match="batch_size 4 does not split"):
        distributed.check_batch_size(4)


def test_a_launch_runs_only_data_parallel_models(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(main, ["run", "--models", "popular", "--store", str(tmp_path / "r.db")])
    assert result.exit_code == 1 and "only data-parallel models run (tag data_parallel); popular is not" in result.output
    result = CliRunner().invoke(main, ["run", "--models", "leader_t", "--executor", "ray", "--store",
                                       str(tmp_path / "r.db")])
    assert result.exit_code == 1 and "no --sweep and no --executor ray" in result.output
