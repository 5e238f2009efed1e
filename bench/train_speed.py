"""Benchmark: training speed of GAMENet / SafeDrug / MoleRec in mini-batches vs one visit per step (reference code).

Usage::

    python bench/train_speed.py [--models gamenet,safedrug,molerec] [--patients 2000] [--protocol visit]
                                [--bs1-steps 150] [--repeats 3] [--epochs 15] [--quality-patients 2000]
                                [--seeds 0,1,2] [--bs1-seeds 0] [--skip-speed] [--skip-quality] [--defaults] [--threads 1] [--cache DIR]
    python bench/train_speed.py --step-ms [--steps 30] [--models ...] [--patients 2000]

``--step-ms`` alone: the milliseconds of one training step (make the batch, forward and loss, backward, Adam step;
median of ``--steps`` steps after 3 warm-up steps, the network in training mode; CPU time of the process, and the
wall time) at batch size 1 and at the registry batch size, on the ``--patients`` cohort; nothing else runs.

Otherwise three measurements on the embedded synthetic cohort, each model with its registry parameters
(``registry.yaml``):

1. speed: one training epoch in mini-batches (registry ``batch_size`` and ``lr``) on the ``--patients`` cohort, timed
   without the per-epoch validation pass, next to batch size 1 with the authors' learning rate; the batch-size-1 arm
   times ``--bs1-steps`` steps and extrapolates to the epoch (it would take minutes to hours otherwise); the two arms
   alternate ``--repeats`` times and the fastest run of each is reported (the machine may be shared);
2. quality after the same number of epochs: both arms trained for ``--epochs`` epochs (no early stopping; the shared
   loop keeps the state with the best validation PRAUC) on the ``--quality-patients`` cohort (default: the
   default-size embedded cohort; batch size 1 takes about 10 min per seed for SafeDrug there and about 1 h 50 min
   for MoleRec, so pass a smaller cohort for a quick look), for each of ``--seeds``; same data for both arms.
   Reported: mean and standard deviation over the seeds of the validation Jaccard (threshold 0.5) and PRAUC, and
   the mean paired difference mini-batch minus batch 1 (the target: >= 0 for Jaccard); then, to tell ranking from
   calibration, the mean predicted set size at 0.5 next to the truth's, and the Jaccard at the threshold tuned on
   the same validation split (``medrec_bench.evaluate.tune_threshold``; an upper bound of what re-thresholding can
   give); and the time to batch-1 quality: the first epoch at which the mini-batch arm's validation Jaccard and
   PRAUC are both within 0.01 of the batch-1 arm's final values, its seconds (build, training and validation) and
   their ratio to the batch-1 arm's whole run. ``--bs1-seeds`` runs the slow batch-1 arm for fewer seeds than the
   mini-batch arm (the paired difference then covers the common seeds);
3. ``--defaults``: the registry defaults end to end on the ``--patients`` cohort (early stopping included), with
   the training seconds and test scores.

Peak RSS (``resource.getrusage``) is printed after each part. ``--threads`` sets ``torch.set_num_threads`` (1 by
default: on a 2-core machine shared with other jobs, 2 threads are often several times slower for these small ops).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

try:
    import medrec_bench  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medrec_bench.data import load_cohort  # noqa: E402
from medrec_bench.evaluate import tune_threshold  # noqa: E402
from medrec_bench.metrics import ddi_rate, multilabel_scores  # noqa: E402
from medrec_bench.models import Context  # noqa: E402
from medrec_bench.registry import default_registry  # noqa: E402
from medrec_bench.tasks import make_splits, targets_matrix  # noqa: E402

#: the learning rates of the released training scripts (one visit per optimizer step)
AUTHORS_LR = {"gamenet": 2e-4, "safedrug": 5e-4, "molerec": 5e-4}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_fit(model: Any, train: list, val: list, ctx: Context) -> tuple[float, float]:
    """Fit ``model``; returns (training seconds without building the network and without validation, seconds of
    validation predictions)."""
    spent = {"build": 0.0, "predict": 0.0}

    def timing(key: str, fn: Callable) -> Callable:
        def timed(*a, **kw):
            t = time.perf_counter()
            out = fn(*a, **kw)
            spent[key] += time.perf_counter() - t
            return out
        return timed

    model.predict_proba = timing("predict", model.predict_proba)
    model.build = timing("build", model.build)
    t = time.perf_counter()
    model.fit(train, val, ctx)
    total = time.perf_counter() - t
    del model.predict_proba, model.build
    return total - spent["build"] - spent["predict"], spent["predict"]


def record_curve(model: Any, val: list, n_drugs: int) -> list[tuple[float, float, float]]:
    """Make ``model`` (a TorchRecommender about to be fitted) append ``(seconds since this call, validation Jaccard at
    its threshold, validation PRAUC)`` after every epoch to the returned list; the seconds count training and
    validation. Uses the validation probabilities the shared loop computes anyway (no extra pass)."""
    curve: list[tuple[float, float, float]] = []
    truth = targets_matrix(val, n_drugs).numpy()
    start, last = time.perf_counter(), {}
    predict, on_epoch_end = model.predict_proba, model.on_epoch_end

    def predicting(samples):
        last["prob"] = predict(samples)
        return last["prob"]

    def epoch_end(record):
        on_epoch_end(record)
        jaccard = float(multilabel_scores(truth, last["prob"], model.default_threshold)["jaccard"].mean())
        curve.append((time.perf_counter() - start, jaccard, record["val_prauc"]))

    model.predict_proba, model.on_epoch_end = predicting, epoch_end
    return curve


def time_to_quality(curve: list[tuple[float, float, float]], jaccard: float, prauc: float,
                    tolerance: float = 0.01) -> tuple[int, float] | None:
    """(epoch counted from 1, seconds) of the first epoch of ``curve`` (from :func:`record_curve`) whose validation
    Jaccard and PRAUC are both within ``tolerance`` of ``jaccard`` / ``prauc``; None when no epoch is."""
    for epoch, (seconds, j, p) in enumerate(curve, start=1):
        if j >= jaccard - tolerance and p >= prauc - tolerance:
            return epoch, seconds
    return None


def scores(model: Any, samples: list, cohort: Any) -> dict[str, float]:
    """Jaccard, PRAUC, DDI rate and mean set size at the model's threshold; the truth's mean set size; the tuned
    threshold on ``samples`` and the Jaccard there."""
    prob = model.predict_proba(samples)
    truth = targets_matrix(samples, len(cohort.vocab.drugs)).numpy()
    s = multilabel_scores(truth, prob, model.default_threshold)
    tuned = tune_threshold(truth, prob)
    return {"jaccard": float(s["jaccard"].mean()), "prauc": float(s["prauc"].mean()),
            "ddi": ddi_rate(prob >= model.default_threshold, cohort.ddi), "n_drugs": float(s["n_drugs"].mean()),
            "n_true": float(truth.sum(1).mean()), "tuned_threshold": tuned,
            "tuned_jaccard": float(multilabel_scores(truth, prob, tuned)["jaccard"].mean())}


def step_ms(model: Any, samples: list, ctx: Context, steps: int) -> dict[str, float]:
    """Median milliseconds of the parts of one training step of ``model`` (built for ``ctx``, training mode) over
    ``steps`` consecutive batches of ``samples`` (after 3 warm-up steps), in CPU time of this process (on a shared
    machine wall time mostly measures the other jobs): ``batch`` (make_batch and targets), ``forward`` (forward and
    loss), ``backward``, ``optimizer`` (Adam step and zero_grad), ``total``; and ``wall``, the wall time of a step."""
    model.ctx, model.module = ctx, model.build(ctx)
    model.module.train()
    optimizer = model.make_optimizer()
    size = model.batch_size
    times: dict[str, list[float]] = {k: [] for k in ("batch", "forward", "backward", "optimizer", "total", "wall")}
    clock = time.process_time
    for step in range(steps + 3):
        chunk = [samples[(step * size + i) % len(samples)] for i in range(size)]
        wall, t0 = time.perf_counter(), clock()
        batch = model.make_batch(chunk, ctx)
        target = targets_matrix(chunk, ctx.n_drugs).float()
        t1 = clock()
        loss = model.loss(batch, target, 0)
        t2 = clock()
        loss.backward()
        t3 = clock()
        optimizer.step()
        optimizer.zero_grad()
        t4 = clock()
        if step >= 3:
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0, time.perf_counter() - wall)):
                times[key].append(1000 * value)
    return {k: float(np.median(v)) for k, v in times.items()}


def print_step_times(names: list[str], registry: Any, train: list, ctx: Context, steps: int) -> None:
    """The ``--step-ms`` table: per-step milliseconds at batch size 1 and at each model's registry batch size."""
    rows = []
    for name in names:
        entry = registry.get(name)
        for params in ({"batch_size": 1, "lr": AUTHORS_LR[name]}, {}):
            model = entry.create(params)
            got = step_ms(model, train, ctx, steps)
            rows.append([name, model.batch_size, *(f"{got[k]:.1f}" for k in got)])
    print(f"\nper-step milliseconds of CPU time (median of {steps} steps, training mode; wall: the same steps' "
          f"wall time)")
    print(tabulate(rows, headers=["model", "batch", "make batch", "forward + loss", "backward", "optimizer",
                                  "total", "wall"]))


def quality_reach(name: str, got: dict[str, list[dict[str, float]]],
                  curves: dict[str, list[list[tuple[float, float, float]]]]) -> list[str]:
    """One row of the time-to-batch-1-quality table (see :func:`time_to_quality`)."""
    if not got["batch 1"]:
        return [name, "no batch-1 run", "", "", "", ""]
    jaccard = float(np.mean([r["jaccard"] for r in got["batch 1"]]))
    prauc = float(np.mean([r["prauc"] for r in got["batch 1"]]))
    bs1_s = float(np.mean([r["wall_s"] for r in got["batch 1"]]))
    hits = [time_to_quality(c, jaccard, prauc) for c in curves["mini-batch"]]
    epochs = ", ".join("never" if h is None else str(h[0]) for h in hits)
    seconds = ", ".join("-" if h is None else f"{h[1]:.0f}" for h in hits)
    ratio = (f"{max(h[1] for h in hits) / bs1_s:.3f} (slowest seed)" if hits and all(h is not None for h in hits)
             else "not reached")
    return [name, f"{jaccard:.4f} / {prauc:.4f}", f"{bs1_s:.0f}", epochs, seconds, ratio]


def mean_sd(results: list[dict[str, float]], key: str) -> str:
    """``"mean ± sd"`` of ``key`` over ``results`` (sd 0 for one result)."""
    if not results:
        return "-"
    values = np.array([r[key] for r in results])
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gamenet,safedrug,molerec")
    ap.add_argument("--patients", type=int, default=2000, help="synthetic cohort size for speed and --defaults")
    ap.add_argument("--protocol", default="visit", choices=("visit", "last_visit"))
    ap.add_argument("--bs1-steps", type=int, default=150, help="batch-size-1 steps timed for the extrapolation")
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats of part 1 (the fastest is reported)")
    ap.add_argument("--epochs", type=int, default=15, help="epochs of the quality comparison")
    ap.add_argument("--quality-patients", type=int, default=2000, help="cohort size of the quality comparison")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the quality comparison (comma-separated)")
    ap.add_argument("--bs1-seeds", default=None,
                    help="seeds of the batch-size-1 arm of part 2 (default: --seeds; it is the slow arm)")
    ap.add_argument("--skip-speed", action="store_true", help="skip part 1 (the epoch timing)")
    ap.add_argument("--skip-quality", action="store_true", help="skip part 2 (the slow batch-size-1 training)")
    ap.add_argument("--step-ms", action="store_true", help="only time single training steps (see the docstring)")
    ap.add_argument("--steps", type=int, default=30, help="steps timed by --step-ms")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--defaults", action="store_true", help="also train the registry defaults end to end")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="cohort cache folder (default: a temporary folder)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="medrec-bench-speed-"))
    registry = default_registry()
    names = [registry.get(n).name for n in args.models.split(",") if n.strip()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); protocol {args.protocol}; seed {args.seed}")

    cohort = load_cohort("synthetic", patients=args.patients, cache=cache)
    splits = make_splits(cohort, args.protocol, seed=args.seed)
    train, val = list(splits.train), list(splits.val)
    ctx = Context.from_cohort(cohort, seed=args.seed, work_dir=cache / "work")
    if args.step_ms:
        print_step_times(names, registry, train, ctx, args.steps)
        return

    # 1. speed ----------------------------------------------------------------------------------------------------
    rows = []
    for name in names if not args.skip_speed else []:
        entry = registry.get(name)
        steps = min(args.bs1_steps, len(train))
        mini_s = one_s = float("inf")
        for _ in range(args.repeats):  # the fastest of the repeats: the machine may be shared
            mini = entry.create({"epochs": 1, "patience": 0})
            mini_s = min(mini_s, timed_fit(mini, train, [], ctx)[0])
            one = entry.create({"epochs": 1, "patience": 0, "batch_size": 1, "lr": AUTHORS_LR[name]})
            one_s = min(one_s, timed_fit(one, train[:steps], [], ctx)[0])
        one_epoch = one_s / steps * len(train)
        rows.append([name, mini.batch_size, len(train), f"{mini_s:.1f}", f"{len(train) / mini_s:.0f}",
                     f"{one_epoch:.0f} (from {steps} steps)", f"{len(train) / one_epoch:.1f}",
                     f"{one_epoch / mini_s:.1f}x"])
    if rows:
        print(f"\n1. one training epoch, {args.patients}-patient cohort ({len(train)} training samples), without the "
          f"validation pass; fastest of {args.repeats} runs")
        print(tabulate(rows, headers=["model", "batch", "samples", "mini-batch s/epoch", "samples/s",
                                      "batch-1 s/epoch (extrapolated)", "batch-1 samples/s", "speed-up"]))
        print(f"peak RSS {peak_rss_mb():.0f} MiB")

    # 2. quality after the same number of epochs --------------------------------------------------------------------
    if not args.skip_quality:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        bs1_seeds = seeds if args.bs1_seeds is None else [int(x) for x in args.bs1_seeds.split(",") if x.strip()]
        small = load_cohort("synthetic", patients=args.quality_patients, cache=cache)
        s_splits = make_splits(small, args.protocol, seed=args.seed)
        s_train, s_val = list(s_splits.train), list(s_splits.val)
        rows, calibration, reach = [], [], []
        for name in names:
            entry = registry.get(name)
            arms = {"batch 1": {"batch_size": 1, "lr": AUTHORS_LR[name]}, "mini-batch": {}}
            got: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
            curves: dict[str, list[list[tuple[float, float, float]]]] = {arm: [] for arm in arms}
            for seed in seeds:
                s_ctx = Context.from_cohort(small, seed=seed, work_dir=cache / "work")
                for arm, params in arms.items():
                    if arm == "batch 1" and seed not in bs1_seeds:
                        continue
                    model = entry.create({"epochs": args.epochs, "patience": 0, **params})
                    curves[arm].append(record_curve(model, s_val, len(small.vocab.drugs)))
                    train_s, _ = timed_fit(model, s_train, s_val, s_ctx)
                    got[arm].append({**scores(model, s_val, small), "train_s": train_s, "seed": seed,
                                     "wall_s": curves[arm][-1][-1][0]})
                    r = got[arm][-1]
                    print(f"  {name} seed {seed} {arm}: val Jaccard {r['jaccard']:.4f}, PRAUC {r['prauc']:.4f}, "
                          f"drugs/visit {r['n_drugs']:.1f} (truth {r['n_true']:.1f}), tuned Jaccard "
                          f"{r['tuned_jaccard']:.4f} at {r['tuned_threshold']:.2f}, {train_s:.0f} s; per epoch "
                          f"(s, Jaccard, PRAUC): "
                          + " ".join(f"({t:.0f}, {j:.3f}, {p:.3f})" for t, j, p in curves[arm][-1]), flush=True)
            paired = [(m, o) for m in got["mini-batch"] for o in got["batch 1"] if m["seed"] == o["seed"]]
            diff = np.array([m["jaccard"] - o["jaccard"] for m, o in paired]) if paired else np.array([np.nan])
            reach.append(quality_reach(name, got, curves))
            mini = entry.create()
            rows.append([name, mean_sd(got["batch 1"], "jaccard"), mean_sd(got["mini-batch"], "jaccard"),
                         f"{diff.mean():+.4f}", mean_sd(got["batch 1"], "prauc"), mean_sd(got["mini-batch"], "prauc"),
                         f"{np.mean([g['train_s'] for g in got['batch 1']]):.0f}",
                         f"{np.mean([g['train_s'] for g in got['mini-batch']]):.0f}",
                         f"lr {AUTHORS_LR[name]:g} / bs {mini.batch_size}, lr {mini.lr:g}"])
            calibration.append([name, f"{np.mean([g['n_true'] for g in got['batch 1']]):.1f}",
                                *(mean_sd(got[arm], key) for key in ("n_drugs", "tuned_jaccard", "tuned_threshold")
                                  for arm in arms)])
        print(f"\n2. validation scores after {args.epochs} epochs, {args.quality_patients}-patient cohort "
              f"({len(s_train)} training / {len(s_val)} validation samples), mean ± sd over seeds {seeds}")
        print(tabulate(rows, headers=["model", "val Jaccard bs1", "val Jaccard mini", "mini - bs1 (paired)",
                                      "val PRAUC bs1", "val PRAUC mini", "train s bs1", "train s mini",
                                      "settings (bs1 / mini)"]))
        print("\n   set size and re-thresholding (validation): predicted drugs per visit at 0.5 vs the truth, Jaccard "
              "at the validation-tuned threshold")
        print(tabulate(calibration, headers=["model", "truth drugs/visit", "drugs/visit bs1", "drugs/visit mini",
                                             "tuned Jaccard bs1", "tuned Jaccard mini", "tuned threshold bs1",
                                             "tuned threshold mini"]))
        print("\n   time to batch-1 quality: the first epoch whose validation Jaccard and PRAUC are both within 0.01 "
              "of the batch-1 arm's final values (mean over its seeds); seconds of training + validation, against the "
              "batch-1 arm's full run (mean over its seeds)")
        print(tabulate(reach, headers=["model", "batch-1 Jaccard / PRAUC", "batch-1 s", "mini-batch epoch (per seed)",
                                       "mini-batch s (per seed)", "mini / batch-1 time"]))
        print(f"peak RSS {peak_rss_mb():.0f} MiB")

    # 3. registry defaults end to end -------------------------------------------------------------------------------
    if args.defaults:
        rows = []
        for name in names:
            model = registry.get(name).create()
            train_s, val_s = timed_fit(model, train, val, ctx)
            test = scores(model, list(splits.test), cohort)
            rows.append([name, len(model.history), f"{train_s:.1f}", f"{val_s:.1f}", f"{test['jaccard']:.4f}",
                         f"{test['prauc']:.4f}", f"{test['ddi']:.4f}"])
        print(f"\n3. registry defaults, {args.patients}-patient cohort, early stopping on validation PRAUC")
        print(tabulate(rows, headers=["model", "epochs run", "train s", "validation s", "test Jaccard", "test PRAUC",
                                      "test DDI"]))
        print(f"peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
