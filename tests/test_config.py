import json
import re
from pathlib import Path

import pytest
import yaml

from hybrid.config import Config, load_config, parse_set, reference_markdown, reference_rows
from kernel.errors import HybridInputError

CONFIG_DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_config_reference_is_current():
    text = CONFIG_DOC.read_text()
    table = re.search(r"<!-- config-reference:begin.*?-->\n(.*?)\n<!-- config-reference:end -->", text, re.S)
    assert table, "docs/configuration.md lost its config reference markers"
    assert table.group(1) == reference_markdown(), "run `python -m hybrid.config` and paste the table into it"


def test_config_reference_shows_what_a_user_gets():
    rows = {key: default for key, default, _ in reference_rows()}
    shipped = load_config()
    assert rows["task.members"] == json.dumps(list(shipped.task.members))  # default.yaml's, not the dataclass's
    assert rows["task.period_experts"] == '["seasonal_naive"]'
    assert rows["task.context_length"] == "auto"


def test_every_key_is_documented():
    undocumented = [key for key, _, meaning in reference_rows() if not meaning]
    assert undocumented == []


def _flat(cfg: Config) -> dict[str, object]:
    return {f"{section}.{key}": value for section, keys in cfg.to_dict().items() for key, value in keys.items()}


def _flat_yaml(layer: dict[str, dict[str, object]]) -> dict[str, object]:
    return {f"{section}.{key}": value for section, keys in layer.items() for key, value in keys.items()}


def test_layers_and_overrides():
    cfg = load_config("ETTh1", overrides={"task": {"horizons": [96, 192]}}, sets=["core.llm_layers=4"])
    # each layer changes the keys it names and no other: the shipped default.yaml over the dataclass defaults, then
    # etth1.yaml, the overrides and --set over that
    shipped = {name: yaml.safe_load((CONFIG_DOC.parents[1] / "configs" / f"{name}.yaml").read_text())
               for name in ("default", "etth1")}
    default, got = _flat(load_config()), _flat(cfg)
    layer, bare = _flat_yaml(shipped["default"]), _flat(Config())
    assert {k: default[k] for k in layer} == layer and {k for k, v in default.items() if v != bare[k]} <= set(layer)
    assert default["task.members"] != bare["task.members"]  # default.yaml does change something
    assert {k: v for k, v in got.items() if v != default[k]} == {
        "data.description": shipped["etth1"]["data"]["description"], "data.split": "ett", "task.context_length": 512,
        "task.horizons": [96, 192], "core.llm_layers": 4}
    assert cfg.data.split == "ett" and "Transformer" in cfg.data.description
    assert cfg.task.horizons == (96, 192) and cfg.core.llm_layers == 4
    assert load_config("exchange_rate").data.split == "ratio"
    assert parse_set(["a.b=[1, 2]"]) == {"a": {"b": [1, 2]}}


@pytest.mark.parametrize("bad", ["nodot=1", "core.llm_layers", "=3"])
def test_set_syntax_errors(bad):
    with pytest.raises(HybridInputError, match="section.key=value"):
        load_config(sets=[bad])


def test_types_are_checked():
    with pytest.raises(HybridInputError, match="core.prompt must be true or false"):
        load_config(sets=["core.prompt=maybe"])
    assert load_config(sets=["core.patch_len=auto"]).core.patch_len == "auto"
    assert load_config(sets=["core.patch_len=24"]).core.patch_len == 24


def test_weather_is_strict_by_default_and_the_benchmark_treatment_is_a_shipped_config():
    strict = load_config("weather")
    assert strict.data.missing == "error" and strict.data.duplicates == "error" and strict.data.gaps == "error"
    assert strict.data.split == "ratio" and strict.data.description.startswith("Weather")
    bench = load_config("weather", "weather-benchmark")
    assert bench.data.sentinels == () and bench.data.duplicates == "keep" and bench.data.gaps == "allow"
    with pytest.raises(HybridInputError, match="shipped config"):
        load_config("weather", "no-such-config")


def test_a_config_built_in_code_is_checked_as_a_loaded_one():
    """A Config made in Python (the API takes one) meets the same typed choices as a YAML or --set value."""
    from dataclasses import replace

    from hybrid.pipeline import check_config

    cfg = Config()
    assert check_config(cfg) == tuple(sorted(set(cfg.task.horizons)))
    for bad, needle in [(replace(cfg, router=replace(cfg.router, mode="bogus")), "router.mode must be one of"),
                        (replace(cfg, stack=replace(cfg.stack, train_only="some")), "stack.train_only must be one of"),
                        (replace(cfg, task=replace(cfg.task, context_length=1)), "at least 2"),
                        (replace(cfg, core=replace(cfg.core, attn_dropout=1.0)), "core.attn_dropout must be"),
                        (replace(cfg, core=replace(cfg.core, dropout=-0.1)), "core.dropout must be")]:
        with pytest.raises(HybridInputError, match=needle):
            check_config(bad)
