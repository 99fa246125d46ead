"""benchmarks/suite.py's record merge: a run of one horizon must not drop the other horizons of its seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"
_SPEC = importlib.util.spec_from_file_location("_suite", _PATH)
suite = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(suite)


def rec(horizon: int, seed: int, mse: float, model: str = "hybrid", dataset: str = "weather") -> dict:
    return {"version": suite.VERSION, "dataset": dataset, "horizon": horizon, "seed": seed, "model": model, "mse": mse}


def test_merge_keeps_other_horizons_of_the_same_seed():
    old = [rec(96, 0, 0.15), rec(192, 0, 0.19), rec(96, 1, 0.14)]
    merged = suite.merge(old, [rec(192, 0, 0.18)])
    got = {(r["horizon"], r["seed"]): r["mse"] for r in merged}
    assert got == {(96, 0): 0.15, (192, 0): 0.18, (96, 1): 0.14}


def test_merge_replaces_every_model_of_a_rerun_horizon_and_keeps_peer_records():
    old = [rec(96, 0, 0.2, "linear"), rec(96, 0, 0.15), rec(96, 0, 0.1, "sf:AutoETS"), rec(96, 0, 0.3, dataset="etth1")]
    merged = suite.merge(old, [rec(96, 0, 0.14)])
    assert sorted((r["dataset"], r["model"], r["mse"]) for r in merged) == [
        ("etth1", "hybrid", 0.3), ("weather", "hybrid", 0.14), ("weather", "sf:AutoETS", 0.1)]


def test_every_weather_core_table_is_compared_with_weathers_published_numbers():
    weather = suite.PUBLISHED["weather"]
    for label in ("weather", "weather-core", "weather-core-32k", "weather-core-p64", "weather-core-2core"):
        assert suite.published(label) == weather
    assert suite.published("weather-interpolated") == {}  # a different task: nothing published to compare with
    assert suite.published("etth1") == suite.PUBLISHED["etth1"]
