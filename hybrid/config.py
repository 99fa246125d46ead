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
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml

from baselines.config import ArimaConfig, EtsConfig, LinearConfig, SeasonalNaiveConfig
from kernel.data import DataConfig
from kernel.errors import HybridInputError
from llm_core.config import CoreConfig
from router.config import RouterConfig


def _config_dir() -> Traversable:
    """Where the shipped YAML files are: ``hybrid/configs`` in an installed wheel, else the checkout's ``configs/``.

    The checkout keeps them at its top level (``configs/``); pyproject.toml maps that folder into the package
    as ``hybrid.configs``, so that a wheel or a non-editable install carries them inside ``hybrid`` (read through
    importlib.resources). An editable install runs from the checkout and reads ``configs/`` beside ``hybrid/``.
    """
    installed = resources.files("hybrid") / "configs"
    if installed.joinpath("default.yaml").is_file():
        return installed
    return Path(__file__).resolve().parents[1] / "configs"


CONFIG_DIR = _config_dir()




Refit = Literal["train+val", "train"]
TrainOnly = Literal["all", "classical", "none"]


@dataclass(frozen=True)
class TaskConfig:
    """The forecasting task."""

    context_length: int | Literal["auto"] = "auto"  # input length L; auto: chosen on validation among what fits
    horizons: tuple[int, ...] = (96,)  # every horizon H fitted (forecast serves any H up to the longest)
    members: tuple[str, ...] = ("seasonal_naive", "linear")  # ensemble members (the shipped default.yaml sets the default)
    period_experts: tuple[str, ...] = ()  # e.g. [seasonal_naive, ets]: adds name@p for each detected period p <= L/2
    seed: int = 0  # one seed for numpy, torch and scikit-learn
    n_periods: int = 3  # top-k periods detected on the training part
    refit: Refit = "train+val"  # members behind the test forecasts: refitted on train+val (after every choice) | train
    levels: tuple[float, ...] = (80.0, 95.0)  # interval levels in percent (conformal, from out-of-fold errors); [] for none


@dataclass(frozen=True)
class StackConfig:
    """Cross-fitting: out-of-fold forecasts of the history, which every combination learns from."""

    folds: int = 5  # K contiguous folds over train + val; each member is refitted without each fold
    purge: int = -1  # rows left out on each side of a fold's targets; -1: L + the longest H, less if a fold needs it
    core_folds: int = -1  # folds for the Time-LLM core; -1: auto (2 on CPU, stack.folds on a GPU)
    max_windows: int = 2048  # out-of-fold windows (evenly spread) the router and the static combiners learn from
    top_k_tolerance: float = 0.05  # top_k: members within this relative margin of the best out-of-fold MSE
    gate_ratio: float = 2.0  # set a member aside on a channel where its OOF MSE exceeds this x min(seasonal naive, mean)
    chunk_windows: int = 512  # test windows scored per chunk (bounds memory)
    train_only: TrainOnly = "classical"  # test scores of train-only fits: all | classical (the core costs minutes) | none


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how work runs."""

    n_jobs: int = -1  # joblib workers for per-channel work (joblib: -1 all cores, -2 all but one)
    backend: str = "loky"  # any joblib backend: loky | threading | multiprocessing | dask
    dask_address: str = ""  # scheduler address for backend dask; empty: a local cluster
    progress: bool = True  # progress bars on stderr




@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    stack: StackConfig = field(default_factory=StackConfig)
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


def _describe(hint: Any) -> str:
    """How an error names a type: ``an integer``, ``auto``, ``null``."""
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is typing.Literal:
        return " / ".join(map(str, typing.get_args(hint)))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


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
        wanted = " or ".join(_describe(option) for option in typing.get_args(hint))
        raise HybridInputError(f"{where} must be {wanted}; got {value!r}.")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        text = value if isinstance(value, str) else str(value)
        if text not in choices:
            raise HybridInputError(f"{where} must be one of {', '.join(choices)}; got {value!r}.")
        return text
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


def read_yaml(path: str | Path | Traversable) -> dict[str, Any]:
    """A YAML config layer: a file path, or the name of a config shipped in configs/ (e.g. weather-benchmark)."""
    if isinstance(path, str):
        shipped = CONFIG_DIR / f"{path}.yaml"
        path = shipped if not Path(path).exists() and "/" not in path and shipped.is_file() else Path(path)
    if not path.is_file():
        shipped = sorted(p.name[:-5] for p in CONFIG_DIR.iterdir() if p.name.endswith(".yaml"))
        raise HybridInputError(f"config file not found: {path}; pass an existing YAML file to --config, or the name "
                               f"of a shipped config ({', '.join(shipped)}).")
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


def dataset_config_file(dataset: str) -> Traversable | None:
    """``configs/<dataset>.yaml`` for a known dataset name (case-insensitive)."""
    key = DATASET_ALIASES.get(dataset.lower(), dataset.lower())
    candidate = CONFIG_DIR / f"{key}.yaml"
    return candidate if key != "default" and candidate.is_file() else None


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
    """(key, default, meaning) for every config key: the default a user gets (the section dataclasses' defaults
    as ``configs/default.yaml`` sets them) and the meaning from the dataclasses' inline comments."""
    import inspect
    import re

    shipped = load_config().to_dict()  # the dataclass defaults as configs/default.yaml sets them
    rows = []
    for section, cls in _section_types().items():
        comments: dict[str, str] = {}
        for line in inspect.getsource(cls).splitlines():
            m = re.match(r"\s+(\w+):[^=]+=[^#]*#\s*(.*)$", line)
            if m:
                comments[m.group(1)] = m.group(2).strip()
        for f in dataclasses.fields(cls):
            rows.append((f"{section}.{f.name}", json_like(shipped[section][f.name]), comments.get(f.name, "")))
    return rows


def json_like(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else (value or '""')


def reference_markdown() -> str:
    """The config reference table of docs/configuration.md."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d}` | {m.replace('|', '/')} |" for k, d, m in reference_rows()]
    return "\n".join(lines)


def write_reference(path: Path) -> None:
    """Put the current table between the config-reference markers of ``path`` (docs/configuration.md)."""
    import re

    text = path.read_text()
    new = re.sub(r"(<!-- config-reference:begin.*?-->\n)(.*?)(\n<!-- config-reference:end -->)",
                 lambda m: m.group(1) + reference_markdown() + m.group(3), text, flags=re.S)
    path.write_text(new)


if __name__ == "__main__":  # python -m hybrid.config: rewrite the table of docs/configuration.md
    write_reference(Path(__file__).resolve().parents[1] / "docs" / "configuration.md")
