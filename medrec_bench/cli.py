"""The ``medrec-bench`` command line: a thin face over the library functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
from tabulate import tabulate

from .data import SOURCES, DataError, PreprocessOptions, load_cohort
from .data.synthetic import DEFAULT_FORMAT, DEFAULT_PATIENTS, DEFAULT_SEED, FORMATS, write_synthetic


class _Error(click.ClickException):
    """One-line error for the user (exit status 1)."""


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
        click.option("--min-visits", type=int, default=pre.min_visits, show_default=True,
                     help="Keep patients with >= N visits."),
        click.option("--top-k-diagnoses", type=int, default=pre.top_k_diagnoses or 0, show_default=True,
                     help="0 = keep all."),
        click.option("--top-k-procedures", type=int, default=pre.top_k_procedures or 0, show_default=True,
                     help="0 = keep all."),
        click.option("--top-k-drugs", type=int, default=pre.top_k_drugs or 0, show_default=True, help="0 = keep all."),
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


def parse_overrides(values: tuple[str, ...], registry) -> dict[str, dict[str, Any]]:
    """``MODEL.PARAM=VALUE`` strings -> {canonical model name: {param: value}} (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in values:
        target, eq, raw = item.partition("=")
        model, dot, param = target.partition(".")
        if not eq or not dot or not model or not param:
            raise _Error(f"--set {item!r}: expected MODEL.PARAM=VALUE, e.g. safedrug.epochs=2")
        try:
            name = registry.get(model).name
        except ValueError as exc:
            raise _Error(str(exc)) from None
        out.setdefault(name, {})[param.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


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


@main.command("run")
@click.option("--models", required=True, help="Comma-separated model names or aliases, e.g. leader_s,safedrug.")
@_data_options
@click.option("--protocol", type=click.Choice(["visit", "last_visit"]), default="last_visit", show_default=True)
@click.option("--split-order", type=click.Choice(["shuffle", "original"]), default="shuffle", show_default=True)
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds (split and training).")
@click.option("--set", "sets", multiple=True, metavar="MODEL.PARAM=VALUE", help="Override a registry default.")
@click.option("--threshold", default="default", show_default=True, callback=lambda c, p, v: _threshold(v),
              help="'default' (each model's), 'tuned' (best Jaccard on validation) or a number.")
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap resamples over patients.")
@click.option("--uncertainty", type=click.Choice(["bootstrap", "rounds_with_replacement",
                                                  "rounds_without_replacement"]), default="bootstrap",
              show_default=True, help="CI method; the rounds options reproduce the papers' 10 rounds of 80%.")
@click.option("--averaging", type=click.Choice(["sample", "patient"]), default="sample", show_default=True,
              help="Averaging shown in the table (both are stored).")
@click.option("--store", type=click.Path(path_type=Path), default=Path("results/medrec.db"), show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, default=0, show_default=True,
              help="torch intra-op CPU threads (0: torch's default). 1 is often fastest for the small models.")
def run_cmd(models: str, protocol: str, split_order: str, seeds: str, sets: tuple[str, ...], threshold: Any,
            n_boot: int, uncertainty: str, averaging: str, store: Path, device: str, threads: int,
            **kw: Any) -> None:
    """Train and evaluate models x seeds, store the results, print a comparison table."""
    from .report import comparison_table, pvalues_vs_best
    from .runner import EvalSettings, Runner
    from .store import ResultStore, params_hash

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    registry = _registry()
    overrides = parse_overrides(sets, registry)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise _Error(f"--seeds {seeds!r}: expected comma-separated integers") from None
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names or not seed_list:
        raise _Error("--models and --seeds must not be empty")
    cohort = cohort_from_options(kw)
    with ResultStore(store) as db:
        runner = Runner(cohort, db, protocol=protocol, split_order=split_order, device=device, registry=registry,
                        settings=EvalSettings(threshold, n_boot, uncertainty), echo=click.echo)
        try:
            outcomes = runner.run(names, seed_list, overrides)
        except ValueError as exc:
            raise _Error(str(exc)) from None
        hashes = {}
        for name in names:
            entry = registry.get(name)
            hashes[entry.name] = params_hash(entry.resolved_params(overrides.get(entry.name, {})), cohort.fingerprint)
        records = [r for r in db.leaderboard_records(data=cohort.name, protocol=protocol, group="overall",
                                                     averaging=averaging)
                   if hashes.get(r["model"]) == r["params_hash"]]
        files = {}
        for o in outcomes:
            run = db.get_run(o.run_id) if o.run_id is not None else None
            if o.seed == seed_list[0] and run is not None and run.status == "complete" and run.predictions_path:
                if Path(run.predictions_path).exists():
                    files[o.model] = (Path(run.predictions_path), run.threshold)
        pvals = pvalues_vs_best(files, n_boot=n_boot, seed=seed_list[0])
        times = {}
        for o in outcomes:
            if o.train_seconds is not None:
                times.setdefault(o.model, []).append(o.train_seconds)
    extra = {m: {"train s": f"{np.mean(t):.1f}"} for m, t in times.items()}
    for m, p in pvals.items():
        extra.setdefault(m, {})["p vs best (Jaccard)"] = f"{p:.3f}"
    click.echo(f"\n{cohort.name} / {protocol} / overall / {averaging} averaging / {len(seed_list)} seed(s); "
               f"mean ± half 95% CI; best marked **; DDI rate: lower is better")
    click.echo(comparison_table(records, extra=extra))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise _Error(f"{len(failed)} run(s) failed; see the lines above")


@main.command("list")
@click.option("--tag", default=None, help="Only models with this tag.")
def list_cmd(tag: str | None) -> None:
    """List registered models with aliases, tags and where they come from."""
    rows = [(e.name, ", ".join(e.aliases), ", ".join(e.tags), e.source, e.class_path)
            for e in _registry() if tag is None or tag in e.tags]
    click.echo(tabulate(rows, headers=["model", "aliases", "tags", "source", "class"], tablefmt="github"))


@main.command("show")
@click.argument("run_id", type=int)
@click.option("--store", type=click.Path(path_type=Path), default=Path("results/medrec.db"), show_default=True)
def show_cmd(run_id: int, store: Path) -> None:
    """Show one run: its configuration and metrics."""
    from .store import ResultStore

    with ResultStore(store) as db:
        run = db.get_run(run_id)
        if run is None:
            raise _Error(f"no run {run_id} in {store}")
        metrics = db.metrics_for(run_id)
    fields = {k: v for k, v in run.__dict__.items() if k not in ("run_key",)}
    click.echo(tabulate(list(fields.items()), headers=["field", "value"], tablefmt="github"))
    if metrics:
        click.echo()
        click.echo(tabulate([(m.group, m.averaging, m.metric, f"{m.mean:.4f}", f"{m.ci_low:.4f}", f"{m.ci_high:.4f}",
                              m.n_samples, m.n_patients) for m in metrics],
                            headers=["group", "averaging", "metric", "mean", "ci_low", "ci_high", "samples",
                                     "patients"], tablefmt="github"))


@main.command("leaderboard")
@click.option("--store", type=click.Path(path_type=Path), default=Path("results/medrec.db"), show_default=True)
@click.option("--data", default=None, help="Only this dataset.")
@click.option("--protocol", default=None, help="Only this protocol.")
@click.option("--group", default=None, help="Only this group (overall, single_visit, multi_visit, visits_*).")
@click.option("--averaging", type=click.Choice(["sample", "patient"]), default=None)
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True)
def leaderboard_cmd(store: Path, data: str | None, protocol: str | None, group: str | None,
                    averaging: str | None, fmt: str) -> None:
    """Tables from the store, one per dataset / protocol / group / averaging."""
    from .report import RECORD_KEYS, comparison_table, records_csv, records_json
    from .store import ResultStore

    if not store.exists():
        raise _Error(f"no results store at {store} (run `medrec-bench run` first or pass --store)")
    with ResultStore(store) as db:
        records = db.leaderboard_records(data=data, protocol=protocol, group=group, averaging=averaging)
    if fmt in ("csv", "json"):
        plain = [{k: r[k] for k in RECORD_KEYS} | {"params_hash": r.get("params_hash")} for r in records]
        click.echo(records_json(plain) if fmt == "json" else records_csv(plain), nl=False)
        if fmt == "json":
            click.echo()
        return
    tables: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        tables.setdefault((r["data"], r["protocol"], r["group"], r["averaging"]), []).append(r)
    if not tables:
        click.echo("no complete runs match")
    for (d, p, g, a), recs in tables.items():
        labelled = [{**r, "model": _label(r, recs)} for r in recs]
        seeds = max(r["n_seeds"] for r in recs)
        click.echo(f"\n## {d} / {p} / {g} / {a} averaging (up to {seeds} seed(s))\n")
        click.echo(comparison_table(labelled))


def _label(record: dict[str, Any], records: list[dict[str, Any]]) -> str:
    configs = {r["params_hash"] for r in records if r["model"] == record["model"]}
    return record["model"] if len(configs) == 1 else f"{record['model']}[{record['params_hash']}]"


@main.command("rescore")
@click.argument("run_id", type=int)
@click.option("--store", type=click.Path(path_type=Path), default=Path("results/medrec.db"), show_default=True)
@click.option("--threshold", type=float, default=None, help="Decision threshold (default: the run's).")
@click.option("--averaging", type=click.Choice(["sample", "patient"]), default="sample", show_default=True)
@click.option("--n-boot", type=int, default=1000, show_default=True)
@click.option("--uncertainty", type=click.Choice(["bootstrap", "rounds_with_replacement",
                                                  "rounds_without_replacement"]), default="bootstrap")
def rescore_cmd(run_id: int, store: Path, threshold: float | None, averaging: str, n_boot: int,
                uncertainty: str) -> None:
    """Re-evaluate a run's saved predictions without retraining."""
    from .report import LABELS
    from .runner import rescore
    from .store import ResultStore

    with ResultStore(store) as db:
        try:
            results = rescore(db, run_id, threshold=threshold, n_boot=n_boot, uncertainty=uncertainty)
        except ValueError as exc:
            raise _Error(str(exc)) from None
    rows = [(r.group, LABELS.get(r.metric, r.metric), f"{r.mean:.4f}", f"[{r.ci_low:.4f}, {r.ci_high:.4f}]",
             r.n_samples) for r in results if r.averaging == averaging]
    click.echo(tabulate(rows, headers=["group", "metric", "mean", "95% CI", "samples"], tablefmt="github"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
