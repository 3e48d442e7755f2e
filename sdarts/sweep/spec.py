"""A sweep: a grid of searches, as a small spec (a preset, or a JSON/TOML file).

A spec has a ``base`` (SearchConfig fields every run shares) and ordered ``axes``.  Each axis
is a list of *levels*; a level is a value of the field the axis is named after, or a table
of fields with an optional ``name``::

    {"name": "mine", "base": {"space": "nb201", "dataset": "cifar10", "epochs": 50},
     "axes": {"method": [{"name": "darts", "optimizer_level": "bilevel", "activation": "softmax"},
                         {"name": "single-darts", "optimizer_level": "single"}],
              "lr": [0.001, 0.005],
              "seed": [0, 1, 2]}}

The runs are the axes' cartesian product, in order; a run's name joins its levels' names
(``darts_lr0.001_seed0``).  The report groups runs that differ only in their ``seed``.
``scale`` (``--scale FRACTION,EPOCHS``) makes a CPU-sized version of any spec: every run gets
that data fraction and that many epochs, and every output says it is not the paper's protocol.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..search.config import ConfigError, SearchConfig, flag

SPEC_KEYS = ("name", "description", "paper", "interpretation", "base", "axes", "table")
# Set by the sweep itself (each run's directory) or only allowed at the sweep's command line.
RESERVED_FIELDS = ("out",)
SEED_AXIS = "seed"
_DEFAULTS = SearchConfig()


class SpecError(ValueError):
    """A spec that cannot be run (one line naming the key or value)."""


@dataclass(frozen=True)
class Scale:
    """A CPU-sized version of a spec: this fraction of the data, this many epochs."""

    data_fraction: float
    epochs: int

    @classmethod
    def parse(cls, text: str) -> "Scale":
        parts = text.split(",")
        try:
            fraction, epochs = float(parts[0]), int(parts[1])
            if len(parts) != 2:
                raise ValueError
        except (ValueError, IndexError):
            raise SpecError(f"--scale must be FRACTION,EPOCHS (e.g. 0.05,10), got {text!r}") from None
        if not (math.isfinite(fraction) and 0.0 < fraction <= 1.0) or epochs < 1:
            raise SpecError(f"--scale {text}: the fraction must be in (0, 1] and the epochs at least 1")
        return cls(fraction, epochs)

    def banner(self) -> str:
        return (f"SCALED, NOT THE PAPER'S PROTOCOL: every run searched {100 * self.data_fraction:g}% of the data "
                f"for {self.epochs} epoch(s) (--scale {self.data_fraction:g},{self.epochs})")

    def to_json(self) -> Dict[str, Any]:
        return {"data_fraction": self.data_fraction, "epochs": self.epochs}


@dataclass(frozen=True)
class Level:
    name: str
    fields: Dict[str, Any]


@dataclass(frozen=True)
class PlannedRun:
    """One search of the sweep: its name, its group (the name without the seed) and settings."""

    name: str
    group: str
    levels: Tuple[Tuple[str, str], ...]  # (axis, level name) in axis order
    config: SearchConfig


@dataclass
class SweepSpec:
    name: str
    base: Dict[str, Any]
    axes: Dict[str, List[Level]]
    description: str = ""
    paper: str = ""
    interpretation: str = ""
    table: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict)  # as given (saved in sweep.json)

    # -- reading -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Any, where: str = "spec") -> "SweepSpec":
        if not isinstance(raw, dict):
            raise SpecError(f"{where}: must be a table of {', '.join(SPEC_KEYS)}, got {type(raw).__name__}")
        unknown = [k for k in raw if k not in SPEC_KEYS]
        if unknown:
            raise SpecError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(SPEC_KEYS)})")
        base = raw.get("base", {})
        if not isinstance(base, dict):
            raise SpecError(f"{where}: 'base' must be a table of search settings, got {type(base).__name__}")
        _check_fields(base, f"{where}: base")
        axes_raw = raw.get("axes")
        if not isinstance(axes_raw, dict) or not axes_raw:
            raise SpecError(f"{where}: 'axes' must be a non-empty table of axis -> list of levels (an empty grid runs nothing)")
        axes = {axis: _levels(axis, levels, f"{where}: axes.{axis}") for axis, levels in axes_raw.items()}
        name = raw.get("name", "sweep")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SpecError(f"{where}: 'name' must be letters, digits, '.', '_' or '-', got {name!r}")
        return cls(name=name, base=dict(base), axes=axes, description=str(raw.get("description", "")),
                   paper=str(raw.get("paper", "")), interpretation=str(raw.get("interpretation", "")),
                   table=dict(raw.get("table", {})), raw=json.loads(json.dumps(raw)))

    @classmethod
    def from_file(cls, path: str) -> "SweepSpec":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise SpecError(f"spec {path}: cannot read it ({err.strerror or err})") from None
        try:
            if path.endswith(".toml"):
                import tomllib

                raw = tomllib.loads(data.decode("utf-8"))
            else:
                raw = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            kind = "TOML" if path.endswith(".toml") else "JSON"
            raise SpecError(f"spec {path}: not valid {kind} ({str(err).splitlines()[0]})") from None
        return cls.from_dict(raw, where=f"spec {path}")

    # -- the grid ------------------------------------------------------------------------

    def runs(self, sweep_dir: str, overrides: Optional[Dict[str, Any]] = None, scale: Optional[Scale] = None,
             locations: Optional[Dict[str, str]] = None) -> List[PlannedRun]:
        """Every run, with its config (``out`` = ``sweep_dir/runs/NAME``), checked.  ``overrides``:
        settings given at the sweep's command line (data and table paths, device), applied last;
        they may not name an axis's setting (the run names would lie).  ``locations``: where the
        shared data is (:func:`fill_locations`), for the runs that name none."""
        overrides = dict(overrides or {})
        _check_fields(overrides, "--set")
        for axis, levels in self.axes.items():
            for level in levels:
                clash = sorted(set(level.fields) & set(overrides))
                if clash:
                    raise SpecError(f"--set {clash[0]}: the spec's axis {axis!r} sets it per run; change the spec instead")
        planned, seen = [], set()
        for combo in itertools.product(*[[(axis, level) for level in levels] for axis, levels in self.axes.items()]):
            settings = dict(self.base)
            for _, level in combo:
                settings.update(level.fields)
            settings.update(overrides)
            fill_locations(settings, locations or {})
            if scale is not None:
                settings.update(data_fraction=scale.data_fraction, epochs=scale.epochs)
            name = "_".join(level.name for _, level in combo)
            group = "_".join(level.name for axis, level in combo if axis != SEED_AXIS) or "all"
            if name in seen:
                raise SpecError(f"spec {self.name}: two runs are both named {name!r}; give the levels distinct names")
            seen.add(name)
            config = SearchConfig(**{**settings, "out": os.path.join(sweep_dir, "runs", name)})
            try:
                config.validate()
            except (ConfigError, TypeError) as err:
                raise SpecError(f"spec {self.name}: run {name}: {err}") from None
            planned.append(PlannedRun(name, group, tuple((axis, level.name) for axis, level in combo), config))
        return planned

    def with_seeds(self, seeds: List[int]) -> "SweepSpec":
        """This spec with ``seeds`` as its seed axis (added last if it had none)."""
        raw = json.loads(json.dumps(self.raw))
        raw.setdefault("axes", {})[SEED_AXIS] = list(seeds)
        return SweepSpec.from_dict(raw, where=f"spec {self.name} with --seeds")

    def describe(self) -> str:
        lines = [f"sweep {self.name}: {self.description}".rstrip(": ")]
        if self.paper:
            lines.append(f"paper: {self.paper}")
        if self.interpretation:
            lines.append(f"our reading: {self.interpretation}")
        return "\n".join(lines)


# Settings that say where things are on this machine: a sweep continued elsewhere may change
# them (as ``sdarts-search --resume`` lets --data-dir and --nb201-table change).
LOCATION_FIELDS = ("data_dir", "nb201_table", "split_file", "benchmark_file", "device")


def fill_locations(settings: Dict[str, Any], locations: Dict[str, str]) -> None:
    """The shared data for a run that names none, by its own space and dataset: CIFAR-10's
    folder (``cifar10_dir``); for NB201 on CIFAR-10 the benchmark's table (``nb201_table``,
    unless it looks cells up through ``benchmark_api``) and split (``nb201_cifar_split``)."""
    nb201_cifar = settings.get("space", "nb201") == "nb201" and settings.get("dataset") == "cifar10"
    if settings.get("dataset") == "cifar10" and settings.get("data_dir") is None and locations.get("cifar10_dir"):
        settings["data_dir"] = locations["cifar10_dir"]
    if nb201_cifar and settings.get("nb201_table") is None and settings.get("benchmark_api") is None and locations.get("nb201_table"):
        settings["nb201_table"] = locations["nb201_table"]
    if nb201_cifar and settings.get("split_file") is None and locations.get("nb201_cifar_split"):
        settings["split_file"] = locations["nb201_cifar_split"]


def _check_fields(settings: Dict[str, Any], where: str) -> None:
    known = set(SearchConfig.field_names()) - set(RESERVED_FIELDS)
    for key in settings:
        if key not in known:
            hint = " (each run's directory is set by the sweep)" if key in RESERVED_FIELDS else ""
            raise SpecError(f"{where}: unknown search setting {key!r}{hint}; settings are sdarts-search's flags "
                            f"without '--', with '_' for '-' (e.g. optimizer_level for {flag('optimizer_level')})")
        _check_type(key, settings[key], where)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check_type(key: str, value: Any, where: str) -> None:
    """A value of the type of the setting's default (an int where a float goes; any JSON value
    where the default is None: the run's own check judges it)."""
    default = getattr(_DEFAULTS, key)
    if default is None:
        return
    kind = type(default)
    ok = isinstance(value, bool) if kind is bool else (
        isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
        isinstance(value, kind) and not (kind is int and isinstance(value, bool)))
    if not ok:
        raise SpecError(f"{where}: {key} must be {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")


def _level_name(axis: str, value: Any) -> str:
    text = f"{axis}{value}" if isinstance(value, (int, float)) and not isinstance(value, bool) else f"{axis}-{value}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)


def _levels(axis: str, levels: Any, where: str) -> List[Level]:
    if not isinstance(levels, list) or not levels:
        raise SpecError(f"{where}: must be a non-empty list of levels (an empty axis runs nothing)")
    out = []
    for i, level in enumerate(levels):
        if isinstance(level, dict):
            fields = {k: v for k, v in level.items() if k != "name"}
            _check_fields(fields, f"{where}[{i}]")
            name = str(level.get("name") or "_".join(_level_name(k, v) for k, v in fields.items()) or f"{axis}{i}")
        else:
            if axis not in SearchConfig.field_names() or axis in RESERVED_FIELDS:
                raise SpecError(f"{where}[{i}]: a bare value needs the axis to be a search setting; {axis!r} is not one "
                                "(use tables of settings, e.g. {\"name\": ..., \"optimizer_level\": ...})")
            fields, name = {axis: level}, _level_name(axis, level)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise SpecError(f"{where}[{i}]: level name {name!r} must be letters, digits, '.', '_' or '-'")
        out.append(Level(name, fields))
    return out
