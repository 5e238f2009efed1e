"""End-to-end LEADER teacher run (not in CI): train ``leader_t`` on the default synthetic cohort (protocol
``last_visit``) and report test metrics, wall time and peak RSS.

Usage: ``python bench/leader_teacher_e2e.py [--backbone smollm2-135m] [--dtype float32] [--patients N]
[--val N] [--test N] [--epochs 1] [--max-steps 0] [--batch-size 4] [--effective-batch-size 32] [--lr 2e-4]
[--max-length 2048] [--threads N] [--device cpu] [--n-boot 200]``

``--patients`` keeps the first N training patients (0 = all), ``--val`` / ``--test`` the first N validation / test
patients (0 = all). Metrics: :func:`medrec_bench.evaluate.evaluate` (overall group, sample averaging, bootstrap 95%
interval over patients) at the teacher's default threshold 0.5.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from tabulate import tabulate

try:
    import leader  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from leader.teacher import LeaderTeacher  # noqa: E402
from medrec_bench.data import load_cohort  # noqa: E402
from medrec_bench.evaluate import evaluate  # noqa: E402
from medrec_bench.models import Context  # noqa: E402
from medrec_bench.tasks import make_splits  # noqa: E402
from medrec_bench.tasks.batching import targets_matrix  # noqa: E402


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--patients", type=int, default=0, help="training patients kept (0 = all)")
    parser.add_argument("--val", type=int, default=0, help="validation patients kept (0 = all)")
    parser.add_argument("--test", type=int, default=0, help="test patients kept (0 = all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0, help="optimizer steps cap (0 = none)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--effective-batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--work-dir", default=None, help="folder for the feature cache (default: none)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    cohort = load_cohort("synthetic")
    splits = make_splits(cohort, "last_visit", seed=0)
    train, val, test = (list(part)[:n] if n else list(part)
                        for part, n in ((splits.train, args.patients), (splits.val, args.val),
                                        (splits.test, args.test)))
    ctx = Context.from_cohort(cohort, device=args.device, seed=0, progress=True,
                              work_dir=Path(args.work_dir) if args.work_dir else None)
    model = LeaderTeacher(backbone=args.backbone, dtype=args.dtype, epochs=args.epochs, max_steps=args.max_steps,
                          batch_size=args.batch_size, effective_batch_size=args.effective_batch_size,
                          eval_batch_size=args.eval_batch_size, lr=args.lr, max_length=args.max_length)
    t0 = time.perf_counter()
    model.fit(train, val, ctx)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = model.predict_proba(test)
    predict_s = time.perf_counter() - t0
    y_true = targets_matrix(test, ctx.n_drugs).numpy().astype(bool)
    results = evaluate(y_true, probs, [s.patient_id for s in test], [s.n_visits for s in test], cohort.ddi,
                       threshold=model.default_threshold, n_boot=args.n_boot, seed=0)
    rows = [{"metric": r.metric, "mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high}
            for r in results if r.group == "overall" and r.averaging == "sample"]
    total_s = time.perf_counter() - start
    print(f"leader_t backbone {args.backbone} ({args.dtype}, {args.device}, {torch.get_num_threads()} threads): "
          f"{len(train)} train / {len(val)} val / {len(test)} test patients, {model._steps_done} optimizer steps "
          f"(effective batch {model.accumulation_steps * model.batch_size}), {model.n_parameters():,} trainable "
          f"parameters")
    print(f"history: {model.history}")
    print(f"fit {fit_s:.1f} s, predict {predict_s:.1f} s ({len(test) / max(predict_s, 1e-9):.2f} patients/s), "
          f"wall {total_s:.1f} s, peak RSS {_peak_rss_mib():.0f} MiB")
    print(tabulate(rows, headers="keys", floatfmt=".4f"))


if __name__ == "__main__":
    main()
