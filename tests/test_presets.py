"""The papers' presets: shipped as package data, valid against the registry, applied by `run --preset`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from medrec_bench.cli import main
from medrec_bench.presets import PresetError, load_preset, preset_names
from medrec_bench.registry import load_registry
from medrec_bench.store import ResultStore
from tests.test_store import REPO_ROOT

PAPERS = ["leader-mimic3", "leader-mimic4", "molerec-mimic3", "safedrug-mimic3"]


def test_every_preset_loads_and_its_settings_resolve() -> None:
    assert preset_names() == PAPERS
    registry = load_registry()
    for name in PAPERS:
        preset = load_preset(name)
        for model in preset.models.split(","):
            registry.get(model).resolve(preset.set.get(model))  # unknown or mistyped params would raise
    assert load_preset("safedrug-mimic3").reported["safedrug"] == {"jaccard": 0.5213, "f1": 0.6768,
                                                                   "prauc": 0.7647, "ddi_rate": 0.0589}
    with pytest.raises(PresetError, match="unknown preset 'nope'; available: leader-mimic3"):
        load_preset("nope")


def test_presets_and_page_template_are_package_data() -> None:
    """A non-editable install carries only the globs of ``package-data``: they must match the shipped files."""
    globs = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    root = REPO_ROOT / "medrec_bench"
    shipped = {p for pattern in globs["medrec_bench"] for p in root.glob(pattern)}
    assert {root / "presets" / f"{name}.yaml" for name in PAPERS} <= shipped
    assert root / "leaderboard" / "page.html.j2" in shipped


def test_missing_model_folder_is_one_line() -> None:
    result = CliRunner().invoke(main, ["run", "--preset", "leader-mimic3", "--path", "/nowhere"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "model folder" in lines[0] and "Llama-2-7b-hf (leader_t.backbone) is missing" in lines[0]


def test_list_presets() -> None:
    out = CliRunner().invoke(main, ["list", "--presets"]).output
    assert all(f"| {name}" in out for name in PAPERS)


@pytest.mark.slow
def test_run_preset_applies_the_papers_protocol(demo_dir: Path, cache_root: Path, tmp_path: Path) -> None:
    store = tmp_path / "r.db"
    result = CliRunner().invoke(main, ["run", "--preset", "safedrug-mimic3", "--path", str(demo_dir),
                                       "--cache", str(cache_root), "--store", str(store), "--n-boot", "20",
                                       "--set", "safedrug.epochs=1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "/ visit / overall / patient averaging / 1 seed(s); mean ± std over rounds (with replacement)" in result.output
    with ResultStore(store) as db:
        (run,) = db.runs()
    assert (run.model, run.protocol, run.uncertainty, run.seed) == ("safedrug", "visit", "rounds_with_replacement", 0)
    params = json.loads(run.params)
    assert (params["lr"], params["batch_size"], params["epochs"]) == (5.0e-4, 1, 1)  # the preset's, then --set
