"""Benchmark: LEADER teacher training and inference throughput per arm (dtype x LoRA blocks), in one run.

Usage: ``python bench/teacher.py [--backbone smollm2-135m] [--arms float32:all,float32:2] [--steps 10]
[--batch-size 4] [--infer 32] [--eval-batch-size 8] [--max-length 2048] [--threads N] [--device cpu]``

An arm is ``DTYPE:LORA_LAYERS[:PREFIX_DTYPE[:TOP]]`` (``all`` = LoRA on every block, the paper; an int k = the top
k blocks, with the frozen prefix computed once and cached in memory, in the backbone's dtype (``backbone``) or, with
``int8``, through dynamically quantised Linear layers; for int8 arms the states' relative error against the fp32
prefix is printed; ``TOP``: ``last`` (default: the last block at the last token only) or ``full`` (the whole top
at every token, the reference for that shortcut)). Data: the default synthetic cohort, protocol ``last_visit``;
training batches are drawn from the train split in a fixed order, inference runs on the first ``--infer`` test
samples. For each arm the teacher's module is built, top-k arms then run the one-time prefix pass over every timed
prompt (timed separately: prompts/s and achieved GFLOP/s = 2 x bottom-block parameters x tokens, as a fraction of a
large fp32 matmul's GFLOP/s timed in the same run), one warm-up step is run, then ``--steps`` optimizer steps of
``--batch-size`` samples (accumulation 1) are timed; inference times ``predict_proba``. Prints a table and the ratio
of each arm's training samples/s to the first arm's.
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
from medrec_bench.llm.batches import pad_tokens  # noqa: E402
from medrec_bench.models import Context, seed_everything  # noqa: E402
from medrec_bench.tasks import make_splits  # noqa: E402
from medrec_bench.tasks.batching import targets_matrix  # noqa: E402


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of the fastest of ``repeats`` fp32 [n, n] @ [n, n] products (the machine's practical peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_arm(arm: str, args: argparse.Namespace, ctx: Context, train: list, test: list,
              peak: float) -> dict[str, object]:
    """Train/inference throughput of one ``DTYPE:LORA_LAYERS`` arm."""
    dtype, _, rest = arm.partition(":")
    layers, _, rest = rest.partition(":")
    prefix_dtype, _, top = rest.partition(":")
    if top not in ("", "last", "full"):
        raise SystemExit(f"arm {arm!r}: TOP must be 'last' or 'full', not {top!r}")
    seed_everything(0)
    model = LeaderTeacher(backbone=args.backbone, dtype=dtype, batch_size=args.batch_size,
                          effective_batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                          max_length=args.max_length, lora_layers=int(layers) if layers.isdigit() else "all",
                          prefix_dtype=prefix_dtype or "backbone")
    model.ctx = ctx
    t0 = time.perf_counter()
    model.module = model.build(ctx).to(ctx.device)
    build_s = time.perf_counter() - t0
    optimizer = model.make_optimizer()
    batches = [train[(i * args.batch_size) % len(train):][:args.batch_size] for i in range(args.steps + 1)]
    tokens = [len(model.token_ids(s)) for b in batches for s in b] + [len(model.token_ids(s)) for s in test]
    prefix: dict[str, object] = {}
    if model._prefix is not None:
        model._prefix.split.last_token_only = top != "full"
        timed = list({id(s): s for b in batches for s in b}.values()) + test
        seconds = _timed(lambda: model._prefix.ensure(timed))
        split = model._prefix.split
        bottom = sum(p.numel() for layer in split.decoder.layers[: split.cut] for p in layer.parameters())
        n_tokens = sum(len(model.token_ids(s)) for s in timed)
        gflops = 2 * bottom * n_tokens / seconds / 1e9
        prefix = {"prefix prompts/s": len(timed) / seconds, "prefix GFLOP/s": gflops,
                  "prefix / matmul peak": gflops / peak}
        if model.prefix_dtype == "int8":
            batch = pad_tokens([model.token_ids(s) for s in test], model._backbone.tokenizer.pad_token_id)
            with torch.inference_mode():
                exact = split.prefix(batch)
            stored = model._prefix.batch(test)
            real = batch.attention_mask.bool()
            prefix["int8 state rel. error"] = float((stored.hidden[real] - exact[real]).norm() / exact[real].norm())
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
    return {"arm": arm, "build s": round(build_s, 1), "train steps/s": args.steps / train_s,
            "train samples/s": args.steps * args.batch_size / train_s, "infer patients/s": len(test) / infer_s,
            **prefix, "mean tokens": float(np.mean(tokens)), "last loss": losses[-1],
            "finite": bool(np.isfinite(probs).all())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--arms", default="float32:all,float32:2",
                        help="comma-separated DTYPE:LORA_LAYERS[:PREFIX_DTYPE[:TOP]]")
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
    peak = matmul_gflops()
    rows = [bench_arm(a.strip(), args, ctx, train, test, peak) for a in args.arms.split(",") if a.strip()]
    for row in rows:
        row["train x first arm"] = row["train samples/s"] / rows[0]["train samples/s"]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(f"backbone {args.backbone}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{args.steps} steps x batch {args.batch_size}, max_length {args.max_length}, inference on {len(test)} "
          f"test patients (batches of {args.eval_batch_size}), fp32 matmul {peak:.0f} GFLOP/s, peak RSS "
          f"{peak_mib:.0f} MiB")
    print(tabulate(rows, headers="keys", floatfmt=".3f"))


if __name__ == "__main__":
    main()
