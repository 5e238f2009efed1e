"""Benchmark: vectorized ``multilabel_scores`` vs a per-sample scikit-learn loop, and ``evaluate`` with bootstrap.

Usage: ``python bench/metrics.py [--n 10000] [--m 131] [--seed 0] [--n-boot 1000]``

Synthetic data: N visits x M drugs, ~15 true drugs per visit, scores = noise + signal rounded to 2 decimals (many
ties), patients with a geometric number of visits (~1.25 per patient, so ~8k patients for 10k visits). The script
asserts that both implementations agree to 1e-9 and prints wall-clock seconds (``time.perf_counter``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from tabulate import tabulate

try:
    import medrec_bench  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medrec_bench.evaluate import evaluate  # noqa: E402
from medrec_bench.metrics import multilabel_scores  # noqa: E402

KEYS = ("jaccard", "precision", "recall", "f1", "prauc", "n_drugs")


def make_data(n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic (y_true bool [n, m], y_prob [n, m], patient_ids [n], n_visits [n], ddi bool [m, m])."""
    rng = np.random.default_rng(seed)
    popularity = rng.dirichlet(np.full(m, 0.7))  # skewed drug frequencies like real prescriptions
    k = np.clip(rng.poisson(15, n), 1, m)
    y_true = np.zeros((n, m), dtype=bool)
    keys = rng.random((n, m)) ** (1.0 / popularity)  # weighted sampling without replacement (Efraimidis-Spirakis)
    top = np.argsort(-keys, axis=1)
    y_true[np.arange(n)[:, None], top] = np.arange(m)[None, :] < k[:, None]
    signal = 0.3 * y_true + 0.25 * np.minimum(popularity * m / 4, 1.0)  # true drugs and popular drugs score high
    y_prob = np.round(np.clip(0.45 * rng.random((n, m)) + signal, 0, 1), 2)
    patient_ids, n_visits = [], []
    pid = 0
    while len(n_visits) < n:
        visits = int(rng.geometric(0.8))
        patient_ids += [f"P{pid:06d}"] * visits
        n_visits += list(range(1, visits + 1))
        pid += 1
    ddi = rng.random((m, m)) < 0.08
    return y_true, y_prob, np.array(patient_ids[:n]), np.array(n_visits[:n]), ddi | ddi.T


def sklearn_loop(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, np.ndarray]:
    """Straightforward per-sample reference with scikit-learn (zero_division=0 as in the metric definitions)."""
    from sklearn.metrics import average_precision_score, f1_score, jaccard_score, precision_score, recall_score

    n = y_true.shape[0]
    out = {k: np.empty(n) for k in KEYS}
    y_pred = y_prob >= threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows without positives
        for i in range(n):
            out["jaccard"][i] = jaccard_score(y_true[i], y_pred[i], zero_division=0)
            out["precision"][i] = precision_score(y_true[i], y_pred[i], zero_division=0)
            out["recall"][i] = recall_score(y_true[i], y_pred[i], zero_division=0)
            out["f1"][i] = f1_score(y_true[i], y_pred[i], zero_division=0)
            out["prauc"][i] = average_precision_score(y_true[i], y_prob[i])
            out["n_drugs"][i] = y_pred[i].sum()
    return out


def _best_of(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="samples (visits)")
    ap.add_argument("--m", type=int, default=131, help="drugs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for evaluate")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast paths (best time is reported)")
    args = ap.parse_args(argv)

    y_true, y_prob, pids, n_visits, ddi = make_data(args.n, args.m, args.seed)
    n_pat = len(np.unique(pids))
    print(
        f"data: {args.n} samples x {args.m} drugs, {y_true.sum(1).mean():.1f} true drugs/sample, "
        f"{len(np.unique(y_prob))} distinct scores, {n_pat} patients, "
        f"{(y_prob >= 0.5).sum(1).mean():.1f} predicted drugs/sample at 0.5"
    )

    t_vec, fast = _best_of(lambda: multilabel_scores(y_true, y_prob), args.repeats)
    t_ref, ref = _best_of(lambda: sklearn_loop(y_true, y_prob), 1)
    diffs = {k: float(np.abs(fast[k] - ref[k]).max()) for k in KEYS}
    worst = max(diffs.values())
    assert worst <= 1e-9, f"vectorized metrics differ from scikit-learn: {diffs}"

    print(
        tabulate(
            [
                ["per-sample sklearn loop", f"{t_ref:.3f}", "1.0x"],
                ["multilabel_scores (vectorized)", f"{t_vec:.4f}", f"{t_ref / t_vec:.0f}x"],
            ],
            headers=["implementation", "seconds", "speed-up"],
        )
    )
    print(f"max |diff| over {', '.join(KEYS)}: {worst:.2e} (<= 1e-9 asserted)")

    t_eval, res = _best_of(lambda: evaluate(y_true, y_prob, pids, n_visits, ddi, n_boot=args.n_boot), args.repeats)
    t_rounds, _ = _best_of(
        lambda: evaluate(y_true, y_prob, pids, n_visits, ddi, uncertainty="rounds_with_replacement"), args.repeats
    )
    groups = len({r.group for r in res})
    print()
    print(
        tabulate(
            [
                [f"evaluate, bootstrap n_boot={args.n_boot}", f"{t_eval:.3f}"],
                ["evaluate, rounds_with_replacement (10 rounds)", f"{t_rounds:.3f}"],
            ],
            headers=[f"evaluate ({groups} groups x 2 averagings x 8 metrics, {n_pat} patients)", "seconds"],
        )
    )
    overall = [r for r in res if r.group == "overall" and r.averaging == "sample"]
    print()
    print(
        tabulate(
            [[r.metric, r.mean, r.ci_low, r.ci_high] for r in overall],
            headers=["overall / sample", "mean", "ci_low", "ci_high"],
            floatfmt=".4f",
        )
    )


if __name__ == "__main__":
    main()
