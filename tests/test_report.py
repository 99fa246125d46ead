"""The router inside the pipeline: --router, evaluate, forecast vote reports, `hybrid report`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.cli import main
from hybrid.deployment import member_texts
from hybrid.report import member_period, member_text_block

FAST = ["--context-length", "48", "--horizon", "12", "--set", "runtime.progress=false",
        "--members", "seasonal_naive,linear"]


@pytest.fixture
def long_csv(tmp_path: Path) -> Path:
    """3000 hourly rows, 2 channels, whose regime switches every 200 rows between a
    daily cycle and a noisy random walk: what each window looks like says which member wins."""
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
    entry = manifest["results"]["12"]
    comb = entry["combiner"]
    assert comb["mode"] == "rules" and manifest["config"]["router"]["mode"] == "rules"
    assert Path("run/combiner-h12.joblib").is_file()
    assert set(entry["router"]["check"]) == {"vote", "select", "rules", "static"}
    # the regimes are visible in the features: the rule table beats equal weights and the best member out of fold
    check = entry["router"]["check"]["rules"]
    assert check["passed"] and comb["used"] == "rules" and comb["fallback"] is None
    assert check["oof_mse"] < min(check["oof_mse_equal"], check["oof_mse_best_single"])
    assert entry["metrics"]["hybrid"]["router"] == "rules"
    assert entry["metrics"]["hybrid"]["test"]["mse"] == entry["metrics"]["router_rules"]["test"]["mse"]
    capsys.readouterr()

    assert main(["evaluate", "--run-dir", "run", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["horizons"]["12"]
    expected = {"hybrid", "equal", "inverse_error", "best_single", "top_k", "router_vote", "router_select",
                "router_rules", *members.split(",")}
    assert expected <= set(scores)

    assert main(["forecast", "--run-dir", "run"]) == 0
    out = capsys.readouterr().out
    assert "report.md" in out
    md = Path("run/report.md").read_text()
    for section in ("# Forecast report", "## How the forecast is made", "## c0", "### Why", "### Members",
                    "### What drove the weights", "### Weight per period", "## Router check, out of fold",
                    "## Out-of-fold error by fold", "## Rule table", "![c0](plot-c0.png)", "% band at the end"):
        assert section in md, section
    assert "**Fallback.**" not in md
    rep = json.loads(Path("run/report.json").read_text())
    ch = rep["channels"]["c0"]
    assert {r["member"] for r in ch["members"]} == set(members.split(","))
    assert sum(r["weight"] for r in ch["members"]) == pytest.approx(1.0)
    assert sum(r["selected"] for r in ch["members"]) == 1
    assert set(ch["period_weights"]) == {"24", "12", "no period"}
    assert sum(ch["period_weights"].values()) == pytest.approx(1.0)
    assert all(r["oof_mse"] is not None and r["test_mse"] is not None for r in ch["members"])
    assert set(rep["oof_by_fold"]["nlinear"]) == {"0", "1", "2", "3", "4"}
    assert ch["router"]["rule"] and ch["router"]["use"] in members.split(",")
    assert ch["band"]["lo_end"] < ch["combined"]["level_end"] < ch["band"]["hi_end"]
    for col in ("c0", "c1"):
        png = Path(f"run/plot-{col}.png")
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"

    # `hybrid report` re-renders from the stored forecast
    Path("run/report.md").unlink()
    Path("run/plot-c1.png").unlink()
    assert main(["report", "--run-dir", "run"]) == 0
    assert Path("run/report.md").read_text() == md
    assert Path("run/plot-c1.png").is_file()
    assert main(["report", "--run-dir", "run", "--output-dir", "elsewhere"]) == 0
    assert Path("elsewhere/report.json").is_file()


def test_vote_is_the_default_and_forecast_uses_stored_router(capsys, long_csv):
    assert main(["fit", "--data", str(long_csv), *FAST, "--members", "seasonal_naive@24,seasonal_naive@12,nlinear",
                 "--run-dir", "run"]) == 0
    comb = json.loads(Path("run/manifest.json").read_text())["results"]["12"]["combiner"]
    assert comb["mode"] == "vote" and comb["used"] == "vote"  # the regimes make the vote pass its check
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
    assert "**Fallback.**" not in md and "For an average window" in md
    assert "| feature | value | z | favours | disfavours | push |" in md


def test_router_without_signal_falls_back_visibly(capsys, tmp_path):
    """White noise: two members that cannot be told apart by any feature; the vote falls back, and says so."""
    rng = np.random.default_rng(3)
    n = 2000
    frame = pd.DataFrame({"date": pd.date_range("2021-01-01", periods=n, freq="h"),
                          "c0": rng.normal(size=n), "c1": rng.normal(size=n)})
    frame.to_csv(tmp_path / "noise.csv", index=False)
    assert main(["fit", "--data", str(tmp_path / "noise.csv"), *FAST, "--members", "mean,drift",
                 "--run-dir", "run"]) == 0
    entry = json.loads(Path("run/manifest.json").read_text())["results"]["12"]
    comb = entry["combiner"]
    assert comb["fallback"] is not None
    assert comb["used"] == comb["fallback"] == entry["router"]["check"]["static"]["fallback"]
    assert "out of fold it scored" in comb["fallback_reason"]
    assert main(["forecast", "--run-dir", "run"]) == 0
    md = Path("run/report.md").read_text()
    assert "**Fallback.**" in md and comb["fallback"] in md


def test_static_router_and_bad_router_flag(capsys, long_csv):
    assert main(["fit", "--data", str(long_csv), *FAST, "--router", "equal", "--run-dir", "run"]) == 0
    m = json.loads(Path("run/manifest.json").read_text())["results"]["12"]["metrics"]
    assert m["hybrid"]["router"] == "equal"
    assert {k: m["hybrid"]["test"][k] for k in ("mse", "mae", "per_channel")} == {
        k: m["equal"]["test"][k] for k in ("mse", "mae", "per_channel")}
    assert m["hybrid"]["oof"] == m["equal"]["oof"]
    capsys.readouterr()
    assert main(["fit", "--data", str(long_csv), *FAST, "--router", "magic"]) == 2
    assert "--router" in capsys.readouterr().err
    assert main(["fit", "--data", str(long_csv), *FAST, "--set", "router.mode=magic"]) == 2
    assert "router.mode must be one of" in capsys.readouterr().err


def test_single_member_runs_without_router(capsys, long_csv):
    assert main(["fit", "--data", str(long_csv), *FAST, "--members", "linear", "--run-dir", "run"]) == 0
    entry = json.loads(Path("run/manifest.json").read_text())["results"]["12"]
    assert "router" not in entry and entry["combiner"]["fallback"] == "best_single"
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

    texts = member_texts({"a": Talks(), "b": Fails(), "c": object()}, np.zeros((1, 2, 48)), {}, {})
    assert texts["a"]["prompt_text"] == "window of 48 steps"
    assert texts["a"]["explain"] == {"words": ["rise", "peak"], "scores": [0.6, 0.4]}
    assert "unavailable" in texts["b"]["explain"] and "c" not in texts


def test_member_period():
    assert member_period("ets@24") == "24" and member_period("linear") == "no period"


def test_member_text_said_alike_for_every_channel_is_shown_once():
    same = member_text_block("timellm", "explain", ["(no text prototypes)"] * 21)
    assert sum("(no text prototypes)" in line for line in same) == 1 and "every channel" in "".join(same)
    differ = "".join(member_text_block("timellm", "prompt_text", ["rising", "falling"]))
    assert "rising" in differ and "falling" in differ and "every channel" not in differ
