"""Build or load a cohort: ``load_cohort("synthetic")``, ``load_cohort("mimic3", path=...)``, ``load_cohort("mimic4", ...)``.

The built cohort is cached under ``<cache>/cohorts/<source>-<fingerprint>`` (the fingerprint covers the input files'
names/sizes/mtimes or the synthetic generator's arguments, the options, the recipe version and the vendored tables),
so a second build with the same inputs is a parquet read.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from ..paths import cache_dir as default_cache_dir
from .cache import atomic_folder, file_identity, fingerprint
from .cohort import META_FILE, Cohort
from .errors import DataError
from .mimic3 import load_mimic3
from .mimic4 import hosp_folder, load_mimic4
from .preprocess import RECIPE_VERSION, PreprocessOptions, build_visits
from .raw import RawTables

SOURCES = ("synthetic", "mimic3", "mimic4")
SYNTHETIC_VERSION = 1


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


def build_from_raw(raw: RawTables, name: str, fp: str, options: PreprocessOptions) -> Cohort:
    visits, vocab, stats = build_visits(raw, options)
    meta = {"source": raw.source, "options": options.to_dict(), **stats}
    return Cohort.from_visits(name, fp, visits, vocab, meta)


def load_cohort(
    source: Literal["synthetic", "mimic3", "mimic4"] = "synthetic",
    path: str | Path | None = None,
    *,
    options: PreprocessOptions | dict[str, Any] | None = None,
    patients: int | None = None,
    seed: int = 0,
    synthetic_format: Literal["mimic3", "mimic4"] = "mimic3",
    cache: str | Path | None = None,
    rebuild: bool = False,
    progress: bool = False,
) -> Cohort:
    """Build (or read from the cache) the cohort of ``source``.

    ``path``: the MIMIC-III folder / MIMIC-IV ``hosp`` folder (or its parent); unused for ``synthetic``.
    ``patients``, ``seed``, ``synthetic_format``: the synthetic generator's size, seed and raw-table shape.
    ``cache``: cache root (default ``$MEDREC_BENCH_CACHE`` or ``~/.cache/medrec-bench``); ``rebuild`` ignores it.
    """
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r} (choose from {', '.join(SOURCES)})")
    if isinstance(options, dict):
        options = PreprocessOptions.from_dict(options)
    options = options or PreprocessOptions()
    if source != "synthetic" and path is None:
        raise DataError(f"--path is required for source {source!r} (the folder of its CSV tables)")
    folder = Path(path).expanduser() if path is not None else None
    synthetic: dict[str, Any] = {}
    if source == "synthetic":
        from .synthetic import DEFAULT_PATIENTS

        synthetic = {"patients": patients or DEFAULT_PATIENTS, "seed": seed, "format": synthetic_format}
    fp = cohort_fingerprint(source, folder, options, synthetic)
    target = Path(cache or default_cache_dir()) / "cohorts" / f"{source}-{fp[:16]}"
    if (target / META_FILE).exists() and not rebuild:
        return Cohort.load(target)

    bar = tqdm(total=3, desc=f"building {source} cohort", disable=not progress, unit="step")

    def write(tmp: Path) -> None:
        if source == "synthetic":
            from .synthetic import write_synthetic

            with tempfile.TemporaryDirectory(prefix="medrec-synth-") as raw_dir:
                bar.set_postfix_str("generating raw tables")
                written = write_synthetic(raw_dir, n_patients=synthetic["patients"], seed=seed,
                                          fmt=synthetic_format, progress=progress)
                bar.update()
                raw = _loader(synthetic_format)(written)
        else:
            bar.set_postfix_str("reading tables")
            raw = _loader(source)(folder)
            bar.update()
        raw.source = source
        bar.set_postfix_str("preprocessing")
        cohort = build_from_raw(raw, source, fp, options)
        bar.update()
        bar.set_postfix_str("saving")
        cohort.save(tmp)
        bar.update()

    if rebuild and target.exists():
        import shutil

        shutil.rmtree(target)
    try:
        atomic_folder(target, write)
    finally:
        bar.close()
    return Cohort.load(target)
