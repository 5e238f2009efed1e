"""Preprocessing cost at 1x, 4x, 16x scale of synthetic MIMIC-III-shaped raw tables.

Each scale runs in a fresh subprocess (so its peak RSS is its own): write the raw CSVs, then load + preprocess them
into a cohort exactly as ``medrec-bench data build --data mimic3`` does (no cache). 16x of the default base
(2,900 patients) is about MIMIC-III size (46k patients). Prints seconds, peak RSS and seconds per million
prescription rows, whose flatness across scales shows the cost is linear in rows.

    python bench/preprocess.py [--base 2900] [--scales 1,4,16]
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

from tabulate import tabulate


def one_scale(patients: int) -> dict:
    from medrec_bench.data.build import build_from_raw
    from medrec_bench.data.mimic3 import load_mimic3
    from medrec_bench.data.preprocess import PreprocessOptions
    from medrec_bench.data.synthetic import write_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        folder = write_synthetic(tmp, n_patients=patients, seed=0, fmt="mimic3")
        generated = time.perf_counter() - start
        with open(Path(folder) / "PRESCRIPTIONS.csv") as fh:
            rows = sum(1 for _ in fh) - 1
        start = time.perf_counter()
        cohort = build_from_raw(load_mimic3(folder), "mimic3", "bench", PreprocessOptions())
        built = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"patients": patients, "prescription_rows": rows, "visits": cohort.visits.height,
            "generate_s": generated, "preprocess_s": built, "peak_rss_mb": rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=2900, help="patients at 1x")
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one scale and print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_scale(args.one)))
        return
    rows = []
    for scale in [int(s) for s in args.scales.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--one", str(args.base * scale)], capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        per_m = r["preprocess_s"] / (r["prescription_rows"] / 1e6)
        rows.append([f"{scale}x", r["patients"], r["prescription_rows"], r["visits"], f"{r['generate_s']:.1f}",
                     f"{r['preprocess_s']:.1f}", f"{per_m:.2f}", f"{r['peak_rss_mb']:.0f}"])
        print(f"{scale}x done", file=sys.stderr)
    print(tabulate(rows, headers=["scale", "patients", "prescription rows", "visits", "generate s",
                                  "load+preprocess s", "s per 1M rows", "peak RSS MB"], tablefmt="github"))
    print("target: MIMIC-III scale (~4M prescription rows) end to end < 60 s and < 4 GB on 2 cores; "
          "'s per 1M rows' flat across scales = linear cost")


if __name__ == "__main__":
    main()
