"""The ``medrec-bench`` command line: a thin face over the library functions."""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from .data import SOURCES, DataError, PreprocessOptions, load_cohort
from .data.synthetic import DEFAULT_FORMAT, DEFAULT_PATIENTS, DEFAULT_SEED, FORMATS, write_synthetic
from .evaluate import AVERAGINGS, UNCERTAINTY_METHODS
from .store import DEFAULT_DB_PATH


class _Error(click.ClickException):
    """One-line error for the user (exit status 1)."""


class _LibraryChoice(click.Choice):
    """A ``click.Choice`` over a library constant, imported only when the option is parsed or shown: the protocol
    constants live in :mod:`medrec_bench.tasks`, which imports torch, and ``list`` or ``leaderboard`` should not."""

    def __init__(self, module: str, name: str) -> None:
        self._constant = (module, name)
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        module, name = self._constant
        return tuple(getattr(importlib.import_module(module, __package__), name))

    @choices.setter
    def choices(self, _value: Any) -> None:  # click.Choice.__init__ assigns; the library constant is the truth
        pass


def _store_option(func):
    return click.option("--store", type=click.Path(path_type=Path), default=DEFAULT_DB_PATH, show_default=True,
                        help="Results database (SQLite).")(func)


def _open_store(path: Path, *, create: bool = False, create_dirs: bool = False):
    """The results store at ``path`` as a one-line error when it is not one; ``create``: a missing file is created
    (its folder too for the default path or with ``create_dirs``), else a missing file is an error."""
    from .store import ResultStore, StoreError

    if not create and not path.exists():
        raise _Error(f"no results store at {path} (run `medrec-bench run` first or pass --store)")
    try:
        return ResultStore(path, create_parents=create and (create_dirs or path == DEFAULT_DB_PATH))
    except StoreError as exc:
        raise _Error(str(exc)) from None


def _data_options(func):
    """Options shared by every command that builds a cohort (source-specific ones default to None: not given)."""
    pre = PreprocessOptions()
    opts = [
        click.option("--data", "--source", "source", type=click.Choice(SOURCES), default=SOURCES[0],
                     show_default=True, help="Dataset source."),
        click.option("--path", type=click.Path(path_type=Path), help="MIMIC folder (mimic3: CSV folder; mimic4: hosp/)."),
        click.option("--patients", type=int, default=None,
                     help=f"Synthetic cohort size (default {DEFAULT_PATIENTS})."),
        click.option("--data-seed", type=int, default=None,
                     help=f"Synthetic generator seed (default {DEFAULT_SEED})."),
        click.option("--synthetic-format", type=click.Choice(FORMATS), default=None,
                     help=f"Raw-table shape the synthetic cohort is written in and read from (default "
                          f"{DEFAULT_FORMAT})."),
        click.option("--min-visits", type=click.IntRange(min=1), default=pre.min_visits, show_default=True,
                     help="Keep patients with >= N visits."),
        click.option("--top-k-diagnoses", type=click.IntRange(min=0), default=pre.top_k_diagnoses or 0,
                     show_default=True,
                     help="0 = keep all."),
        click.option("--top-k-procedures", type=click.IntRange(min=0), default=pre.top_k_procedures or 0,
                     show_default=True,
                     help="0 = keep all."),
        click.option("--top-k-drugs", type=click.IntRange(min=0), default=pre.top_k_drugs or 0, show_default=True,
                     help="0 = keep all."),
        click.option("--require-smiles/--no-require-smiles", default=pre.require_smiles, show_default=True,
                     help="Keep only drugs with SMILES."),
        click.option("--cache", type=click.Path(path_type=Path), default=None,
                     help="Cache root (default $MEDREC_BENCH_CACHE or ~/.cache/medrec-bench)."),
        click.option("--rebuild", is_flag=True, help="Ignore the cache and rebuild."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def cohort_from_options(kw: dict[str, Any], progress: bool = True):
    """Build/load the cohort described by the shared data options (popping them from ``kw``)."""
    try:
        options = PreprocessOptions(
            min_visits=kw.pop("min_visits"),
            top_k_diagnoses=kw.pop("top_k_diagnoses") or None,
            top_k_procedures=kw.pop("top_k_procedures") or None,
            top_k_drugs=kw.pop("top_k_drugs") or None,
            require_smiles=kw.pop("require_smiles"),
        )
        return load_cohort(kw.pop("source"), kw.pop("path"), options=options, patients=kw.pop("patients"),
                           seed=kw.pop("data_seed"), synthetic_format=kw.pop("synthetic_format"),
                           cache=kw.pop("cache"), rebuild=kw.pop("rebuild"),
                           progress=progress)
    except (DataError, ValueError) as exc:
        raise _Error(str(exc)) from None


@click.group()
@click.version_option(package_name="medrec-bench")
def main() -> None:
    """medrec-bench: a benchmark for medication recommendation from EHRs."""
    warnings.formatwarning = _one_line_warning


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    """Warnings as ``warning: <message>`` lines (a cache rebuilt after a failed checksum, ...)."""
    return f"warning: {message}\n"


@main.group()
def data() -> None:
    """Build cohorts, print statistics, write synthetic raw tables."""


@data.command("build")
@_data_options
def data_build(**kw: Any) -> None:
    """Build (or load from the cache) a cohort and say where it is."""
    cohort = cohort_from_options(kw)
    stats = _stats(cohort)
    click.echo(f"{cohort.name}: {stats['patients']} patients, {stats['visits']} visits, {stats['drugs']} drugs "
               f"(fingerprint {stats['fingerprint']})")


def _stats(cohort) -> dict[str, Any]:
    from .data.stats import cohort_stats

    return cohort_stats(cohort)


@data.command("stats")
@_data_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def data_stats(fmt: str, **kw: Any) -> None:
    """Print cohort statistics (patients, visits, codes, drugs per visit, single/multi-visit split)."""
    cohort = cohort_from_options(kw, progress=fmt == "table")
    stats = _stats(cohort)
    if fmt == "json":
        click.echo(json.dumps(stats, indent=2))
        return
    click.echo(tabulate(list(stats.items()), headers=["statistic", "value"], tablefmt="github"))
    steps = cohort.meta.get("steps", [])
    if steps:
        click.echo("\nvisits after each preprocessing step:")
        click.echo(tabulate([(s["step"], s["visits"]) for s in steps], headers=["step", "visits"], tablefmt="github"))


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the raw tables into.")
@click.option("--patients", type=click.IntRange(min=1), default=DEFAULT_PATIENTS, show_default=True,
              help="Number of patients.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=DEFAULT_FORMAT, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SEED, show_default=True)
@click.option("--compress", is_flag=True, help="Write .csv.gz files.")
def data_synth(out: Path, patients: int, fmt: str, seed: int, compress: bool) -> None:
    """Write synthetic raw tables in the MIMIC-III or MIMIC-IV shape."""
    try:
        folder = write_synthetic(out, n_patients=patients, seed=seed, fmt=fmt, compress=compress, progress=True)
    except ValueError as exc:
        raise _Error(str(exc)) from None
    click.echo(f"wrote {fmt} tables to {folder}")


# --- models, runs, leaderboard -------------------------------------------------------------------------------------


def _threshold(value: str) -> Any:
    if value in ("default", "tuned"):
        return value
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter("use 'default', 'tuned' or a number in (0, 1)") from None
    if not 0.0 < number < 1.0:
        raise click.BadParameter("a numeric threshold must be in (0, 1)")
    return number


def _registry():
    from .registry import RegistryError, load_registry

    try:
        return load_registry()
    except RegistryError as exc:
        raise _Error(str(exc)) from None


def _overrides(sets: tuple[str, ...], registry) -> dict[str, dict[str, Any]]:
    from .registry import RegistryError, parse_overrides

    try:
        return parse_overrides(sets, registry)
    except RegistryError as exc:
        raise _Error(str(exc)) from None


def _seeds(text: str) -> list[int]:
    """``--seeds`` as integers, each in the range numpy and torch accept."""
    from .models import SEED_RANGE

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise _Error(f"--seeds {text!r}: expected comma-separated integers") from None
    bad = [s for s in seeds if s not in SEED_RANGE]
    if bad:
        raise _Error(f"--seeds: {bad[0]} is out of range (allowed: {SEED_RANGE.describe('seed')})")
    return seeds


def _with_required(names: list[str], registry) -> list:
    """The entries of ``names`` and, recursively, of the models they require (RegistryError for an unknown one)."""
    out, todo = [], list(names)
    while todo:
        entry = registry.get(todo.pop(0))
        if entry not in out:
            out.append(entry)
            todo += list(entry.requires)
    return out


def _apply_preset(ctx: click.Context, _param: click.Parameter, name: str | None) -> str | None:
    """Eager ``--preset``: its values become the defaults of the other options (the command line still wins)."""
    if name is not None:
        from .presets import PresetError, load_preset

        try:
            preset = load_preset(name)
        except PresetError as exc:
            raise _Error(str(exc)) from None
        ctx.default_map = {**(ctx.default_map or {}), **preset.run_defaults()}
        ctx.meta["preset"] = preset
    return name


@main.command("run")
@click.option("--preset", default=None, is_eager=True, expose_value=False, callback=_apply_preset, metavar="NAME",
              help="A paper's protocol (medrec-bench list --presets): its options unless given here.")
@click.option("--models", default=None, help="Comma-separated model names or aliases, e.g. gamenet,safedrug.")
@_data_options
@click.option("--protocol", type=_LibraryChoice(".tasks.protocols", "PROTOCOLS"), default="last_visit",
              show_default=True)
@click.option("--split-order", type=_LibraryChoice(".tasks.protocols", "SPLIT_ORDERS"), default="shuffle",
              show_default=True)
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds (split and training).")
@click.option("--set", "sets", multiple=True, metavar="MODEL.PARAM=VALUE", help="Override a registry default.")
@click.option("--threshold", default="default", show_default=True, callback=lambda c, p, v: _threshold(v),
              help="'default' (each model's), 'tuned' (best Jaccard on validation) or a number.")
@click.option("--n-boot", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Bootstrap resamples over patients.")
@click.option("--uncertainty", type=click.Choice(UNCERTAINTY_METHODS), default="bootstrap",
              show_default=True, help="CI method; the rounds options reproduce the papers' 10 rounds of 80%.")
@click.option("--averaging", type=click.Choice(AVERAGINGS), default="sample", show_default=True,
              help="Averaging shown in the table (both are stored).")
@_store_option
@click.option("--create-dirs", is_flag=True, help="Create the --store file's missing parent folders.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch intra-op CPU threads (0: torch's default). 1 is often fastest for the small models.")
@click.option("--force", is_flag=True, help="Retrain and re-run even when a cached model or a complete run exists.")
@click.option("--executor", type=_LibraryChoice(".executors", "EXECUTORS"), default="sequential", show_default=True,
              help="sequential: in this process; ray: each model x seed a Ray task (the ray extra).")
@click.option("--ray-address", default=None, metavar="auto|HOST:PORT",
              help="A running Ray cluster (with --executor ray or --sweep); default: start a local one.")
@click.option("--sweep", "sweep_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A hyper-parameter sweep file (README: Sweeps) instead of --models; runs through Ray Tune.")
def run_cmd(models: str | None, protocol: str, split_order: str, seeds: str, sets: tuple[str, ...], threshold: Any,
            n_boot: int, uncertainty: str, averaging: str, store: Path, create_dirs: bool, device: str, threads: int,
            force: bool, executor: str, ray_address: str | None, sweep_file: Path | None, **kw: Any) -> None:
    """Train and evaluate models x seeds (or the trials of a --sweep), store the results, print a comparison
    table."""
    from . import distributed
    from .executors import RayExecutor, make_executor
    from .models import check_device
    from .registry import RegistryError
    from .report import run_summary
    from .runner import EvalSettings, Runner

    if (models is None) == (sweep_file is None):
        raise _Error("give either --models or --sweep")
    registry = _registry()
    overrides = _overrides(sets, registry)
    preset = click.get_current_context().meta.get("preset")
    if preset is not None:
        from .presets import PresetError

        try:
            overrides = preset.overrides(overrides)
        except PresetError as exc:
            raise _Error(str(exc)) from None
    seed_list = _seeds(seeds)
    sweep = None
    try:  # every parameter of every model (and of the models they require) is checked before any data is loaded
        if sweep_file is not None:
            from .sweep import load_sweep

            sweep = load_sweep(sweep_file, registry, overrides)
            names = [sweep.model]
            run_executor = RayExecutor(address=ray_address)
        else:
            names = [m.strip() for m in (models or "").split(",") if m.strip()]
            run_executor = make_executor(executor, ray_address)
        if not names or not seed_list:
            raise _Error("--models and --seeds must not be empty")
        for entry in _with_required(names, registry):
            entry.resolve(overrides.get(entry.name))
        if distributed.launched():
            _check_data_parallel(_with_required(names, registry), run_executor, sweep is not None, device)
            distributed.accelerator()  # binds this process to its GPU before anything is loaded
        if not isinstance(run_executor, RayExecutor):  # under Ray the workers' machines matter, not this one
            check_device(device)
    except (RegistryError, ValueError) as exc:
        raise _Error(str(exc)) from None
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    cache, rebuild = kw["cache"], kw["rebuild"]  # every cache moves with --cache; --rebuild retrains models too
    main_process = distributed.is_main()  # under a data-parallel launch only the main process writes and prints
    with _open_store(store, create=True, create_dirs=create_dirs) as db:
        cohort = cohort_from_options(kw, progress=main_process)
        runner = Runner(cohort, db, protocol=protocol, split_order=split_order, device=device, registry=registry,
                        settings=EvalSettings(threshold, n_boot, uncertainty), force=force, cache=cache,
                        rebuild=rebuild, executor=run_executor, writes=main_process, progress=main_process,
                        echo=click.echo if main_process else lambda *_: None)
        try:
            if sweep is not None:
                from .sweep import run_sweep, sweep_table

                result = run_sweep(runner, sweep, seed_list, overrides, run_executor)
                outcomes = [o for t in result.trials for o in t.outcomes]
                click.echo(f"\nsweep {sweep.name} (id {result.sweep_id}): {sweep.model}, {len(result.trials)} "
                           f"trial(s) x {len(seed_list)} seed(s), chosen on validation PRAUC")
                click.echo(sweep_table(result, db))
            else:
                outcomes = runner.run(names, seed_list, overrides)
                if not main_process:
                    return
                summary = run_summary(db, [o.run_id for o in outcomes], averaging=averaging, n_boot=n_boot)
                click.echo(f"\n{summary.title}")
                click.echo(summary.render())
        except (ImportError, ValueError) as exc:
            raise _Error(str(exc)) from None
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise _Error(f"{len(failed)} run(s) failed; see the lines above")


def _check_data_parallel(entries: list, executor: Any, sweep: bool, device: str) -> None:
    """ValueError unless a data-parallel launch (``accelerate launch``) runs only models tagged ``data_parallel``,
    sequentially, on ``cuda`` or ``cpu`` (one device per process)."""
    from .executors import Sequential

    plain = [e.name for e in entries if "data_parallel" not in e.tags]
    if plain:
        raise ValueError(f"under accelerate launch only data-parallel models run (tag data_parallel); {plain[0]} is "
                         f"not one: run it without accelerate launch")
    if sweep or not isinstance(executor, Sequential):
        raise ValueError("under accelerate launch: no --sweep and no --executor ray")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"under accelerate launch use --device cuda (each process gets its GPU), not {device}")


@main.command("list")
@click.option("--tag", default=None, help="Only models with this tag.")
@click.option("--params", "model", default=None, metavar="MODEL",
              help="Print MODEL's resolved parameters and which layer (class, registry, --set) set each.")
@click.option("--set", "sets", multiple=True, metavar="MODEL.PARAM=VALUE",
              help="An override to resolve (with --params).")
@click.option("--presets", is_flag=True, help="List the papers' presets (run --preset NAME) instead of the models.")
def list_cmd(tag: str | None, model: str | None, sets: tuple[str, ...], presets: bool) -> None:
    """List registered models with aliases, tags and where they come from, one model's parameters, or the presets."""
    from .registry import RegistryError

    if presets:
        from .presets import load_preset, preset_names

        rows = [(p.name, p.data.get("source", ""), p.protocol, p.models, p.description)
                for p in map(load_preset, preset_names())]
        click.echo(tabulate(rows, headers=["preset", "data", "protocol", "models", "description"], tablefmt="github"))
        return
    registry = _registry()
    if model is None:
        if sets:
            raise _Error("--set needs --params MODEL")
        rows = [(e.name, ", ".join(e.aliases), ", ".join(e.tags), e.source, e.class_path)
                for e in registry if tag is None or tag in e.tags]
        click.echo(tabulate(rows, headers=["model", "aliases", "tags", "source", "class"], tablefmt="github"))
        return
    if tag is not None:
        raise _Error("--tag and --params cannot be combined")
    overrides = _overrides(sets, registry)
    try:
        entry = registry.get(model)
        resolved = entry.resolve(overrides.get(entry.name))
    except RegistryError as exc:
        raise _Error(str(exc)) from None
    other = sorted(set(overrides) - {entry.name})
    if other:
        raise _Error(f"--set for {other[0]!r}, but --params lists {entry.name!r}")
    click.echo(f"{entry.name} ({entry.class_path}, {entry.source})")
    click.echo(tabulate([(p.name, repr(p.value), p.layer) for p in resolved.values()],
                        headers=["parameter", "value", "set by"], tablefmt="github"))


@main.command("show")
@click.argument("run_id", type=int)
@_store_option
def show_cmd(run_id: int, store: Path) -> None:
    """Show one run: its configuration, the model's diagnostics and its metrics."""
    with _open_store(store) as db:
        run = db.get_run(run_id)
        if run is None:
            raise _Error(f"no run {run_id} in {store}")
        metrics = db.metrics_for(run_id)
    fields = {k: v for k, v in run.__dict__.items() if k not in ("run_key", "diagnostics")}
    click.echo(tabulate(list(fields.items()), headers=["field", "value"], tablefmt="github"))
    diagnostics = json.loads(run.diagnostics)
    if diagnostics:
        click.echo()
        click.echo(tabulate(list(diagnostics.items()), headers=["diagnostic", "value"], tablefmt="github",
                            disable_numparse=True))
    if metrics:
        click.echo()
        click.echo(tabulate([(m.group, m.averaging, m.metric, f"{m.mean:.4f}", f"{m.ci_low:.4f}", f"{m.ci_high:.4f}",
                              f"{m.std:.4f}", m.n_samples, m.n_patients) for m in metrics],
                            headers=["group", "averaging", "metric", "mean", "ci_low", "ci_high", "std", "samples",
                                     "patients"], tablefmt="github"))


@main.command("leaderboard")
@_store_option
@click.option("--data", default=None, help="Only this cohort (its name, e.g. synthetic-2000).")
@click.option("--protocol", default=None, help="Only this protocol.")
@click.option("--models", default=None, help="Only these comma-separated model names or aliases.")
@click.option("--averaging", type=click.Choice(AVERAGINGS), default="sample", show_default=True)
@click.option("--group", "groups", default=None, metavar="GROUPS",
              help="Add a table of these comma-separated groups, e.g. visits_1,visits_2,visits_3,visits_4-5,visits_6+.")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "csv", "json"]), default="md", show_default=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write leaderboard.<format> into this folder instead of printing it.")
def leaderboard_cmd(store: Path, data: str | None, protocol: str | None, models: str | None, averaging: str,
                    groups: str | None, fmt: str, out: Path | None) -> None:
    """One table per cohort x protocol from the store: models sorted by overall Jaccard, single- and multi-visit
    columns, cost, the ground truth's reference row."""
    from .leaderboard import FORMATS, build_boards, parse_groups, render

    try:
        group_names = parse_groups(groups)
    except ValueError as exc:
        raise _Error(str(exc)) from None
    names = None if models is None else [_model_name(m.strip()) for m in models.split(",") if m.strip()]
    with _open_store(store) as db:
        boards = build_boards(db, data=data, protocol=protocol, averaging=averaging, models=names)
    try:
        text = render(boards, fmt, group_names)
    except ImportError as exc:
        raise _Error(str(exc)) from None
    if out is None:
        click.echo(text, nl=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"leaderboard.{FORMATS[fmt]}"
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path} ({len(boards)} table(s))")


def _model_name(name: str) -> str:
    """The registered name of ``name`` (an alias resolves); a name the registry does not know stays as stored."""
    from .registry import RegistryError

    try:
        return _registry().get(name).name
    except RegistryError:
        return name


@main.command("rescore")
@click.argument("run_id", type=int)
@_store_option
@click.option("--threshold", type=float, default=None, help="Decision threshold (default: the run's).")
@click.option("--averaging", type=click.Choice(AVERAGINGS), default="sample", show_default=True)
@click.option("--n-boot", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--uncertainty", type=click.Choice(UNCERTAINTY_METHODS), default="bootstrap")
def rescore_cmd(run_id: int, store: Path, threshold: float | None, averaging: str, n_boot: int,
                uncertainty: str) -> None:
    """Re-evaluate a run's saved predictions without retraining."""
    from .report import LABELS
    from .runner import rescore

    with _open_store(store) as db:
        try:
            results = rescore(db, run_id, threshold=threshold, n_boot=n_boot, uncertainty=uncertainty)
        except ValueError as exc:
            raise _Error(str(exc)) from None
    rows = [(r.group, LABELS.get(r.metric, r.metric), f"{r.mean:.4f}", f"[{r.ci_low:.4f}, {r.ci_high:.4f}]",
             r.n_samples) for r in results if r.averaging == averaging]
    click.echo(tabulate(rows, headers=["group", "metric", "mean", "95% CI", "samples"], tablefmt="github"))


@main.group("runs")
def runs_group() -> None:
    """Move results between stores: an aggregates-only archive of complete runs (JSON lines, safe to commit)."""


@runs_group.command("export")
@_store_option
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Archive file to write (replaced), e.g. results/runs.jsonl.")
@click.option("--data", default=None, help="Only this cohort (its name, e.g. synthetic-2000).")
@click.option("--protocol", default=None, help="Only this protocol.")
def runs_export_cmd(store: Path, out: Path, data: str | None, protocol: str | None) -> None:
    """Write the store's complete runs and their metrics (no predictions, no patient rows) to an archive."""
    from .archive import export_runs

    with _open_store(store) as db:
        n = export_runs(db, out, data=data, protocol=protocol)
    click.echo(f"wrote {out} ({n} run(s))")


@runs_group.command("import")
@click.argument("archive", type=click.Path(path_type=Path, dir_okay=False))
@_store_option
@click.option("--create-dirs", is_flag=True, help="Create the --store file's missing parent folders.")
def runs_import_cmd(archive: Path, store: Path, create_dirs: bool) -> None:
    """Add an archive's runs to the store (runs it holds already are kept); `run` then skips them."""
    from .archive import ArchiveError, import_runs

    with _open_store(store, create=True, create_dirs=create_dirs) as db:
        try:
            added, present = import_runs(db, archive)
        except ArchiveError as exc:
            raise _Error(str(exc)) from None
    click.echo(f"imported {added} run(s) into {store} ({present} already there)")


@runs_group.command("delete")
@click.argument("run_ids", nargs=-1, type=int)
@_store_option
@click.option("--model", default=None,
              help="A model name, or one configuration as the leaderboard labels it, e.g. 'leader_t[1a2b3c4d]'.")
@click.option("--data", default=None, help="Only this cohort (its name, e.g. synthetic-2000).")
@click.option("--protocol", default=None, help="Only this protocol.")
@click.option("--dry-run", is_flag=True, help="List the runs that would be deleted; delete nothing.")
def runs_delete_cmd(run_ids: tuple[int, ...], store: Path, model: str | None, data: str | None,
                    protocol: str | None, dry_run: bool) -> None:
    """Delete runs (the given RUN_IDS, or all that match the filters) with their metrics and prediction files."""
    from .pruning import delete_runs, select_runs
    from .report import run_config

    with _open_store(store) as db:
        try:
            runs = select_runs(db, ids=run_ids, model=model, data=data, protocol=protocol)
        except ValueError as exc:
            raise _Error(str(exc)) from None
        for run in runs:
            click.echo(f"{'would delete' if dry_run else 'deleting'} run {run.id}: {run.model}[{run_config(run)}] "
                       f"{run.data} {run.protocol} seed {run.seed} ({run.status})")
        n = len(runs) if dry_run else delete_runs(db, runs)
    click.echo(f"{'would delete' if dry_run else 'deleted'} {n} run(s) from {store}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
