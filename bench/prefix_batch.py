"""Benchmark: the teacher's one-time prefix pass (the frozen bottom blocks) at several batch sizes, in one run.

Usage: ``python bench/prefix_batch.py [--backbone smollm2-135m] [--batches 8,16] [--prompts 96] [--repeats 2]
[--lora-layers 2] [--length N] [--threads N]``

Data: the first ``--prompts`` training prompts of the default synthetic cohort (protocol ``last_visit``), sorted by
length as :class:`~medrec_bench.llm.prefix_cache.PrefixStates` sorts them, so each batch size pads the same way the
teacher does; ``--length N`` instead keeps only prompts of at least N tokens, cut to N (no padding at all: what
the batch size alone costs). Each arm runs ``DecoderSplit.prefix`` over all prompts in consecutive batches of its
size; the arms alternate ``--repeats`` times (after one warm-up pass) and the fastest pass of each counts. Prints
prompts/s, the padded share of the tokens and the ratio of each arm's prompts/s to the first arm's.
"""

from __future__ import annotations

import argparse
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
from medrec_bench.llm.batches import pad_tokens  # noqa: E402
from medrec_bench.models import Context  # noqa: E402
from medrec_bench.tasks import make_splits  # noqa: E402
from medrec_bench.tasks.batching import padding_fraction  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--batches", default="8,16", help="comma-separated prefix-pass batch sizes")
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lora-layers", type=int, default=2)
    parser.add_argument("--length", type=int, default=0, help="cut prompts to this many tokens (0: keep them)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(b) for b in args.batches.split(",") if b.strip()]
    cohort = load_cohort("synthetic")
    ctx = Context.from_cohort(cohort, device="cpu", seed=0)
    teacher = LeaderTeacher(backbone=args.backbone, lora_layers=args.lora_layers)
    teacher.ctx = ctx
    teacher.module = teacher.build(ctx)
    split = teacher._prefix.split
    pad = teacher._backbone.tokenizer.pad_token_id
    train = list(make_splits(cohort, "last_visit", seed=0).train)
    ids = (teacher.token_ids(s) for s in train)
    if args.length:
        ids = (p[: args.length] for p in ids if len(p) >= args.length)
    prompts = sorted((p for _, p in zip(range(args.prompts), ids)), key=len)

    def one_pass(size: int) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(prompts), size):
                split.prefix(pad_tokens(prompts[start:start + size], pad, "right"))
        return time.perf_counter() - t0

    one_pass(sizes[0])  # warm-up
    best = {size: float("inf") for size in sizes}
    for _ in range(args.repeats):
        for size in sizes:
            best[size] = min(best[size], one_pass(size))
    tokens = sum(map(len, prompts))
    lengths, order = [len(p) for p in prompts], range(len(prompts))
    rows = [{"batch": size, "seconds": best[size], "prompts/s": len(prompts) / best[size],
             "padding share": padding_fraction(lengths, order, size), "x first": best[sizes[0]] / best[size]}
            for size in sizes]
    print(f"backbone {args.backbone}, {len(prompts)} prompts ({tokens / len(prompts):.0f} tokens on average), "
          f"bottom {split.cut} of {split.n_layers} blocks, torch threads {torch.get_num_threads()}, "
          f"best of {args.repeats} passes")
    print(tabulate(rows, headers="keys", floatfmt=".3f"))


if __name__ == "__main__":
    main()
