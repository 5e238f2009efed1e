"""Where medrec-bench keeps its caches: ``$MEDREC_BENCH_CACHE`` or ``~/.cache/medrec-bench``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root (built cohorts, trained models, converted backbones)."""
    env = os.environ.get("MEDREC_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medrec-bench"
