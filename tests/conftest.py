"""Shared test helpers. ``shared_data()`` is the one place that finds ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Small models run faster on one intra-op thread, and the suite runs beside other processes on 2 cores.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The shared data folder: ``$MEDREC_SHARED_DATA`` or ``<repo>/../shared/data``. Fails the test, saying where it
    was looked for, when it is missing (CI always has it)."""
    env = os.environ.get("MEDREC_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not (path / "mimic-iii-demo-1.4").is_dir():
        pytest.fail(f"shared data not found at {path}: put the project's shared/ folder beside the repository "
                    f"(../shared/data) or set MEDREC_SHARED_DATA", pytrace=False)
    return path


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """The MIMIC-III demo folder (100 real patients, ODbL)."""
    return shared_data() / "mimic-iii-demo-1.4"


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """A per-session cache root so tests never touch the user's cache."""
    return tmp_path_factory.mktemp("medrec-cache")


@pytest.fixture(scope="session")
def demo_cohort(demo_dir, cache_root):
    from medrec_bench.data import load_cohort

    return load_cohort("mimic3", demo_dir, cache=cache_root)


@pytest.fixture(scope="session")
def synthetic_cohort(cache_root):
    """The embedded synthetic cohort at its default size (2,000 patients)."""
    from medrec_bench.data import load_cohort

    return load_cohort("synthetic", cache=cache_root)
