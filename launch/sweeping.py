"""Sweep expansion (big_vision style) and config-file loading, shared by the sweep and recipe CLIs.

Runs and the CLIs' overrides are ``{dotted.key: value}`` dicts, written on a train command line as
``--config.dotted.key=value`` (:func:`override_flags`, read back by :func:`parse_override_flags`).

A config file may define ``get_hyper(h)`` returning a list of runs built with :class:`Hyper`::

    def get_hyper(h):
        return h.product([
            h.sweep("config.optimizer.learning_rate", [3e-4, 1e-3]),
            h.sweep("config.model.base_channels", [32, 48]),
        ])

``h.sweep(key, values)`` -> one run per value; ``h.fixed(key, value)`` -> a single run;
``h.product([a, b, ...])`` -> cartesian product (last list varies fastest); ``h.zip([a, b])`` ->
element-wise (equal lengths); ``h.chain([a, b])`` -> a's runs then b's runs. A run is a dict
``{dotted.key: value}``; keys may start with ``config.`` (stripped). ``get_hyper(h, arg)`` also
receives the config argument (the part after ``:``).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import importlib.util
import inspect
import itertools
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from vdm_jax.config import ConfigError, from_configdict

Run = dict[str, Any]


class Hyper:
    """The ``h`` passed to ``get_hyper``. Stateless; every method returns a list of runs."""

    @staticmethod
    def _key(key: str) -> str:
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"sweep key must be a dotted field name, got {key!r}")
        return key.removeprefix("config.")

    def sweep(self, key: str, values: Iterable[Any]) -> list[Run]:
        values = list(values)
        if not values:
            raise ValueError(f"sweep over {key!r} has no values")
        key = self._key(key)
        return [{key: v} for v in values]

    def fixed(self, key: str, value: Any) -> list[Run]:
        return [{self._key(key): value}]

    def product(self, lists: Sequence[list[Run]]) -> list[Run]:
        out = []
        for combo in itertools.product(*lists):
            out.append(_merge(combo, "product"))
        return out

    def zip(self, lists: Sequence[list[Run]]) -> list[Run]:
        lengths = {len(x) for x in lists}
        if len(lengths) > 1:
            raise ValueError(f"zip needs lists of equal length, got lengths {[len(x) for x in lists]}")
        return [_merge(combo, "zip") for combo in zip(*lists)]

    def chain(self, lists: Sequence[list[Run]]) -> list[Run]:
        return [dict(r) for x in lists for r in x]


def _merge(runs: Iterable[Run], op: str) -> Run:
    out: Run = {}
    for r in runs:
        clash = set(out) & set(r)
        if clash:
            raise ValueError(f"{op} combines two sweeps over the same key {sorted(clash)[0]!r}")
        out.update(r)
    return out


# ---------------------------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------------------------


def split_config_arg(spec: str) -> tuple[str, str | None]:
    """``configs/x.py:smoke,steps=3`` -> (``configs/x.py``, ``smoke,steps=3``)."""
    path, sep, arg = spec.partition(":")
    return path, (arg if sep else None)


def load_config_module(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: no such config file {path!r}")
    name = "_vdm_cfg_" + re.sub(r"\W", "_", os.path.abspath(path))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config: {path} defines no get_config(arg)")
    return module


def load_configdict(spec: str):
    path, arg = split_config_arg(spec)
    module = load_config_module(path)
    return module.get_config(arg) if arg is not None else module.get_config()


def expand(spec: str) -> list[Run]:
    """The runs of the sweep defined by ``get_hyper`` in the config file ``spec``."""
    path, arg = split_config_arg(spec)
    module = load_config_module(path)
    get_hyper = getattr(module, "get_hyper", None)
    if get_hyper is None:
        raise ValueError(f"--config: {path} defines no get_hyper(h): nothing to sweep")
    n_params = len(inspect.signature(get_hyper).parameters)
    runs = get_hyper(Hyper(), arg) if n_params >= 2 else get_hyper(Hyper())
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ValueError(f"{path}: get_hyper must return a list of dicts (use h.sweep/h.product)")
    if not runs:
        raise ValueError(f"{path}: get_hyper returned no runs")
    return runs


def apply_overrides(cd, overrides: Run):
    """A copy of the ConfigDict ``cd`` with ``{dotted.key: value}`` set (locked: unknown keys fail)."""
    cd = copy.deepcopy(cd)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = cd
        for i, part in enumerate(parents):
            if part not in node:
                raise ValueError(f"sweep key 'config.{key}': no field '{'.'.join(parents[:i + 1])}'")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"sweep key 'config.{key}': no such field")
        try:
            node[leaf] = tuple(value) if isinstance(value, list) else value
        except (TypeError, ValueError) as e:
            raise ValueError(f"sweep key 'config.{key}': bad value {value!r}: {e}") from None
    return cd


def parse_value(text: str) -> Any:
    """An override's value: a Python literal when it parses, else the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_override_flags(items: Sequence[str]) -> Run:
    """``["--config.a.b=1", ...]`` -> ``{"a.b": 1, ...}``."""
    out: Run = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("--config."):
            raise ValueError(f"override {item!r}: expected --config.FIELD=VALUE")
        out[Hyper._key(key.removeprefix("--"))] = parse_value(value)
    return out


# ---------------------------------------------------------------------------------------------
# Runs: names and command lines
# ---------------------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """How a value is written on the command line (``--config.x=VALUE``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def override_flags(overrides: Run) -> list[str]:
    return [f"--config.{k}={format_value(v)}" for k, v in overrides.items()]


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
MAX_NAME = 100


def run_name(index: int, overrides: Run) -> str:
    """Deterministic, filesystem-safe: ``003-learning_rate=0.001-base_channels=48``."""
    parts = [f"{index:03d}"]
    for k, v in overrides.items():
        parts.append(f"{k.rsplit('.', 1)[-1]}={format_value(v)}")
    name = _UNSAFE.sub("_", "-".join(parts)).strip("._") or f"{index:03d}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}-{digest}"
    return name


@dataclasses.dataclass(frozen=True)
class SweepRun:
    index: int
    name: str
    overrides: Run  # this run's sweep values (shown, and used in the run name)
    flags: tuple[str, ...]  # --config.* flags: sweep values plus the sweep-wide overrides


def make_runs(spec: str, sets: Run | None = None, validate: bool = True) -> list[SweepRun]:
    """Expand the sweep of config ``spec``; ``sets`` (``{dotted.key: value}``) apply to every run; with
    ``validate``, refuse any run whose config is invalid."""
    runs = expand(spec)
    sets = sets or {}
    base = load_configdict(spec) if validate else None
    # run names show only the keys that vary (h.fixed values are in every run's flags, not its name)
    varying = {k for k in {k for r in runs for k in r} if len({repr(r.get(k)) for r in runs}) > 1}
    out = []
    for i, overrides in enumerate(runs):
        clash = sorted(set(overrides) & set(sets))
        if clash:
            raise ValueError(f"--config.{clash[0]} clashes with the sweep over that key")
        if validate:
            try:
                from_configdict(apply_overrides(base, {**overrides, **sets}))
            except ConfigError as e:
                raise ValueError(f"sweep run {i} ({overrides}): {e}") from None
        flags = tuple(override_flags({**overrides, **sets}))
        shown = {k: v for k, v in overrides.items() if k in varying} or overrides
        out.append(SweepRun(i, run_name(i, shown), dict(overrides), flags))
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise ValueError("sweep run names are not unique")
    return out
