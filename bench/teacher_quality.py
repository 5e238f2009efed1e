"""Benchmark: LEADER(T) quality and cost with LoRA on the top k blocks vs all blocks, after the same epochs.

Usage: ``python bench/teacher_quality.py [--arms all,2,4,2@1e-3] [--patients 500] [--epochs 2] [--seeds 0]
[--backbone smollm2-135m] [--threads 1] [--max-length 2048] [--work DIR]``

Each arm x seed runs in its own subprocess (so its peak RSS is its own): the synthetic cohort of ``--patients``
patients, protocol ``last_visit`` split with the seed, ``leader_t`` with the registry defaults except
``lora_layers`` (the arm: ``all`` or k, optionally ``@LR`` for another learning rate), ``epochs`` (no early stopping:
``patience 0``, no step cap) and the seed. Reported per arm: validation PRAUC and Jaccard@0.5 of the last epoch and
of the kept (best-PRAUC) epoch, seconds of the prefix pass and of the whole fit, peak RSS, the validation PRAUC after
each epoch (``curve``) and the seconds per epoch; then the PRAUC difference of each arm to the first, per seed.
Prefix states are stored under ``--work`` (keyed by backbone, prompt settings and k, so arms share them; pointing it
at ``~/.cache/medrec-bench/work`` reuses what ``medrec-bench run`` computed).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    from leader.teacher import LeaderTeacher
    from medrec_bench.data import load_cohort
    from medrec_bench.metrics import multilabel_scores
    from medrec_bench.models import Context
    from medrec_bench.tasks import make_splits, targets_matrix

    if args.threads:
        torch.set_num_threads(args.threads)

    class Timed(LeaderTeacher):
        prefix_seconds = 0.0

        def before_training(self, train, val):  # the one-time prefix pass, timed
            start = time.perf_counter()
            super().before_training(train, val)
            self.prefix_seconds = time.perf_counter() - start

    cohort = load_cohort("synthetic", patients=args.patients)
    splits = make_splits(cohort, "last_visit", seed=args.seed)
    train, val = list(splits.train), list(splits.val)
    blocks, _, lr = args.arm.partition("@")
    layers = int(blocks) if blocks.isdigit() else "all"
    model = Timed(backbone=args.backbone, lora_layers=layers, epochs=args.epochs, patience=0, max_steps=0,
                  max_length=args.max_length, seed=args.seed, **({"lr": float(lr)} if lr else {}))
    ctx = Context.from_cohort(cohort, seed=args.seed, work_dir=Path(args.work).expanduser(), progress=False)
    start = time.perf_counter()
    model.fit(train, val, ctx)
    fit_s = time.perf_counter() - start
    probs = model.predict_proba(val)
    scores = multilabel_scores(targets_matrix(val, ctx.n_drugs).numpy(), probs, 0.5)
    print(json.dumps({
        "arm": args.arm, "seed": args.seed, "train": len(train), "val": len(val),
        "last val PRAUC": model.history[-1]["val_prauc"], "kept val PRAUC": float(scores["prauc"].mean()),
        "kept val Jaccard": float(scores["jaccard"].mean()), "kept epoch": model.best_epoch,
        "prefix s": round(model.prefix_seconds, 1), "fit s": round(fit_s, 1),
        "padding": model.padding_fraction, "lr": model.lr,
        "s per epoch": round((fit_s - model.prefix_seconds) / max(model.epochs_run, 1), 1),
        "curve": " ".join(f"{r['val_prauc']:.3f}" for r in model.history),
        "peak RSS MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default="all,2,4")
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--work", default="/tmp/medrec-teacher-quality")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm is not None:
        child(args)
        return
    from tabulate import tabulate

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for arm in [a.strip() for a in args.arms.split(",") if a.strip()]:
            cmd = [sys.executable, __file__, "--arm", arm, "--seed", str(seed), "--patients", str(args.patients),
                   "--epochs", str(args.epochs), "--backbone", args.backbone, "--threads", str(args.threads),
                   "--max-length", str(args.max_length), "--work", args.work]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    first = args.arms.split(",")[0].strip()
    for row in rows:
        ref = next(r for r in rows if r["arm"] == first and r["seed"] == row["seed"])
        row["PRAUC - first arm"] = row["kept val PRAUC"] - ref["kept val PRAUC"]
    print(f"{args.patients}-patient synthetic cohort, last_visit, {args.epochs} epochs, backbone {args.backbone}, "
          f"{args.threads} thread(s)")
    print(tabulate(rows, headers="keys", floatfmt=".4f"))


if __name__ == "__main__":
    main()
