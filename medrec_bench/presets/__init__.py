"""The papers' protocols as named presets: one YAML file per preset in this folder (package data).

A preset names the cohort options, protocol, split order, threshold, uncertainty method, averaging, seeds, device,
models and model settings of one paper, the parameters that name a local model folder (``folders``) and the paper's
reported numbers where known (``reported``). ``medrec-bench run --preset NAME --path ...`` uses its values where the
command line gives none (``--set`` adds to the preset's settings and wins over them); ``medrec-bench list --presets``
lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Preset", "PresetError", "load_preset", "preset_names"]

SUFFIX = ".yaml"
#: preset ``data`` keys -> the ``run`` command's data option names (see medrec_bench.cli)
DATA_KEYS = ("source", "min_visits", "top_k_diagnoses", "top_k_procedures", "top_k_drugs", "require_smiles")
#: preset keys that are ``run`` options of the same name
RUN_KEYS = ("protocol", "split_order", "threshold", "uncertainty", "averaging", "seeds", "device", "models")


class PresetError(ValueError):
    """An unknown or malformed preset, or a model folder it names that is missing (one line)."""


@dataclass(frozen=True)
class Preset:
    """One paper's protocol; the ``run`` option values are strings as on the command line."""

    name: str
    description: str
    citation: str
    data: dict[str, Any]
    protocol: str
    split_order: str
    threshold: str
    uncertainty: str
    averaging: str
    seeds: str
    device: str
    models: str
    set: dict[str, dict[str, Any]] = field(default_factory=dict)  #: model -> params
    folders: dict[str, str] = field(default_factory=dict)  #: ``model.param`` -> what folder it must be
    reported: dict[str, dict[str, float]] = field(default_factory=dict)  #: model -> metric -> the paper's value

    def run_defaults(self) -> dict[str, Any]:
        """The ``run`` command's option values (by parameter name) this preset sets."""
        return {**self.data, **{key: getattr(self, key) for key in RUN_KEYS}}

    def overrides(self, extra: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """The preset's model settings updated by ``extra`` (``--set``), with ``~`` expanded in the folders it names;
        a named folder that is missing is a PresetError naming it."""
        merged = {model: dict(params) for model, params in self.set.items()}
        for model, params in (extra or {}).items():
            merged.setdefault(model, {}).update(params)
        for key, what in self.folders.items():
            model, _, param = key.partition(".")
            value = merged.get(model, {}).get(param)
            if not isinstance(value, str) or not _is_path(value):
                continue  # a named backbone (--set leader_t.backbone=smollm2-135m) is not a folder
            folder = Path(value).expanduser()
            if not folder.is_dir():
                raise PresetError(f"preset {self.name}: model folder {folder} ({key}) is missing: put {what} there "
                                  f"or pass --set {key}=FOLDER")
            merged[model][param] = str(folder)
        return merged


def _is_path(value: str) -> bool:
    return "/" in value or value.startswith(("~", "."))


def preset_names() -> list[str]:
    """The names of the shipped presets, sorted."""
    return sorted(p.name[: -len(SUFFIX)] for p in files(__package__).iterdir() if p.name.endswith(SUFFIX))


def load_preset(name: str) -> Preset:
    """The preset ``name`` (PresetError naming the available ones when unknown, or the bad key when malformed)."""
    source = files(__package__).joinpath(f"{name}{SUFFIX}")
    if not source.is_file():
        raise PresetError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    known = {f.name for f in fields(Preset)} - {"name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PresetError(f"preset {name}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(known))})")
    bad_data = sorted(set(raw.get("data", {})) - set(DATA_KEYS))
    if bad_data:
        raise PresetError(f"preset {name}: unknown data option {bad_data[0]!r} (allowed: {', '.join(DATA_KEYS)})")
    try:
        return Preset(name=name, **raw)
    except TypeError as exc:
        raise PresetError(f"preset {name}: {exc}") from None
