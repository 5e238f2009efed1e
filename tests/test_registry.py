"""The registry: YAML entries, aliases, errors for unknown keys/params, and plugins through entry points."""

import subprocess
import sys
from pathlib import Path

import pytest

from medrec_bench.registry import Registry, RegistryError, load_registry, parse_entry, read_yaml_entries

REPO = Path(__file__).resolve().parents[1]


def test_shipped_registry_loads_and_every_class_imports():
    registry = load_registry(REPO / "registry.yaml", plugins=False)
    assert {"popular", "last_visit_repeat", "logistic", "mlp"} <= set(registry.names())
    for entry in registry:
        cls = entry.load_class()
        entry.resolved_params()  # registry defaults are valid parameters
        assert hasattr(cls, "fit") and hasattr(cls, "predict_proba")
        for name in entry.requires:
            assert name in registry


def test_aliases_are_case_insensitive():
    registry = load_registry(REPO / "registry.yaml", plugins=False)
    assert registry.get("LR").name == "logistic"
    assert registry.get("Pop").name == "popular"


def test_unknown_model_lists_the_available_ones():
    registry = load_registry(REPO / "registry.yaml", plugins=False)
    with pytest.raises(RegistryError, match="unknown model 'nope'; available: .*popular"):
        registry.get("nope")


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(RegistryError, match="unknown key 'param'"):
        parse_entry("m", {"class": "a.b:C", "param": {}}, "test")
    with pytest.raises(RegistryError, match="has no 'class'"):
        parse_entry("m", {"aliases": ["x"]}, "test")
    with pytest.raises(RegistryError, match="package.module:Class"):
        parse_entry("m", {"class": "baselines.popular.Popular"}, "test")


def test_unknown_top_level_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("modles:\n  a: {class: 'a:b'}\n")
    with pytest.raises(RegistryError, match="unknown top-level key 'modles'"):
        read_yaml_entries(path)


def test_unknown_param_is_an_error_naming_it():
    entry = parse_entry("logistic", {"class": "baselines.bag_models:Logistic", "params": {"epoch": 3}}, "test")
    with pytest.raises(RegistryError, match="no parameter 'epoch'"):
        entry.resolved_params()
    good = parse_entry("logistic", {"class": "baselines.bag_models:Logistic"}, "test")
    assert good.create({"epochs": 3}).epochs == 3
    with pytest.raises(RegistryError, match="no parameter 'hidden'"):
        good.create({"hidden": 3})


def test_duplicate_names_are_refused():
    a = parse_entry("a", {"class": "x:A", "aliases": ["shared"]}, "one")
    b = parse_entry("b", {"class": "x:B", "aliases": ["SHARED"]}, "two")
    with pytest.raises(RegistryError, match="already used by 'a'"):
        Registry([a, b])


def test_example_plugin_installs_and_is_listed():
    plugin = REPO / "examples" / "plugin"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(plugin)], check=True)
    try:
        out = subprocess.run([sys.executable, "-m", "medrec_bench.cli", "list"], capture_output=True, text=True,
                             check=True).stdout
        line = next(l for l in out.splitlines() if "profile_popular" in l)
        assert "plugin medrec-bench-example-plugin" in line and "profile_pop" in line
        code = "from medrec_bench.registry import load_registry; print(load_registry().get('profile_pop').create())"
        made = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert "ProfilePopular" in made
    finally:
        subprocess.run([*pip, "uninstall", "-y", "medrec-bench-example-plugin"], check=True)
    out = subprocess.run([sys.executable, "-m", "medrec_bench.cli", "list"], capture_output=True, text=True,
                         check=True).stdout
    assert "profile_popular" not in out
