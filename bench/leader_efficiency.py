"""Benchmark: LEADER's student against its teacher in one run, on the same test patients: inference patients/s, peak
RSS, parameter counts, test PRAUC, training seconds per epoch, and the student/teacher ratios.

Usage: ``python bench/leader_efficiency.py [--teacher-backbone smollm2-135m] [--teacher-dir DIR] [--patients 2000]
[--test 0] [--teacher-epochs 1] [--teacher-max-steps 0] [--max-length 2048] [--eval-batch-size 8]
[--student-epochs 0] [--threads 1] [--work-dir DIR]``

Data: the synthetic cohort of ``--patients`` patients, protocol ``last_visit``, split seed 0; ``--test`` keeps the
first N test patients (0 = all). The teacher (``leader_t``) is trained here with ``--teacher-backbone`` (e.g.
``tiny-llama`` to check the script in seconds) or loaded from ``--teacher-dir`` (a saved ``leader_t`` folder, e.g. a
runner cache folder ``<cache>/models/<key>``, whose ``train.json`` then gives its training seconds per epoch). Its
features of the training samples are computed once (timed: the feature pass) and cached under ``--work-dir``; the
student (``leader_s``, class defaults) is then trained with the cached features, so its seconds per epoch are those of
the deployed training recipe. Training seconds per epoch = fit seconds / epochs run.

Inference is timed in a fresh child process per model (without a work folder, so the teacher computes the test
prompts' frozen-prefix states as it would for new patients): it imports torch and transformers, loads the cohort, resets
its peak RSS (``/proc/self/clear_refs``), loads the saved model, predicts two patients to warm up, then times
``predict_proba`` on the test patients: patients/s; peak RSS of the process (``VmHWM``) and its rise over the RSS
before the model was loaded ("model MiB": weights, backbone included, and inference activations).
Parameters: all of the model's (the teacher's frozen backbone included) and the trainable ones. PRAUC: the mean
per-patient average precision over the test patients (overall group, sample averaging). The issue's target: the
student at >= 1000x the teacher's CPU throughput, with the PRAUC gap beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

try:
    import leader  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from leader.student import TEACHER, LeaderStudent  # noqa: E402
from leader.teacher import LeaderTeacher  # noqa: E402
from medrec_bench.data import load_cohort  # noqa: E402
from medrec_bench.metrics import multilabel_scores  # noqa: E402
from medrec_bench.models import Context  # noqa: E402
from medrec_bench.tasks import make_splits  # noqa: E402
from medrec_bench.tasks.batching import targets_matrix  # noqa: E402

MODELS = {"leader_t": LeaderTeacher, "leader_s": LeaderStudent}


def _status_mib(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` in MiB (None where there is no such file)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0); False where that is refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _data(args: argparse.Namespace):
    cohort = load_cohort("synthetic", patients=args.patients)
    splits = make_splits(cohort, "last_visit", seed=0)
    test = list(splits.test)[:args.test] if args.test else list(splits.test)
    return cohort, list(splits.train), list(splits.val), test


def measure(args: argparse.Namespace) -> None:
    """Child process: load the cohort, reset the peak RSS, load one saved model, time predict_proba on the test
    patients, print one JSON line (RSS before the model and peak RSS since, MiB); the probabilities go to
    ``<folder>/test_probs.npy``."""
    import transformers  # noqa: F401  (imported before the reset: every model process pays for it)

    cohort, _, _, test = _data(args)
    # no work folder: the teacher computes the test prompts' frozen-prefix states here, as for new patients, even
    # when --work-dir is a runner cache that already holds them
    ctx = Context.from_cohort(cohort, device=args.device, work_dir=None)
    before = _status_mib("VmRSS") if _reset_peak_rss() else None
    model = MODELS[args.measure].load(args.folder, ctx)
    model.predict_proba(test[:2])
    start = time.perf_counter()
    probs = model.predict_proba(test)
    seconds = time.perf_counter() - start
    np.save(Path(args.folder) / "test_probs.npy", probs)
    peak = _status_mib("VmHWM") if before is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "patients_per_s": len(test) / seconds, "rss_before_mib": before,
                      "peak_rss_mib": peak}))


def _child(kind: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--measure", kind, "--folder", str(folder), "--patients", str(args.patients),
           "--test", str(args.test), "--threads", str(args.threads), "--device", args.device,
           "--work-dir", str(args.work_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _prauc(test: list, probs: np.ndarray, n_drugs: int, threshold: float) -> float:
    y_true = targets_matrix(test, n_drugs).numpy()
    return float(multilabel_scores(y_true, probs, threshold)["prauc"].mean())


def _teacher(args: argparse.Namespace, train: list, val: list, ctx: Context) -> tuple[LeaderTeacher, float | None]:
    """The fitted teacher and its training seconds per epoch (None when loaded without a ``train.json``)."""
    if args.teacher_dir:
        folder = Path(args.teacher_dir)
        teacher = LeaderTeacher.load(folder, ctx)
        info = folder / "train.json"
        if not info.is_file():
            return teacher, None
        data = json.loads(info.read_text())
        epochs = data.get("diagnostics", {}).get("epochs_run")
        return teacher, float(data["train_seconds"]) / epochs if epochs else None
    teacher = LeaderTeacher(backbone=args.teacher_backbone, dtype=args.dtype, epochs=args.teacher_epochs,
                            max_steps=args.teacher_max_steps, max_length=args.max_length,
                            eval_batch_size=args.eval_batch_size)
    start = time.perf_counter()
    teacher.fit(train, val, ctx)
    return teacher, (time.perf_counter() - start) / max(teacher.epochs_run or 1, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-backbone", default="smollm2-135m")
    parser.add_argument("--teacher-dir", default=None, help="a saved leader_t folder (skips teacher training)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--patients", type=int, default=2000, help="synthetic cohort size")
    parser.add_argument("--test", type=int, default=0, help="test patients kept (0 = all)")
    parser.add_argument("--teacher-epochs", type=int, default=1)
    parser.add_argument("--teacher-max-steps", type=int, default=0, help="teacher optimizer steps cap (0 = none)")
    parser.add_argument("--max-length", type=int, default=2048, help="teacher prompt tokens")
    parser.add_argument("--eval-batch-size", type=int, default=8, help="teacher inference batch")
    parser.add_argument("--student-epochs", type=int, default=0, help="0: the class default")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", default=None, help="feature cache and saved models (default: a temp folder)")
    parser.add_argument("--measure", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure:
        measure(args)
        return
    args.work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="leader-efficiency-"))

    cohort, train, val, test = _data(args)
    ctx = Context.from_cohort(cohort, device=args.device, seed=0, work_dir=args.work_dir, progress=True)
    teacher, teacher_epoch_s = _teacher(args, train, val, ctx)
    start = time.perf_counter()
    teacher.features(train)
    feature_s = time.perf_counter() - start
    ctx.artifacts[TEACHER] = {"model": teacher, "dir": args.teacher_dir}
    student = LeaderStudent(**({"epochs": args.student_epochs} if args.student_epochs else {}))
    start = time.perf_counter()
    student.fit(train, val, ctx)
    student_epoch_s = (time.perf_counter() - start) / max(student.epochs_run or 1, 1)
    folders = {name: args.work_dir / name for name in MODELS}
    teacher.save(folders["leader_t"])
    student.save(folders["leader_s"])

    runs = {name: _child(name, folders[name], args) for name in MODELS}
    models = {"leader_t": teacher, "leader_s": student}
    rows = []
    for name, model in models.items():
        probs = np.load(folders[name] / "test_probs.npy")
        assert model.module is not None
        rows.append({"model": name, "parameters": sum(p.numel() for p in model.module.parameters()),
                     "trainable": model.n_parameters(), "patients/s": runs[name]["patients_per_s"],
                     "peak RSS MiB": runs[name]["peak_rss_mib"],
                     "model MiB": (runs[name]["peak_rss_mib"] - runs[name]["rss_before_mib"]
                                   if runs[name]["rss_before_mib"] is not None else float("nan")),
                     "test PRAUC": _prauc(test, probs, ctx.n_drugs, model.default_threshold),
                     "train s/epoch": teacher_epoch_s if name == "leader_t" else student_epoch_s})
    t, s = rows
    print(f"leader_t {args.teacher_dir or args.teacher_backbone} ({args.dtype}, {args.device}, "
          f"{torch.get_num_threads()} threads) vs leader_s: synthetic-{args.patients}, {len(train)} train / "
          f"{len(test)} test patients; teacher feature pass {feature_s:.1f} s (about 0 when --work-dir already "
          f"caches them); student {student.epochs_run} epochs")
    print(tabulate(rows, headers="keys", floatfmt=".4g", intfmt=","))
    train_note = (f"{t['train s/epoch'] / s['train s/epoch']:.1f}x faster" if t["train s/epoch"]
                  else "not known for the teacher (loaded without a train.json)")
    print(f"student / teacher: throughput {s['patients/s'] / t['patients/s']:.0f}x (target >= 1000x), parameters "
          f"{t['parameters'] / s['parameters']:.0f}x fewer, PRAUC gap {s['test PRAUC'] - t['test PRAUC']:+.4f}, "
          f"train s/epoch {train_note}")


if __name__ == "__main__":
    main()
