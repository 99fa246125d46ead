"""The same data, config and seed give the same run: byte-identical forecast.csv and the same results.

Two fits into ``--run-dir a`` and ``b`` (classical members and the router; separately a run with a tiny
core without backbone on CPU), then ``hybrid forecast`` on each. The manifests' "results" sections
must be equal, metrics, choices and weights included, once the wall-clock timings (keys named
``seconds`` or ending in ``_seconds``, the only fields that may differ) are taken out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hybrid.cli import main
from tests.conftest import make_frame

FAST = ["--context-length", "48", "--horizon", "12", "--seed", "7", "--set", "runtime.progress=false"]


def without_timings(value: Any, removed: set[str]) -> Any:
    """``value`` with every key that holds a wall-clock time dropped (their names are added to ``removed``)."""
    if isinstance(value, dict):
        kept = {}
        for k, v in value.items():
            if k == "seconds" or k.endswith("_seconds"):
                removed.add(k)
            else:
                kept[k] = without_timings(v, removed)
        return kept
    if isinstance(value, list):
        return [without_timings(v, removed) for v in value]
    return value


def fit_twice(tmp_path: Path, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit and forecast into runs a and b; checks the forecasts are byte-identical; returns both manifests."""
    data = tmp_path / "series.csv"
    make_frame(n=600).to_csv(data, index=False)
    for run in ("a", "b"):
        assert main(["fit", "--data", str(data), *FAST, *args, "--run-dir", run]) == 0
        assert main(["forecast", "--run-dir", run]) == 0
    assert Path("a/forecast.csv").read_bytes() == Path("b/forecast.csv").read_bytes()
    return tuple(json.loads(Path(run, "manifest.json").read_text()) for run in ("a", "b"))  # type: ignore[return-value]


def assert_same_results(a: dict[str, Any], b: dict[str, Any]) -> None:
    removed: set[str] = set()
    ra, rb = without_timings(a["results"], removed), without_timings(b["results"], removed)
    assert removed  # the timings were found (and nothing else was taken out)
    assert ra == rb
    assert a["fingerprint"] == b["fingerprint"] and a["periods"] == b["periods"]


def test_classical_members_and_router_are_repeatable(tmp_path: Path) -> None:
    a, b = fit_twice(tmp_path, "--members", "seasonal_naive,linear,ets", "--router", "vote")
    assert_same_results(a, b)
    assert set(a["results"]["12"]["metrics"]) >= {"seasonal_naive", "linear", "ets", "hybrid"}


def test_core_without_backbone_is_repeatable(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    core = ["core.backbone=none", "core.epochs=1", "core.device=cpu", "core.max_train_windows=64",
            "core.max_val_windows=32", "core.reference_members=[linear]"]
    a, b = fit_twice(tmp_path, "--members", "linear,timellm", *[x for s in core for x in ("--set", s)])
    assert_same_results(a, b)
    assert "timellm" in a["results"]["12"]["metrics"]
