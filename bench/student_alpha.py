"""Benchmark: choose LEADER(S)'s distillation weight ``alpha`` (and optionally ``align_weight``) on validation.

Usage: ``python bench/student_alpha.py [--alphas 0,0.1,0.4,0.8,1.6] [--align-weights 0.005] [--seeds 0]
[--patients N] [--protocol last_visit] [--model leader_s] [--threads 0] [--grid dropout=0.1,0.3 ...]``

``--grid NAME=V1,V2`` (repeatable) adds another parameter of the student to the grid (numbers are parsed as numbers).
``--reference logistic,mlp`` also prints the validation scores of other registered models (registry defaults, the
same seeds and split) at their own default thresholds, as a yardstick.

For every seed the runner's model cache (:class:`~medrec_bench.runner.Workbench`) is used exactly as ``medrec-bench run`` uses it (default cache or
``$MEDREC_BENCH_CACHE``), so the teacher trained by ``medrec-bench run --models leader_t`` is loaded, not retrained,
and each student arm is cached under its own key (the arm that equals the registry default is the very model a later
``medrec-bench run --models leader_s`` loads). Reported per arm: validation PRAUC and Jaccard at the student's
default threshold (0.3) and the epochs run; test metrics are not looked at. The chosen arm is the highest mean
validation PRAUC over seeds.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _value(text: str) -> object:
    """A grid value: an int, a float or a boolean where it reads as one, else the string."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alphas", type=floats, default=floats("0,0.1,0.4,0.8,1.6"))
    ap.add_argument("--align-weights", type=floats, default=None, help="default: the registry's")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--patients", type=int, default=None, help="synthetic cohort size (default: the embedded 2000)")
    ap.add_argument("--protocol", default="last_visit", choices=["visit", "last_visit"])
    ap.add_argument("--model", default="leader_s")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                    help="another student parameter and its values (repeatable)")
    ap.add_argument("--reference", default="", help="comma-separated registered models to score on validation too")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    import numpy as np
    import torch

    from medrec_bench.data import load_cohort
    from medrec_bench.metrics import multilabel_scores
    from medrec_bench.registry import default_registry
    from medrec_bench.runner import Workbench
    from medrec_bench.tasks import targets_matrix

    if args.threads:
        torch.set_num_threads(args.threads)
    registry = default_registry()
    entry = registry.get(args.model)
    defaults = entry.resolved_params({})
    aligns = args.align_weights or [defaults["align_weight"]]
    cohort = load_cohort("synthetic", patients=args.patients, progress=True)
    runner = Workbench(cohort, protocol=args.protocol, progress=True)  # the runner's caches, no store
    seeds = [int(s) for s in args.seeds.split(",")]
    axes = {}
    for item in args.grid:
        name, sep, values = item.partition("=")
        if not sep or not values:
            ap.error(f"--grid takes NAME=V1,V2, not {item!r}")
        axes[name.strip()] = [_value(v) for v in values.split(",") if v.strip()]

    def validation(model_entry, seed: int, overrides: dict) -> tuple[float, float, object, float]:
        """(val PRAUC, val Jaccard at the model's default threshold, epochs run, seconds) of one trained model."""
        start = time.perf_counter()
        fitted = runner.trained(model_entry, seed, overrides)
        val = list(runner.splits(seed).val)
        y_true = targets_matrix(val, len(cohort.vocab.drugs)).numpy()
        s = multilabel_scores(y_true, fitted.model.predict_proba(val), fitted.model.default_threshold)
        return (float(np.mean(s["prauc"])), float(np.mean(s["jaccard"])), fitted.diagnostics.get("epochs_run"),
                time.perf_counter() - start)

    rows = []
    for alpha, align, *extra in itertools.product(args.alphas, aligns, *axes.values()):
        scores = []
        more = dict(zip(axes, extra))
        for seed in seeds:
            scores.append(validation(entry, seed, {entry.name: {"alpha": alpha, "align_weight": align, **more}}))
            print(f"alpha {alpha} align {align} {more or ''} seed {seed}: val PRAUC {scores[-1][0]:.4f} "
                  f"Jaccard {scores[-1][1]:.4f} epochs {scores[-1][2]} ({scores[-1][3]:.0f} s)", flush=True)
        rows.append((alpha, align, more, np.mean([s[0] for s in scores]), np.mean([s[1] for s in scores]),
                     [s[2] for s in scores]))
    print(f"\n{cohort.name} / {args.protocol}, seeds {seeds}, validation, threshold "
          f"{entry.load_class().default_threshold}")
    print("| alpha | align_weight | other | val PRAUC | val Jaccard | epochs |\n|---|---|---|---|---|---|")
    for alpha, align, more, prauc, jac, epochs in rows:
        print(f"| {alpha} | {align} | {more or ''} | {prauc:.4f} | {jac:.4f} | {epochs} |")
    for name in [m.strip() for m in args.reference.split(",") if m.strip()]:
        ref = registry.get(name)
        scores = [validation(ref, seed, {}) for seed in seeds]
        print(f"| reference: {ref.name} (threshold {ref.load_class().default_threshold}) | | | "
              f"{np.mean([x[0] for x in scores]):.4f} | {np.mean([x[1] for x in scores]):.4f} | |")
    best = max(rows, key=lambda r: r[3])
    print(f"chosen: alpha {best[0]}, align_weight {best[1]} {best[2] or ''} (highest mean validation PRAUC)")


if __name__ == "__main__":
    main()
