"""Configuration: frozen dataclasses loaded from YAML, strict about keys.

Layers, later wins: ``configs/default.yaml`` < the dataset's own file
(``configs/<dataset>.yaml`` when one matches) < ``--config FILE`` < CLI
flags < ``--set section.key=value``. An unknown section or key, or a value of
the wrong type, is a :class:`HybridInputError` that names it and lists the
valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from baselines.config import ArimaConfig, EtsConfig, LinearConfig, SeasonalNaiveConfig
from hybrid.errors import HybridInputError
from llm_core.config import CoreConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class DataConfig:
    """How the series is read and checked (see README, "Config reference")."""

    name: str = ""  # dataset name in reports; default: file stem or built-in name
    description: str = ""  # domain description used in the core's prompt
    time_column: str = "auto"  # auto: date / ds / timestamp / time / datetime, else the first column
    target: str = "auto"  # auto: OT when present, else the last column
    features: str = "M"  # M: all in, all out; S: target only; MS: all in, target out
    missing: str = "error"  # NaN, inf, sentinels: error | interpolate | ffill | drop
    sentinels: tuple[float, ...] = (-9999.0, -99999.0)  # values that mean "missing"
    duplicates: str = "error"  # duplicate timestamps: error | first | mean
    gaps: str = "error"  # irregular spacing: error | interpolate | allow
    freq: str = "auto"  # pandas alias, or auto (inferred from the timestamps)
    split: str = "auto"  # auto (ett for ETT* files, else ratio) | ett | ratio
    split_ratios: tuple[float, ...] = (0.7, 0.1, 0.2)  # train / val / test fractions for split ratio


@dataclass(frozen=True)
class TaskConfig:
    """The forecasting task."""

    context_length: int = 512  # input length L
    horizons: tuple[int, ...] = (96,)  # every horizon H fitted (forecast serves any H up to the longest)
    members: tuple[str, ...] = ("seasonal_naive", "linear")  # ensemble members (configs/default.yaml sets the real default)
    period_experts: tuple[str, ...] = ()  # e.g. [seasonal_naive, ets]: adds name@p for each detected period p <= L/2
    seed: int = 0  # one seed for numpy, torch and scikit-learn
    n_periods: int = 3  # top-k periods detected on the training part


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how work runs."""

    n_jobs: int = -1  # joblib workers for per-channel work; -1: all cores
    backend: str = "loky"  # any joblib backend: loky | threading | multiprocessing | dask
    dask_address: str = ""  # scheduler address for backend dask; empty: a local cluster
    progress: bool = True  # progress bars on stderr


@dataclass(frozen=True)
class RouterConfig:
    """How members are combined into the ``hybrid`` forecast."""

    mode: str = "vote"  # vote | select | rules (learned) | equal | inverse_error | best_single (static)
    holdout_fraction: float = 0.25  # last part of the validation windows held back to check the router
    min_gain: float = 0.001  # relative MSE gain over equal and best single needed on the held-back part
    l2: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)  # L2 candidates of the softmax models, chosen on an inner split
    max_iter: int = 300  # L-BFGS iterations of the softmax models
    tree_depth: int = 3  # depth of the rules tree
    tree_min_leaf: float = 0.02  # smallest leaf of the rules tree, as a fraction of the samples
    backtest_steps: int = 0  # H' of the in-context backtest feature; 0: min(H, L // 4)
    top_features: int = 5  # features listed per channel in the vote report


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    seasonal_naive: SeasonalNaiveConfig = field(default_factory=SeasonalNaiveConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    arima: ArimaConfig = field(default_factory=ArimaConfig)
    ets: EtsConfig = field(default_factory=EtsConfig)
    core: CoreConfig = field(default_factory=CoreConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for f in dataclasses.fields(self):
            section = dataclasses.asdict(getattr(self, f.name))
            out[f.name] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
        return out


SECTIONS: dict[str, type] = {f.name: f.type for f in dataclasses.fields(Config)}  # type: ignore[misc]


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {name: hints[name] for name in SECTIONS}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML value to the field's declared type, or raise."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, where)
            except HybridInputError as exc:
                errors.append(str(exc))
        raise HybridInputError(f"{where}: {value!r} is not a valid value ({hint}).")
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_coerce(v, item, where) for v in items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise HybridInputError(f"{where} must be true or false; got {value!r}.")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise HybridInputError(f"{where} must be an integer; got {value!r}.")
        try:
            as_float = float(value)
        except ValueError:
            raise HybridInputError(f"{where} must be an integer; got {value!r}.") from None
        if as_float != int(as_float):
            raise HybridInputError(f"{where} must be an integer; got {value!r}.")
        return int(as_float)
    if hint is float:
        if isinstance(value, bool):
            raise HybridInputError(f"{where} must be a number; got {value!r}.")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise HybridInputError(f"{where} must be a number; got {value!r}.") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise HybridInputError(f"{where} must be a string; got {value!r}.")
        return "" if value is None else str(value)
    if hint is typing.Any:
        return value
    raise TypeError(f"unsupported config type {hint} at {where}")


def _merge_into(base: dict[str, dict[str, Any]], layer: dict[str, Any], source: str) -> None:
    """Merge one layer ({section: {key: value}}) into ``base``, checking keys."""
    if layer is None:
        return
    if not isinstance(layer, dict):
        raise HybridInputError(f"{source}: a config file must be a mapping of sections; got {type(layer).__name__}.")
    types_ = _section_types()
    for section, keys in layer.items():
        if section not in types_:
            raise HybridInputError(
                f"{source}: unknown config section {section!r}; valid sections: {', '.join(types_)}."
            )
        if keys is None:
            continue
        if not isinstance(keys, dict):
            raise HybridInputError(f"{source}: section {section!r} must be a mapping of keys.")
        hints = typing.get_type_hints(types_[section])
        for key, value in keys.items():
            if key not in hints:
                raise HybridInputError(
                    f"{source}: unknown config key {section}.{key}; valid keys in {section!r}: "
                    f"{', '.join(hints)}."
                )
            base.setdefault(section, {})[key] = _coerce(value, hints[key], f"{source}: {section}.{key}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise HybridInputError(f"config file not found: {path}; pass an existing YAML file to --config.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise HybridInputError(f"config file {path} is not valid YAML ({first}).") from None
    return data or {}


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """Turn ``["core.llm_layers=2", ...]`` into ``{"core": {"llm_layers": 2}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise HybridInputError(
                f"--set expects section.key=value (e.g. --set core.llm_layers=2); got {item!r}."
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


DATASET_ALIASES = {"exchange_rate": "exchange"}


def dataset_config_file(dataset: str) -> Path | None:
    """``configs/<dataset>.yaml`` for a known dataset name (case-insensitive)."""
    key = dataset.lower()
    candidate = CONFIG_DIR / f"{DATASET_ALIASES.get(key, key)}.yaml"
    return candidate if candidate.is_file() and candidate.stem != "default" else None


def build_config(layers: list[tuple[str, dict[str, Any]]]) -> Config:
    """Build a :class:`Config` from ``(source, mapping)`` layers, later wins."""
    merged: dict[str, dict[str, Any]] = {}
    for source, layer in layers:
        _merge_into(merged, layer, source)
    types_ = _section_types()
    kwargs = {section: types_[section](**merged.get(section, {})) for section in types_}
    return Config(**kwargs)


def load_config(
    dataset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    sets: list[str] | None = None,
) -> Config:
    """The full layered config (see module docstring)."""
    layers: list[tuple[str, dict[str, Any]]] = [
        ("configs/default.yaml", read_yaml(CONFIG_DIR / "default.yaml"))
    ]
    if dataset:
        ds_file = dataset_config_file(dataset)
        if ds_file is not None:
            layers.append((f"configs/{ds_file.name}", read_yaml(ds_file)))
    if config_file:
        layers.append((str(config_file), read_yaml(config_file)))
    if overrides:
        layers.append(("command line", overrides))
    if sets:
        layers.append(("--set", parse_set(sets)))
    return build_config(layers)


def config_from_dict(d: dict[str, dict[str, Any]]) -> Config:
    """Rebuild a config saved in a manifest."""
    return build_config([("manifest", d)])


def reference_rows() -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every config key, read from the section
    dataclasses and their inline comments (the single source of the docs)."""
    import inspect
    import re

    rows = []
    for section, cls in _section_types().items():
        comments: dict[str, str] = {}
        for line in inspect.getsource(cls).splitlines():
            m = re.match(r"\s+(\w+):[^=]+=[^#]*#\s*(.*)$", line)
            if m:
                comments[m.group(1)] = m.group(2).strip()
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            shown = list(default) if isinstance(default, tuple) else default
            rows.append((f"{section}.{f.name}", json_like(shown), comments.get(f.name, "")))
    return rows


def json_like(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else (value or '""')


def reference_markdown() -> str:
    """The README's config reference table."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {m.replace('|', '/')} |" for k, d, m in reference_rows()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown())
