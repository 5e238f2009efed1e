"""The model registry: entries declared in ``registry.yaml`` plus plugins from the ``medrec_bench.models`` entry points.

An entry::

    safedrug:
      class: baselines.safedrug:SafeDrug     # import string, loaded lazily
      aliases: [SafeDrug]
      params: {epochs: 50}                   # deliberate deviations from the class's typed defaults (# why)
      tags: [molecule, ddi]
      citation: "Yang et al., IJCAI 2021"
      description: one line
      requires: [leader_t]                   # other models whose artifacts this one needs

Parameters resolve in three layers: the class's typed ``__init__`` defaults (the one source of defaults), the entry's
``params``, then overrides (``--set MODEL.PARAM=VALUE``, see :func:`parse_overrides`); :meth:`ModelEntry.resolve`
says which layer set each. Registry and override values are coerced to their annotation (``int`` / ``float`` /
``bool`` / ``str``, ``Literal`` choices, ``| None``; YAML 1.1 reads ``5e-3`` as a string) and checked against the
:class:`Range` the class declares next to the default (``param_ranges = {"epochs": Range(ge=1)}``), so a bad value is
an error naming model, parameter, value and what is allowed before any data is loaded. Unknown keys are errors
naming the key; unknown params are errors naming the param. Names and aliases are matched case-insensitively. A
plugin's entry point is a function returning ``{name: entry}`` in the same form.

The registry file is package data, ``medrec_bench/registry.yaml``: one file, edited in a checkout (an editable
install reads it in place; the checkout's top-level ``registry.yaml`` is a symbolic link to it) and shipped in the
wheel. ``$MEDREC_BENCH_REGISTRY`` names another file instead.
``medrec_bench`` never imports ``leader/`` or ``baselines/`` directly: everything goes through these import strings.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

ENTRY_POINT_GROUP = "medrec_bench.models"
REGISTRY_FILE = Path(__file__).with_name("registry.yaml")
REGISTRY_ENV = "MEDREC_BENCH_REGISTRY"
LAYERS = ("class", "registry", "--set")  # where a resolved parameter's value comes from, later layers win
ENTRY_KEYS = {"class", "aliases", "params", "tags", "citation", "description", "requires"}
REQUIRED_KEYS = {"class"}


class RegistryError(ValueError):
    """A malformed registry entry or an unknown model name."""


_PLAIN_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric parameter, declared next to its typed default (``param_ranges`` of a model
    class): ``Range(ge=1)`` for ``epochs >= 1``, ``Range(gt=0)`` for ``0 < lr``, ``Range(ge=0, lt=1)`` for
    ``0 <= dropout < 1``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __contains__(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self, name: str) -> str:
        """The range as text, e.g. ``0 <= dropout < 1``."""
        def text(bound: float) -> str:
            return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"

        low = next(((op, b) for op, b in ((">=", self.ge), (">", self.gt)) if b is not None), None)
        high = next(((op, b) for op, b in (("<=", self.le), ("<", self.lt)) if b is not None), None)
        if low and not high:
            return f"{name} {low[0]} {text(low[1])}"
        left = f"{text(low[1])} {low[0].replace('>', '<')} " if low else ""
        return f"{left}{name}" + (f" {high[0]} {text(high[1])}" if high else "")


def _annotation_kinds(annotation: Any) -> tuple[tuple[Any, ...], bool] | None:
    """(allowed kinds, None allowed) of an annotation: plain types (``int``, ``float``, ``bool``, ``str``) and
    ``typing.Literal`` choices, alone or in a union (``int | None``, ``int | str``), as objects or as the strings of
    postponed annotations. None for anything else (the value is passed through)."""
    if isinstance(annotation, str):
        parts = [part.strip() for part in annotation.split("|")]
        kinds = tuple(_PLAIN_TYPES.get(part) for part in parts if part != "None")
        return (kinds, "None" in parts) if kinds and all(kinds) else None
    members = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else (annotation,)
    kinds = []
    for member in members:
        if member is type(None):
            continue
        if typing.get_origin(member) is typing.Literal:
            kinds.append(typing.get_args(member))
        elif member in _PLAIN_TYPES.values():
            kinds.append(member)
        else:
            return None
    return (tuple(kinds), type(None) in members) if kinds else None


def _coerce_to(value: Any, kind: Any) -> Any:
    """``value`` as one kind of :func:`_annotation_kinds` (a type or a tuple of Literal choices), or raise
    ValueError."""
    if isinstance(kind, tuple):
        if value in kind and any(type(value) is type(c) for c in kind):
            return value
        raise ValueError
    if type(value) is kind:
        return value
    if kind is str or kind is bool:
        raise ValueError
    number = value
    if isinstance(value, str):
        for parse in (int, float) if kind is int else (float,):
            try:
                number = parse(value)
                break
            except ValueError:
                continue
    if type(number) is kind:
        return number
    if kind is float and type(number) is int:
        return float(number)
    if kind is int and type(number) is float and number.is_integer():
        return int(number)
    raise ValueError


def _kind_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return "one of " + ", ".join(repr(c) for c in kind)
    return f"{'an' if kind is int else 'a'} {kind.__name__}"


def coerce_param(name: str, value: Any, annotation: Any, allowed: Range | None = None) -> Any:
    """``value`` as the parameter's annotated type where that is a plain ``int``, ``float``, ``bool`` or ``str``, a
    ``Literal`` of choices or a union of those (``int | None``): an int or a numeric string (YAML 1.1 reads ``5e-3``
    as one) for a float, an integral float or string for an int, only a bool for a bool; floats must be finite; a
    number must lie in ``allowed``. Any other annotation passes the value through. ValueError naming the parameter,
    the value and what is allowed otherwise."""
    spec = _annotation_kinds(annotation)
    if spec is None:
        return value
    kinds, optional = spec
    if value is None and optional:
        return None
    for kind in kinds:
        try:
            out = _coerce_to(value, kind)
            break
        except (ValueError, OverflowError):
            continue
    else:
        wanted = " or ".join([_kind_name(k) for k in kinds] + (["None"] if optional else []))
        raise ValueError(f"parameter {name!r} must be {wanted}, not {value!r}")
    if type(out) is float and not math.isfinite(out):
        raise ValueError(f"parameter {name!r} must be a finite float, not {value!r}")
    if allowed is not None and type(out) in (int, float) and out not in allowed:
        raise ValueError(f"parameter {name!r} = {value!r} is out of range (allowed: {allowed.describe(name)})")
    return out


@dataclass(frozen=True)
class ResolvedParam:
    """One parameter's value and the layer of :data:`LAYERS` that set it."""

    name: str
    value: Any
    layer: str


@dataclass(frozen=True)
class ModelEntry:
    name: str
    class_path: str
    aliases: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    citation: str = ""
    description: str = ""
    requires: tuple[str, ...] = ()
    source: str = "registry.yaml"

    def load_class(self) -> type:
        """Import the model class named by ``class_path`` (``package.module:Class``)."""
        module_name, _, attr = self.class_path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise RegistryError(f"model {self.name!r}: cannot import {module_name!r} ({exc})") from exc
        try:
            return getattr(module, attr)
        except AttributeError:
            raise RegistryError(f"model {self.name!r}: {module_name!r} has no {attr!r}") from None

    def resolve(self, overrides: dict[str, Any] | None = None) -> dict[str, ResolvedParam]:
        """Every parameter of the class: its typed default, updated by the entry's ``params``, then by ``overrides``;
        values coerced to their type and checked against the class's ``param_ranges`` (:func:`coerce_param`) and
        unknown names refused, as RegistryError naming the model."""
        default_layer, registry_layer, override_layer = LAYERS
        cls = self.load_class()
        layers = ((registry_layer, self.params), (override_layer, overrides or {}))
        try:
            for _, values in layers:
                cls.check_params(values)
            out: dict[str, ResolvedParam] = {}
            ranges = cls.all_param_ranges() if hasattr(cls, "all_param_ranges") else {}
            for name, spec in cls.param_specs().items():
                layer, value = default_layer, spec.default
                for layer_name, values in layers:
                    if name in values:
                        layer, value = layer_name, coerce_param(name, values[name], spec.annotation, ranges.get(name))
                if value is inspect.Parameter.empty:
                    raise ValueError(f"parameter {name!r} has no default: set it in the registry or with --set")
                out[name] = ResolvedParam(name, value, layer)
        except ValueError as exc:
            raise RegistryError(f"model {self.name!r}: {exc}") from None
        return out

    def resolved_params(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every parameter's resolved value (see :meth:`resolve`): what the model is built with and keyed by."""
        return {name: p.value for name, p in self.resolve(overrides).items()}

    def create(self, overrides: dict[str, Any] | None = None) -> Any:
        """A new, unfitted instance with the resolved parameters."""
        return self.load_class()(**self.resolved_params(overrides))


def parse_entry(name: str, data: Any, source: str) -> ModelEntry:
    """Validate one entry mapping (from YAML or a plugin)."""
    if not isinstance(data, dict):
        raise RegistryError(f"{source}: entry {name!r} must be a mapping, not {type(data).__name__}")
    unknown = sorted(set(data) - ENTRY_KEYS)
    if unknown:
        raise RegistryError(f"{source}: entry {name!r} has unknown key {unknown[0]!r} "
                            f"(allowed: {', '.join(sorted(ENTRY_KEYS))})")
    missing = sorted(REQUIRED_KEYS - set(data))
    if missing:
        raise RegistryError(f"{source}: entry {name!r} has no {missing[0]!r}")
    class_path = data["class"]
    if not isinstance(class_path, str) or ":" not in class_path:
        raise RegistryError(f"{source}: entry {name!r}: class must look like 'package.module:Class'")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise RegistryError(f"{source}: entry {name!r}: params must be a mapping")

    def strings(key: str) -> tuple[str, ...]:
        value = data.get(key) or []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RegistryError(f"{source}: entry {name!r}: {key} must be a list of strings")
        return tuple(value)

    return ModelEntry(name, class_path, strings("aliases"), dict(params), strings("tags"),
                      str(data.get("citation", "")), str(data.get("description", "")), strings("requires"), source)


class Registry:
    """Model entries by name, with aliases."""

    def __init__(self, entries: list[ModelEntry] | None = None) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._lookup: dict[str, str] = {}
        for entry in entries or []:
            self.add(entry)

    def add(self, entry: ModelEntry) -> None:
        for key in (entry.name, *entry.aliases):
            owner = self._lookup.get(key.lower())
            if owner is not None:
                raise RegistryError(f"{entry.source}: name {key!r} of {entry.name!r} is already used by {owner!r} "
                                    f"({self._entries[owner].source})")
        self._entries[entry.name] = entry
        for key in (entry.name, *entry.aliases):
            self._lookup[key.lower()] = entry.name

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._lookup

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> ModelEntry:
        """The entry for a name or alias (case-insensitive)."""
        key = self._lookup.get(name.strip().lower())
        if key is None:
            raise RegistryError(f"unknown model {name!r}; available: {', '.join(sorted(self._entries))}")
        return self._entries[key]


def default_registry_path() -> Path:
    """``$MEDREC_BENCH_REGISTRY`` or the packaged ``medrec_bench/registry.yaml``."""
    env = os.environ.get(REGISTRY_ENV)
    return Path(env) if env else REGISTRY_FILE


def read_yaml_entries(path: Path) -> list[ModelEntry]:
    if not path.exists():
        raise RegistryError(f"registry file {path} not found (check {REGISTRY_ENV})")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(data) - {"models"})
    if unknown:
        raise RegistryError(f"{path}: unknown top-level key {unknown[0]!r} (expected 'models')")
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise RegistryError(f"{path}: 'models' must be a mapping of name -> entry")
    return [parse_entry(str(name), entry, path.name) for name, entry in models.items()]


def plugin_entries() -> list[ModelEntry]:
    """Entries from every installed ``medrec_bench.models`` entry point."""
    out: list[ModelEntry] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        source = f"plugin {ep.dist.name if ep.dist else ep.value}"
        try:
            provided = ep.load()()
        except Exception as exc:  # a broken plugin must not hide the others, but must be reported clearly
            raise RegistryError(f"{source}: entry point {ep.name!r} failed: {exc}") from exc
        if not isinstance(provided, dict):
            raise RegistryError(f"{source}: entry point {ep.name!r} must return a mapping of name -> entry")
        out += [parse_entry(str(name), entry, source) for name, entry in provided.items()]
    return out


def load_registry(path: str | Path | None = None, plugins: bool = True) -> Registry:
    """The registry of ``path`` (default :func:`default_registry_path`) plus installed plugins."""
    registry = Registry(read_yaml_entries(Path(path) if path else default_registry_path()))
    if plugins:
        for entry in plugin_entries():
            registry.add(entry)
    return registry


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    return load_registry()


def parse_overrides(values: Iterable[str], registry: Registry) -> dict[str, dict[str, Any]]:
    """``MODEL.PARAM=VALUE`` strings -> {canonical model name: {param: value}}; values parsed as YAML scalars (an
    empty value is None), checked and coerced later by :meth:`ModelEntry.resolve`. RegistryError for a malformed
    item or an unknown model."""
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        target, eq, raw = item.partition("=")
        model, dot, param = target.partition(".")
        if not eq or not dot or not model or not param:
            raise RegistryError(f"--set {item!r}: expected MODEL.PARAM=VALUE, e.g. safedrug.epochs=2")
        out.setdefault(registry.get(model).name, {})[param.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out
