"""Build or load a cohort: ``load_cohort("synthetic")``, ``load_cohort("mimic3", path=...)``, ``load_cohort("mimic4", ...)``.

The built cohort is cached under ``<cache>/cohorts/<source>-<source fingerprint>`` (:func:`cohort_fingerprint`: the
input files' names/sizes/mtimes or the synthetic generator's arguments, the options, the recipe version and the
vendored tables), so a second build with the same inputs is a parquet read. The cohort's own ``fingerprint``, which
keys runs and trained models, is its content (:func:`content_fingerprint`) for the MIMIC sources, so that the same
tables copied to another machine (new mtimes) give the same cohort name and run keys; for the synthetic source the
generator's arguments determine the content and the source fingerprint serves. Its name (:func:`cohort_name`, the
leaderboard heading) says the source and what distinguishes it: ``synthetic-2000``, ``synthetic-500-seed3``,
``mimic3-1a2b3c4d``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from numbers import Integral
from pathlib import Path
from typing import Any, Literal

import polars as pl
from tqdm.auto import tqdm

from ..paths import cache_dir as default_cache_dir
from .cache import CacheRebuiltWarning, atomic_folder, discard_if_corrupt, file_identity, fingerprint
from .cohort import META_FILE, Cohort
from .errors import DataError
from .mimic3 import load_mimic3
from .mimic4 import hosp_folder, load_mimic4
from .preprocess import RECIPE_VERSION, PreprocessOptions, build_visits
from .raw import RawTables
from .schema import Vocabularies
from .synthetic import DEFAULT_FORMAT, DEFAULT_PATIENTS, DEFAULT_SEED, FORMATS, write_synthetic

SOURCES = ("synthetic", "mimic3", "mimic4")
SYNTHETIC_VERSION = 1
#: load_cohort arguments that only the synthetic source takes, with their CLI options
SYNTHETIC_ONLY = {"patients": "--patients", "seed": "--data-seed", "synthetic_format": "--synthetic-format"}


def _loader(source: str):
    return {"mimic3": load_mimic3, "mimic4": load_mimic4}[source]


def cohort_fingerprint(source: str, path: Path | None, options: PreprocessOptions,
                       synthetic: dict[str, Any]) -> str:
    payload: dict[str, Any] = {"recipe": RECIPE_VERSION, "source": source, "options": options.to_dict()}
    if source == "synthetic":
        payload["synthetic"] = {**synthetic, "version": SYNTHETIC_VERSION}
    else:
        assert path is not None
        folder = hosp_folder(path) if source == "mimic4" else path
        if not folder.is_dir():
            raise DataError(f"{source} folder {folder} does not exist")
        payload["files"] = file_identity(folder)
    return fingerprint(payload)


def content_fingerprint(visits: pl.DataFrame, vocab: Vocabularies, options: PreprocessOptions) -> str:
    """sha256 hex of what a built cohort holds: every visit row (in order, as JSON), the vocabularies, the options,
    the recipe version and the vendored tables. Independent of the input files' paths and modification times."""
    digest = hashlib.sha256(fingerprint({"recipe": RECIPE_VERSION, "options": options.to_dict(),
                                         "vocab": vocab.to_json(), "columns": visits.columns}).encode())
    for row in visits.iter_rows():
        digest.update(json.dumps(row, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def cohort_name(source: str, fp: str, options: PreprocessOptions, synthetic: dict[str, Any]) -> str:
    """The cohort's name: its source plus what distinguishes it from other cohorts of that source.

    Synthetic: ``synthetic-<patients>``, then ``-seed<seed>`` / ``-<format>`` where those differ from the defaults
    and ``-<fingerprint[:8]>`` where the preprocessing options do. MIMIC: ``<source>-<fingerprint[:8]>`` (``fp``
    the cohort's content fingerprint, which covers the options).
    """
    if source != "synthetic":
        return f"{source}-{fp[:8]}"
    name = f"synthetic-{synthetic['patients']}"
    if synthetic["seed"] != DEFAULT_SEED:
        name += f"-seed{synthetic['seed']}"
    if synthetic["format"] != DEFAULT_FORMAT:
        name += f"-{synthetic['format']}"
    if options != PreprocessOptions():
        name += f"-{fp[:8]}"
    return name


def _synthetic_arguments(source: str, path: str | Path | None, patients: int | None, seed: int | None,
                         synthetic_format: str | None) -> dict[str, Any]:
    """Check the source-specific arguments (None = not given); the synthetic generator's, defaults filled in."""
    given = {"patients": patients, "seed": seed, "synthetic_format": synthetic_format}
    if source != "synthetic":
        for arg, value in given.items():
            if value is not None:
                raise DataError(f"{SYNTHETIC_ONLY[arg]} ({arg}=) is only for --data synthetic, not {source}")
        return {}
    if path is not None:
        raise DataError("--path (path=) is only for --data mimic3 / mimic4; the synthetic source generates its tables")
    patients = DEFAULT_PATIENTS if patients is None else patients
    seed = DEFAULT_SEED if seed is None else seed
    synthetic_format = DEFAULT_FORMAT if synthetic_format is None else synthetic_format
    if isinstance(patients, bool) or not isinstance(patients, Integral) or patients < 1:
        raise DataError(f"--patients (patients=) must be an integer >= 1, got {patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise DataError(f"--data-seed (seed=) must be a non-negative integer, got {seed!r}")
    if synthetic_format not in FORMATS:
        raise DataError(f"--synthetic-format (synthetic_format=) must be one of {', '.join(FORMATS)}, "
                        f"got {synthetic_format!r}")
    return {"patients": int(patients), "seed": int(seed), "format": synthetic_format}


def build_from_raw(raw: RawTables, name: str, fp: str, options: PreprocessOptions) -> Cohort:
    """The cohort of ``raw`` under ``options``; ``fp`` its source fingerprint (the fingerprint too for the synthetic
    source, else the content's)."""
    visits, vocab, stats = build_visits(raw, options)
    meta = {"source": raw.source, "options": options.to_dict(), **stats}
    content = fp if raw.source == "synthetic" else content_fingerprint(visits, vocab, options)
    return Cohort.from_visits(name, content, visits, vocab, meta, source_fingerprint=fp)


def load_cohort(
    source: Literal["synthetic", "mimic3", "mimic4"] = "synthetic",
    path: str | Path | None = None,
    *,
    options: PreprocessOptions | dict[str, Any] | None = None,
    patients: int | None = None,
    seed: int | None = None,
    synthetic_format: Literal["mimic3", "mimic4"] | None = None,
    cache: str | Path | None = None,
    rebuild: bool = False,
    progress: bool = False,
) -> Cohort:
    """Build (or read from the cache) the cohort of ``source``.

    ``path``: the MIMIC-III folder / MIMIC-IV ``hosp`` folder (or its parent); an error for ``synthetic``.
    ``patients``, ``seed``, ``synthetic_format``: the synthetic generator's size, seed and raw-table shape (None:
    the defaults, 2000 patients, seed 0, ``mimic3``); an error for the MIMIC sources, which they would not change.
    ``cache``: cache root (default ``$MEDREC_BENCH_CACHE`` or ``~/.cache/medrec-bench``); ``rebuild`` ignores it.
    """
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r} (choose from {', '.join(SOURCES)})")
    if isinstance(options, dict):
        options = PreprocessOptions.from_dict(options)
    options = options or PreprocessOptions()
    if source != "synthetic" and path is None:
        raise DataError(f"--path is required for source {source!r} (the folder of its CSV tables)")
    synthetic = _synthetic_arguments(source, path, patients, seed, synthetic_format)
    folder = Path(path).expanduser() if path is not None else None
    fp = cohort_fingerprint(source, folder, options, synthetic)
    target = Path(cache or default_cache_dir()) / "cohorts" / f"{source}-{fp[:16]}"
    if (target / META_FILE).exists() and not rebuild:
        cached = _verified_cohort(target, fp)
        if cached is not None:
            return _named(cached, cohort_name(source, cached.fingerprint, options, synthetic))

    bar = tqdm(total=3, desc=f"building {source} cohort", disable=not progress, unit="step")

    def write(tmp: Path) -> None:
        raw_dir = tmp / ".raw"  # inside the temporary cache folder, so a killed build leaves nothing elsewhere
        if source == "synthetic":
            bar.set_postfix_str("generating raw tables")
            written = write_synthetic(raw_dir, n_patients=synthetic["patients"], seed=synthetic["seed"],
                                      fmt=synthetic["format"], progress=progress)
            bar.update()
            raw = _loader(synthetic["format"])(written)
        else:
            bar.set_postfix_str("reading tables")
            raw = _loader(source)(folder)
            bar.update()
        raw.source = source
        bar.set_postfix_str("preprocessing")
        cohort = build_from_raw(raw, source, fp, options)
        cohort.name = cohort_name(source, cohort.fingerprint, options, synthetic)
        shutil.rmtree(raw_dir, ignore_errors=True)
        bar.update()
        bar.set_postfix_str("saving")
        cohort.save(tmp)
        bar.update()

    if rebuild and target.exists():
        shutil.rmtree(target)
    try:
        atomic_folder(target, write)
    finally:
        bar.close()
    cohort = Cohort.load(target)
    return _named(cohort, cohort_name(source, cohort.fingerprint, options, synthetic))


def _verified_cohort(folder: Path, fp: str) -> Cohort | None:
    """The cached cohort of ``folder`` when its files match their checksums and it was built from the inputs of source
    fingerprint ``fp`` (caches written before cohorts kept it are rebuilt); else None, after one
    :class:`~medrec_bench.data.cache.CacheRebuiltWarning` and removing the folder."""
    if discard_if_corrupt(folder, "cohort"):
        return None
    cohort = Cohort.load(folder)
    recorded = cohort.source_fingerprint
    if not recorded and cohort.meta.get("source") == "synthetic":
        recorded = cohort.fingerprint  # written before cohorts kept it: for the synthetic source it is the same
    if recorded != fp:
        built_from = recorded[:16] or "inputs it does not record"
        warnings.warn(f"cached cohort at {folder} was built from {built_from}, not {fp[:16]}; "
                      f"rebuilding it", CacheRebuiltWarning, stacklevel=3)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return cohort


def _named(cohort: Cohort, name: str) -> Cohort:
    """A cached cohort under its current name (caches written before cohort names named only the source)."""
    cohort.name = name
    return cohort
