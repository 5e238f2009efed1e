"""Benchmark: ``llm_zero_shot`` scoring with the shared prompt KV cache vs recomputing prompt + candidate.

Usage: ``python bench/llm_zero_shot.py [--backbone smollm2-135m] [--patients 2] [--max-length 512]
[--max-history 3] [--min-history 1] [--candidate-batch-size 32] [--cohort-patients 300] [--threads 0]``

Both paths score every drug name of the vocabulary for the same test patients of the embedded synthetic cohort
(``last_visit`` protocol; the first ``--patients`` test patients with at least ``--min-history`` previous visits, so
the prompt has some history as in LEADER's multi-visit setting; training patients fill in if the test split has too
few), in the same process, after one untimed warm-up patient (validation) on the cached path. The script
prints wall-clock seconds (``time.perf_counter``), patients/s of each path, the speed-up, the prompt and candidate
token counts, and the largest absolute score difference between the paths (they must agree to 1e-4).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

try:
    import medrec_bench  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.llm_zero_shot import LLMZeroShot  # noqa: E402
from medrec_bench.data import load_cohort  # noqa: E402
from medrec_bench.models import Context  # noqa: E402
from medrec_bench.tasks import make_splits  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--patients", type=int, default=2, help="timed test patients")
    parser.add_argument("--max-length", type=int, default=512, help="prompt + candidate tokens")
    parser.add_argument("--max-history", type=int, default=3)
    parser.add_argument("--min-history", type=int, default=1, help="previous visits a timed patient needs")
    parser.add_argument("--candidate-batch-size", type=int, default=32)
    parser.add_argument("--cohort-patients", type=int, default=300, help="size of the synthetic cohort")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cohort = load_cohort("synthetic", patients=args.cohort_patients)
    splits = make_splits(cohort, "last_visit", seed=0)
    # test patients first; training patients only as a fallback (zero-shot learns nothing from them but k)
    timed = [s for s in list(splits.test) + list(splits.train) if len(s.history) >= args.min_history]
    timed = timed[: args.patients]
    if len(timed) < args.patients:
        raise SystemExit("not enough patients with that history: raise --cohort-patients or lower --min-history")
    warmup = splits.val[0]
    ctx = Context.from_cohort(cohort, seed=0)
    model = LLMZeroShot(backbone=args.backbone, max_length=args.max_length, max_history=args.max_history,
                        candidate_batch_size=args.candidate_batch_size).fit(list(splits.train), [], ctx)
    model.scores([warmup])

    results = {}
    for cached in (True, False):
        model.use_prompt_cache = cached
        start = time.perf_counter()
        results[cached] = (model.scores(timed), time.perf_counter() - start)
    (with_cache, t_cached), (without, t_uncached) = results[True], results[False]
    diff = float(np.abs(with_cache - without).max())

    prompt_tokens = [len(model.prompt_ids(s)) for s in timed]
    cand_tokens = [len(c) for c in model.candidates]
    print(f"backbone {args.backbone}, {len(timed)} patients, {len(cand_tokens)} candidate drugs "
          f"(tokens: mean {np.mean(cand_tokens):.1f}, max {max(cand_tokens)}), prompt tokens mean "
          f"{np.mean(prompt_tokens):.0f} (max {max(prompt_tokens)}), candidate batch {args.candidate_batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    rows = [["prompt KV cache (use_prompt_cache=True)", f"{t_cached:.2f}", f"{len(timed) / t_cached:.3f}", "1.0"],
            ["recompute prompt (use_prompt_cache=False)", f"{t_uncached:.2f}", f"{len(timed) / t_uncached:.3f}",
             f"{t_cached / t_uncached:.3f}"]]
    print(tabulate(rows, headers=["path", "seconds", "patients/s", "speed vs cached"]))
    print(f"speed-up of the prompt cache: {t_uncached / t_cached:.1f}x; max |score difference| {diff:.2e}")
    if diff > 1e-4:
        print("ERROR: the two paths disagree by more than 1e-4", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
