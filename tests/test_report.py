"""The router inside the pipeline: --router, evaluate, forecast vote reports, `hybrid report`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.cli import main
from hybrid.pipeline import _member_texts
from hybrid.report import member_period

FAST = ["--context-length", "48", "--horizon", "12", "--set", "runtime.progress=false",
        "--members", "seasonal_naive,linear"]


@pytest.fixture
def long_csv(tmp_path: Path) -> Path:
    """3000 hourly rows, 2 channels, whose regime switches every 200 rows between a
    daily cycle and a noisy random walk: enough validation windows for the held-back check."""
    rng = np.random.default_rng(0)
    n = 3000
    t = np.arange(n)
    cycle = np.sin(2 * np.pi * t / 24)
    walk = np.cumsum(rng.normal(0, 0.3, n))
    regime = (t // 200) % 2 == 0
    cols = {"date": pd.date_range("2021-01-01", periods=n, freq="h")}
    for j in range(2):
        noise = rng.normal(0, 0.1, n)
        cols[f"c{j}"] = np.where(regime, 3 * cycle + noise, walk + noise) + 10 + j
    path = tmp_path / "regimes.csv"
    pd.DataFrame(cols).to_csv(path, index=False)
    return path


def test_router_flag_evaluate_forecast_report(capsys, long_csv):
    members = "seasonal_naive@24,seasonal_naive@12,nlinear"
    assert main(["fit", "--data", str(long_csv), *FAST, "--members", members, "--router", "rules",
                 "--run-dir", "run"]) == 0
    manifest = json.loads(Path("run/manifest.json").read_text())
    comb = manifest["combiner"]["12"]
    assert comb["mode"] == "rules" and manifest["config"]["router"]["mode"] == "rules"
    assert Path("run", comb["router"]["file"]).is_file()
    assert set(comb["router"]["check"]) == {"vote", "select", "rules"}
    assert manifest["metrics"]["12"]["hybrid"]["router"] == "rules"
    capsys.readouterr()

    assert main(["evaluate", "--run-dir", "run", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["horizons"]["12"]
    expected = {"hybrid", "equal", "inverse_error", "best_single", "router_vote", "router_select", "router_rules",
                *members.split(",")}
    assert expected <= set(scores)

    assert main(["forecast", "--run-dir", "run"]) == 0
    out = capsys.readouterr().out
    assert "report.md" in out
    md = Path("run/report.md").read_text()
    for section in ("# Forecast report", "## How the forecast is made", "## c0", "### Why", "### Members",
                    "### What drove the weights", "### Weight per period", "## Router check on held-back",
                    "## Rule table", "![c0](plot-c0.png)"):
        assert section in md, section
    rep = json.loads(Path("run/report.json").read_text())
    ch = rep["channels"]["c0"]
    assert {r["member"] for r in ch["members"]} == set(members.split(","))
    assert sum(r["weight"] for r in ch["members"]) == pytest.approx(1.0)
    assert sum(r["selected"] for r in ch["members"]) == 1
    assert set(ch["period_weights"]) == {"24", "12", "no period"}
    assert sum(ch["period_weights"].values()) == pytest.approx(1.0)
    assert all(r["val_mse"] is not None and r["test_mse"] is not None for r in ch["members"])
    for col in ("c0", "c1"):
        png = Path(f"run/plot-{col}.png")
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    if rep["fallback"] is None:
        assert ch["router"]["rule"] and ch["router"]["use"] in members.split(",")
    else:
        assert "**Fallback.**" in md

    # `hybrid report` re-renders from the stored forecast
    Path("run/report.md").unlink()
    Path("run/plot-c1.png").unlink()
    assert main(["report", "--run-dir", "run"]) == 0
    assert Path("run/report.md").read_text() == md
    assert Path("run/plot-c1.png").is_file()
    assert main(["report", "--run-dir", "run", "--output-dir", "elsewhere"]) == 0
    assert Path("elsewhere/report.json").is_file()


def test_vote_is_the_default_and_forecast_uses_stored_router(capsys, long_csv):
    assert main(["fit", "--data", str(long_csv), *FAST, "--members", "seasonal_naive@24,linear",
                 "--run-dir", "run"]) == 0
    manifest = json.loads(Path("run/manifest.json").read_text())
    comb = manifest["combiner"]["12"]
    assert comb["mode"] == "vote"
    assert main(["forecast", "--run-dir", "run", "--horizon", "6"]) == 0
    frame = pd.read_csv("run/forecast.csv")
    assert len(frame) == 6
    state = json.loads(Path("run/last_forecast.json").read_text())
    for col in ("c0", "c1"):
        w = {n: state["weights"][n][col] for n in state["weights"]}
        assert all(v >= 0 for v in w.values()) and sum(w.values()) == pytest.approx(1.0)
        combined = sum(w[n] * np.asarray(state["members"][n][col]) for n in w)
        np.testing.assert_allclose(frame[col], combined, rtol=1e-4)
    md = Path("run/report.md").read_text()
    if comb.get("fallback"):
        assert "**Fallback.**" in md and "falls back" not in md
    else:
        assert "For an average validation window" in md
    assert "| feature | value | z | favours | disfavours | push |" in md


def test_static_router_and_bad_router_flag(capsys, long_csv):
    assert main(["fit", "--data", str(long_csv), *FAST, "--router", "equal", "--run-dir", "run"]) == 0
    m = json.loads(Path("run/manifest.json").read_text())["metrics"]["12"]
    assert m["hybrid"]["router"] == "equal" and m["hybrid"]["test"] == m["equal"]["test"]
    capsys.readouterr()
    assert main(["fit", "--data", str(long_csv), *FAST, "--router", "magic"]) == 2
    assert "--router" in capsys.readouterr().err
    assert main(["fit", "--data", str(long_csv), *FAST, "--set", "router.mode=magic"]) == 2
    assert "router.mode must be one of" in capsys.readouterr().err


def test_single_member_runs_without_router(capsys, long_csv):
    assert main(["fit", "--data", str(long_csv), *FAST, "--members", "linear", "--run-dir", "run"]) == 0
    comb = json.loads(Path("run/manifest.json").read_text())["combiner"]["12"]
    assert "router" not in comb and comb["fallback"] == "best_single"
    assert main(["forecast", "--run-dir", "run"]) == 0
    assert "No learned router in this run" in Path("run/report.md").read_text()


def test_report_without_a_forecast_is_a_clear_error(capsys, long_csv):
    assert main(["fit", "--data", str(long_csv), *FAST, "--run-dir", "run"]) == 0
    capsys.readouterr()
    assert main(["report", "--run-dir", "run"]) == 2
    assert "run `hybrid forecast` first" in capsys.readouterr().err


def test_member_texts_are_optional_and_never_fatal():
    class Talks:
        def prompt_text(self, context):
            return f"window of {context.shape[-1]} steps"

        def explain(self, context):
            return {"words": ["rise", "peak"], "scores": np.array([0.6, 0.4])}

    class Fails:
        def explain(self, context):
            raise RuntimeError("no attention stored")

    texts = _member_texts({"a": Talks(), "b": Fails(), "c": object()}, np.zeros((1, 2, 48)))
    assert texts["a"]["prompt_text"] == "window of 48 steps"
    assert texts["a"]["explain"] == {"words": ["rise", "peak"], "scores": [0.6, 0.4]}
    assert "unavailable" in texts["b"]["explain"] and "c" not in texts


def test_member_period():
    assert member_period("ets@24") == "24" and member_period("linear") == "no period"
