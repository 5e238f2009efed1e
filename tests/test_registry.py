"""The registry: YAML entries, aliases, errors for unknown keys/params, parameter layers and coercion, the packaged
registry file, and plugins through entry points."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from medrec_bench.models import RESOURCES
from medrec_bench.registry import (REGISTRY_FILE, Range, Registry, RegistryError, coerce_param,
                                   default_registry_path, load_registry, parse_entry, parse_overrides,
                                   read_yaml_entries)

REPO = Path(__file__).resolve().parents[1]


def _shipped() -> Registry:
    return load_registry(REGISTRY_FILE, plugins=False)


def test_shipped_registry_loads_and_every_class_imports():
    registry = _shipped()
    assert {"popular", "last_visit_repeat", "logistic", "mlp"} <= set(registry.names())
    for entry in registry:
        cls = entry.load_class()
        entry.resolved_params()  # registry params are valid parameters
        assert hasattr(cls, "fit") and hasattr(cls, "predict_proba")
        assert set(cls.needs_resources) <= set(RESOURCES) and not hasattr(cls, "requires")
        for name in entry.requires:
            assert name in registry


def test_registry_is_package_data_and_the_env_variable_overrides_it(tmp_path, monkeypatch):
    assert REGISTRY_FILE == REPO / "medrec_bench" / "registry.yaml" and REGISTRY_FILE.is_file()
    top = REPO / "registry.yaml"  # the checkout's top-level name is a link to it: one file, not two copies
    assert top.is_symlink() and top.resolve() == REGISTRY_FILE.resolve()
    monkeypatch.delenv("MEDREC_BENCH_REGISTRY", raising=False)
    assert default_registry_path() == REGISTRY_FILE
    monkeypatch.setenv("MEDREC_BENCH_REGISTRY", str(tmp_path / "mine.yaml"))
    assert default_registry_path() == tmp_path / "mine.yaml"


def _restated(entry) -> list[str]:
    """The entry's registry params whose (coerced) value equals the class's typed default."""
    resolved = entry.resolve()
    specs = entry.load_class().param_specs()
    return [name for name in entry.params if resolved[name].value == specs[name].default]


def test_registry_params_only_deviate_from_the_class_defaults():
    for entry in _shipped():
        assert _restated(entry) == [], f"{entry.name}: registry params equal to the class default"
    restating = parse_entry("safedrug", {"class": "baselines.safedrug:SafeDrug",
                                         "params": {"lr": "3e-3", "epochs": 50, "batch_size": 16}}, "test")
    assert _restated(restating) == ["lr", "batch_size"]


def test_resolve_names_the_layer_of_every_parameter():
    entry = parse_entry("mlp", {"class": "baselines.bag_models:MLP", "params": {"hidden": 64, "lr": "5e-3"}}, "test")
    resolved = entry.resolve({"lr": 2e-3, "epochs": "4"})
    assert list(resolved) == list(entry.load_class().param_names())
    layers = {name: (p.value, p.layer) for name, p in resolved.items()}
    assert layers["hidden"] == (64, "registry") and layers["lr"] == (0.002, "--set")
    assert layers["epochs"] == (4, "--set") and layers["dropout"] == (0.3, "class")
    model = entry.create({"lr": 2e-3})
    assert model.get_params() == entry.resolved_params({"lr": 2e-3})


def test_leader_t_class_defaults_are_the_registry_defaults_it_used_to_restate():
    resolved = _shipped().get("leader_t").resolve()
    assert (resolved["epochs"].value, resolved["max_steps"].value) == (20, 3000)
    assert {p.layer for p in resolved.values()} == {"class"}


@pytest.mark.parametrize("value, annotation, expected", [
    ("5e-3", "float", 0.005),        # YAML 1.1 reads 5e-3 as a string
    (2, "float", 2.0),
    ("2.0e-4", float, 2.0e-4),
    ("1e3", "int", 1000),
    (3.0, "int", 3),
    ("12", "int", 12),
    (True, "bool", True),
    ("visit", "Scope", "visit"),     # not a plain type: passed through
    (None, "int | None", None),
])
def test_coerce_param_to_plain_annotations(value, annotation, expected):
    out = coerce_param("p", value, annotation)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, annotation", [("fast", "float"), (2.5, "int"), (True, "int"), (1, "bool"),
                                               ("true", "bool"), (False, "float"), (None, "float")])
def test_coerce_param_refuses_what_does_not_fit(value, annotation):
    with pytest.raises(ValueError, match=f"parameter 'p' must be an? {annotation}"):
        coerce_param("p", value, annotation)


@pytest.mark.parametrize("value, annotation, expected", [
    ("batch", Literal["visit", "batch"], "batch"),
    (None, int | None, None),
    ("7", int | None, 7),
    ("all", int | str, "all"),
    (3, int | str, 3),
    ("1.0e9", float, 1.0e9),          # YAML 1.1 reads even 1.0e9 as a string
])
def test_coerce_param_to_literal_and_union_annotations(value, annotation, expected):
    out = coerce_param("p", value, annotation)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, annotation, allowed, message", [
    ("x", Literal["visit", "batch"], None, "must be one of 'visit', 'batch', not 'x'"),
    ("abc", int | None, None, "must be an int or None, not 'abc'"),
    (float("nan"), float, None, "must be a finite float, not nan"),
    ("inf", float, None, "must be a finite float, not 'inf'"),
    (-5, int, Range(ge=1), "'p' = -5 is out of range (allowed: p >= 1)"),
    (0, int, Range(ge=1), "'p' = 0 is out of range (allowed: p >= 1)"),
    (0.0, float, Range(gt=0), "(allowed: p > 0)"),
    (1, float, Range(ge=0, lt=1), "(allowed: 0 <= p < 1)"),
    (-1, int | None, Range(ge=0, lt=2**32), "(allowed: 0 <= p < 4294967296)"),
])
def test_coerce_param_refuses_wrong_types_and_out_of_range_values(value, annotation, allowed, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        coerce_param("p", value, annotation, allowed)


@pytest.mark.parametrize("model, param, value, message", [
    ("logistic", "epochs", -5, "parameter 'epochs' = -5 is out of range (allowed: epochs >= 1)"),
    ("logistic", "epochs", 0, "parameter 'epochs' = 0 is out of range (allowed: epochs >= 1)"),
    ("logistic", "epochs", True, "parameter 'epochs' must be an int, not True"),
    ("logistic", "epochs", "abc", "parameter 'epochs' must be an int, not 'abc'"),
    ("logistic", "epochs", 1.5, "parameter 'epochs' must be an int, not 1.5"),
    ("logistic", "epochs", [1, 2], "parameter 'epochs' must be an int, not [1, 2]"),
    ("logistic", "batch_size", 0, "parameter 'batch_size' = 0 is out of range (allowed: batch_size >= 1)"),
    ("logistic", "lr", float("nan"), "parameter 'lr' must be a finite float, not nan"),
    ("logistic", "lr", "-1e-3", "parameter 'lr' = '-1e-3' is out of range (allowed: lr > 0)"),
    ("logistic", "seed", -3, "parameter 'seed' = -3 is out of range"),
    ("mlp", "dropout", 1, "parameter 'dropout' = 1 is out of range (allowed: 0 <= dropout < 1)"),
    ("gamenet", "temperature_decay", 1.5, "(allowed: 0 < temperature_decay <= 1)"),
    ("safedrug", "ddi_rate_scope", "pooled", "parameter 'ddi_rate_scope' must be one of 'visit', 'batch'"),
    ("safedrug", "target_ddi", 2, "(allowed: 0 <= target_ddi <= 1)"),
    ("molerec", "substructure_encoder", "gcn", "must be one of 'gin', 'embedding', not 'gcn'"),
    ("leader_t", "lora_dropout", 1.0, "(allowed: 0 <= lora_dropout < 1)"),
    ("llm_zero_shot", "top_k", -1, "(allowed: top_k >= 0)"),
])
def test_parameter_types_and_ranges_are_checked_with_the_model_named(model, param, value, message):
    entry = _shipped().get(model)
    with pytest.raises(RegistryError, match=re.escape(f"model '{model}': ") + ".*" + re.escape(message)):
        entry.resolve({param: value})


def test_registry_values_are_range_checked_too():
    bad = parse_entry("lr", {"class": "baselines.bag_models:Logistic", "params": {"epochs": 0}}, "test")
    with pytest.raises(RegistryError, match=re.escape("model 'lr': parameter 'epochs' = 0 is out of range")):
        bad.resolved_params()


def test_ranges_merge_over_base_classes_and_mixins():
    ranges = _shipped().get("safedrug").load_class().all_param_ranges()
    assert ranges["epochs"] == Range(ge=1)            # TorchRecommender
    assert ranges["target_ddi"] == Range(ge=0, le=1)  # the DDI mixin
    assert ranges["dropout"] == Range(ge=0, lt=1)     # SafeDrug itself
    assert set(ranges) <= set(_shipped().get("safedrug").load_class().param_names())


def test_yaml_registry_numbers_are_coerced(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("models:\n  lr:\n    class: baselines.bag_models:Logistic\n    params: {lr: 5e-3, epochs: 2}\n")
    entry = read_yaml_entries(path)[0]
    assert entry.params["lr"] == "5e-3"  # what PyYAML gives
    assert entry.create().lr == 0.005
    bad = parse_entry("lr", {"class": "baselines.bag_models:Logistic", "params": {"epochs": "many"}}, "test")
    with pytest.raises(RegistryError, match="model 'lr': parameter 'epochs' must be an int, not 'many'"):
        bad.resolved_params()


def test_parse_overrides():
    registry = _shipped()
    out = parse_overrides(["LR.lr=1e-3", "logistic.epochs=2", "mlp.seed="], registry)
    assert out == {"logistic": {"lr": "1e-3", "epochs": 2}, "mlp": {"seed": None}}
    assert registry.get("logistic").resolved_params(out["logistic"])["lr"] == 0.001
    with pytest.raises(RegistryError, match="expected MODEL.PARAM=VALUE"):
        parse_overrides(["logistic"], registry)
    with pytest.raises(RegistryError, match="unknown model 'nope'"):
        parse_overrides(["nope.epochs=2"], registry)


def test_aliases_are_case_insensitive():
    registry = _shipped()
    assert registry.get("LR").name == "logistic"
    assert registry.get("Pop").name == "popular"


def test_unknown_model_lists_the_available_ones():
    registry = _shipped()
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


def test_non_editable_install_lists_the_models_from_another_directory(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", "results"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(source)],
                   check=True)
    wheel = next((tmp_path / "wheel").glob("medrec_bench-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    shutil.rmtree(source)  # nothing may come from the copied checkout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MEDREC_BENCH_REGISTRY"} | {"PYTHONPATH": str(site)}

    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "medrec_bench.cli", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, check=True).stdout

    where = subprocess.run([sys.executable, "-c", "import medrec_bench.registry as r; print(r.REGISTRY_FILE)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where) == site / "medrec_bench" / "registry.yaml"
    listed = cli("list")
    for name in ("popular", "logistic", "leader_t", "safedrug", "molerec"):
        assert f"| {name} " in listed
    assert "| epochs " in cli("list", "--params", "safedrug")  # the baselines package is installed too
