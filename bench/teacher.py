"""Benchmark: LEADER teacher training steps/s and inference patients/s, float32 vs bfloat16, in one run.

Usage: ``python bench/teacher.py [--backbone smollm2-135m] [--dtypes float32,bfloat16] [--steps 10]
[--batch-size 4] [--infer 32] [--eval-batch-size 8] [--max-length 2048] [--threads N] [--device cpu]``

Data: the default synthetic cohort (``load_cohort("synthetic")``), protocol ``last_visit``; training batches are
drawn from the train split in a fixed order, inference runs on the first ``--infer`` test samples. For each dtype
the teacher's module is built (backbone + LoRA + head), one warm-up step is run, then ``--steps`` optimizer steps of
``--batch-size`` samples (accumulation 1) are timed (``time.perf_counter``); inference times ``predict_proba``
(length-sorted batches of ``--eval-batch-size``). Prompts are tokenized before timing. Prints a table.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

try:
    import leader  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from leader.teacher import LeaderTeacher  # noqa: E402
from medrec_bench.data import load_cohort  # noqa: E402
from medrec_bench.models import Context, seed_everything  # noqa: E402
from medrec_bench.tasks import make_splits  # noqa: E402
from medrec_bench.tasks.batching import targets_matrix  # noqa: E402


def bench_dtype(dtype: str, args: argparse.Namespace, ctx: Context, train: list, test: list) -> dict[str, object]:
    """Train/inference throughput of one dtype."""
    seed_everything(0)
    model = LeaderTeacher(backbone=args.backbone, dtype=dtype, batch_size=args.batch_size,
                          effective_batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                          max_length=args.max_length)
    model.ctx = ctx
    t0 = time.perf_counter()
    model.module = model.build(ctx).to(ctx.device)
    build_s = time.perf_counter() - t0
    optimizer = model.make_optimizer()
    batches = [train[(i * args.batch_size) % len(train):][:args.batch_size] for i in range(args.steps + 1)]
    tokens = [len(model.token_ids(s)) for b in batches for s in b] + [len(model.token_ids(s)) for s in test]
    model.module.train()
    losses = []

    def step(chunk: list) -> None:
        batch = model._to_device(model.make_batch(chunk, ctx))
        target = targets_matrix(chunk, ctx.n_drugs).float()
        loss = model.loss(batch, target, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))

    step(batches[0])  # warm-up
    t0 = time.perf_counter()
    for chunk in batches[1:]:
        step(chunk)
    train_s = time.perf_counter() - t0
    model.module.eval()
    model.predict_proba(test[: args.eval_batch_size])  # warm-up
    t0 = time.perf_counter()
    probs = model.predict_proba(test)
    infer_s = time.perf_counter() - t0
    return {"dtype": dtype, "build s": round(build_s, 1), "train steps/s": args.steps / train_s,
            "train samples/s": args.steps * args.batch_size / train_s, "infer patients/s": len(test) / infer_s,
            "mean tokens": float(np.mean(tokens)), "last loss": losses[-1],
            "finite": bool(np.isfinite(probs).all())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--infer", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cohort = load_cohort("synthetic")
    splits = make_splits(cohort, "last_visit", seed=0)
    ctx = Context.from_cohort(cohort, device=args.device, seed=0)
    train, test = list(splits.train), list(splits.test)[: args.infer]
    rows = [bench_dtype(d.strip(), args, ctx, train, test) for d in args.dtypes.split(",") if d.strip()]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"backbone {args.backbone}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{args.steps} steps x batch {args.batch_size}, max_length {args.max_length}, inference on {len(test)} "
          f"test patients (batches of {args.eval_batch_size}), peak RSS {peak_mib:.0f} MiB")
    print(tabulate(rows, headers="keys", floatfmt=".3f"))


if __name__ == "__main__":
    main()
