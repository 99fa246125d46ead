"""The router inside the pipeline: --router, evaluate, forecast vote reports, `hybrid report`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.cli import main
from hybrid.deployment import member_texts
from hybrid.report import (
    describe_feature,
    feature_label,
    features_shown,
    fmt_value,
    member_period,
    member_text_block,
    readable_prompt,
    same_forecast_groups,
)
from kernel.contract import Member
from router.features import feature_names
from tests.conftest import make_frame

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
    # the seasonal members are far worse on average and best in one regime: only without the soundness
    # filter (router.sound_ratio, 2 by default, which leaves them out) can the rules route to them
    assert main(["fit", "--data", str(long_csv), *FAST, "--members", members, "--router", "rules",
                 "--set", "router.sound_ratio=1e9", "--run-dir", "run"]) == 0
    manifest = json.loads(Path("run/manifest.json").read_text())
    entry = manifest["results"]["12"]
    comb = entry["combiner"]
    assert comb["mode"] == "rules" and manifest["config"]["router"]["mode"] == "rules"
    assert Path("run/combiner-h12.json").is_file() and Path("run/combiner-h12.npz").is_file()
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
    # the seasonal members are far worse on average, best in one regime: kept in without the soundness filter
    assert main(["fit", "--data", str(long_csv), *FAST, "--members", "seasonal_naive@24,seasonal_naive@12,nlinear",
                 "--set", "router.sound_ratio=1e9", "--run-dir", "run"]) == 0
    comb = json.loads(Path("run/manifest.json").read_text())["results"]["12"]["combiner"]
    assert comb["mode"] == "vote" and comb["used"] == "vote" and comb["fallback"] is None
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
    top = json.loads(Path("run/report.json").read_text())["channels"]["c0"]["router"]["drivers"][0]
    plain_name = describe_feature(top["feature"])[0]
    assert f"this window differs mostly because the {plain_name} (`{top['feature']}` = " in md  # plain words first
    assert f"favours {top['favours']} over {top['disfavours']}" in md and top["favours"] != top["disfavours"]


def test_router_without_signal_falls_back_visibly(capsys, tmp_path):
    """White noise: two members that cannot be told apart by any feature; the vote falls back, and says so."""
    rng = np.random.default_rng(3)
    n = 2000
    frame = pd.DataFrame({"date": pd.date_range("2021-01-01", periods=n, freq="h"),
                          "c0": rng.normal(size=n), "c1": rng.normal(size=n)})
    frame.to_csv(tmp_path / "noise.csv", index=False)
    assert main(["fit", "--data", str(tmp_path / "noise.csv"), *FAST, "--members", "mean,drift",
                 "--set", "router.check=pooled", "--run-dir", "run"]) == 0
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
    class Talks(Member):
        def prompt_text(self, context, references=None):
            return f"window of {context.shape[-1]} steps"

        def explain(self, context, references=None):
            return {"words": ["rise", "peak"], "scores": np.array([0.6, 0.4])}

    class Fails(Member):
        def explain(self, context, references=None):
            raise RuntimeError("no attention stored")

    # "c" keeps the contract's defaults (None: nothing to say), and so does "b" for its prompt text
    texts = member_texts({"a": Talks(), "b": Fails(), "c": Member()}, np.zeros((1, 2, 48)), {}, {})
    assert texts["a"]["prompt_text"] == "window of 48 steps"
    assert texts["a"]["explain"] == {"words": ["rise", "peak"], "scores": [0.6, 0.4]}
    assert list(texts["b"]) == ["explain"] and "unavailable" in texts["b"]["explain"] and "c" not in texts


def test_member_period():
    assert member_period("ets@24") == "24" and member_period("linear") == "no period"


def test_member_text_said_alike_for_every_channel_is_shown_once():
    same = member_text_block("timellm", "explain", ["(no text prototypes)"] * 21)
    assert sum("(no text prototypes)" in line for line in same) == 1 and "every channel" in "".join(same)
    differ = "".join(member_text_block("timellm", "prompt_text", ["rising", "falling"]))
    assert "rising" in differ and "falling" in differ and "every channel" not in differ


DESCRIPTION = ("Half-hourly electricity demand in England and Wales (megawatts), June to August 2000; strong daily "
               "(48 steps) and weekly (336 steps) cycles.")
# what the core shows of that description after its cut to 16 tokens by an uncased tokenizer, decoded back to text
CUT_PROMPT = ("dataset description : half - hourly electricity demand in england and wales ( megawat Task: forecast "
              "the next 12 steps given the previous 48 steps; min -1.2, max 2.31, median 0.05, trend upward.")


def test_vote_report_reads_like_prose(capsys, tmp_path):
    """Demand-sized values, two members with one forecast, the router's features, the core's cut prompt."""
    frame = make_frame(n=1500)
    for col in ("c0", "c1"):
        frame[col] = (2000 * frame[col]).round(1)  # megawatts: 5-digit values with a daily cycle
    frame.to_csv(tmp_path / "demand.csv", index=False)
    assert main(["fit", "--data", str(tmp_path / "demand.csv"), *FAST, "--members",
                 "seasonal_naive,seasonal_naive@24,linear", "--set", f"data.description={DESCRIPTION}",
                 "--run-dir", "run"]) == 0
    periods = json.loads(Path("run/manifest.json").read_text())["periods"]
    assert [p[0] for p in periods["per_channel"]] == [24, 24]  # seasonal_naive's own period on both channels
    assert main(["forecast", "--run-dir", "run"]) == 0
    md = Path("run/report.md").read_text()
    rep = json.loads(Path("run/report.json").read_text())

    # values in the data's units, with thousands separators, never in scientific notation
    assert re.findall(r"\d(?:\.\d+)?e[+-]?\d+", md) == []
    assert f"from the last observed {frame['c0'].iloc[-1]:,.0f})" in md
    level = rep["channels"]["c0"]["combined"]["level_end"]
    assert f"It ends at {level:,.0f} (" in md and f"| **combined** | | {level:,.0f} |" in md

    # seasonal_naive (the dominant period, 24) and seasonal_naive@24 made one forecast: one row, said once
    rows = rep["channels"]["c0"]["members"]
    assert [r["member"] for r in rows if r["same_forecast_as"]] == ["seasonal_naive@24"]
    both = next(r for r in rows if r["member"] == "seasonal_naive@24")
    assert both["same_forecast_as"] == ["seasonal_naive"]
    assert both["weight"] == pytest.approx(sum(both["weights_each"].values()))
    assert sum(r["weight"] for r in rows) == pytest.approx(1.0) and len(rows) == 2
    # one row per channel; on this smooth daily cycle the seasonal naive forecast is more than 2 x the linear
    # member's out-of-fold MSE, so it is not combined, and the report says so
    assert md.count("| seasonal_naive@24 = seasonal_naive (not sound) | 24 | ") == 2
    assert md.count("**Not sound.** seasonal_naive@24 is not combined on c0: out-of-fold MSE") == 1
    assert not re.search(r"^\| seasonal_naive(@24)? \|", md, flags=re.MULTILINE)
    assert md.count("**Same forecast.** `seasonal_naive@24` and `seasonal_naive` made exactly the same forecast "
                    "(without `@p`, seasonal_naive uses the dominant period, 24)") == 1
    linear = next(r for r in rows if r["member"] == "linear")
    assert rep["channels"]["c0"]["period_weights"] == pytest.approx({"24": both["weight"], "no period": linear["weight"]})

    # features by plain name in the table, each explained once in the glossary
    drivers = rep["channels"]["c0"]["router"]["drivers"]
    assert drivers
    for d in drivers:
        assert f"| {feature_label(d['feature'])} | " in md
    glossary = md.split("## Glossary of window features")[1]
    named = features_shown(rep)
    assert {d["feature"] for d in drivers} <= set(named)
    for name in named:
        assert glossary.count(f"- `{name}` ({describe_feature(name)[0]}): ") == 1

    # the core's prompt, cut inside a word by its tokenizer, is shown up to the last whole word
    state = json.loads(Path("run/last_forecast.json").read_text())
    state["details"]["member_text"] = {"timellm": {"prompt_text": [CUT_PROMPT, CUT_PROMPT]}}
    Path("run/last_forecast.json").write_text(json.dumps(state))
    assert main(["report", "--run-dir", "run"]) == 0
    md = Path("run/report.md").read_text()
    assert "megawat" not in md
    assert ("Dataset description: Half-hourly electricity demand in England and Wales\u2026 Task: forecast the next "
            "12 steps given the previous 48 steps;") in md


def test_fmt_value_writes_plain_numbers():
    assert fmt_value(26270.4) == "26,270"
    assert fmt_value(-2378.2, sign=True) == "-2,378" and fmt_value(2378.2, sign=True) == "+2,378"
    assert fmt_value(251.34) == "251.3" and fmt_value(23.134) == "23.13"
    assert fmt_value(0.025613) == "0.0256" and fmt_value(0.0073012) == "0.00730"
    assert fmt_value(1.5e-7) == "0.000000150" and fmt_value(1e-12) == "0" and fmt_value(0.0) == "0"
    assert fmt_value(1234567) == "1,234,567" and fmt_value(None) == "-"


def test_every_router_feature_has_a_plain_name():
    names = feature_names((24, 168), ["arima", "seasonal_naive@24"])
    unknown = describe_feature("no_such_feature")
    assert all(describe_feature(n) != (n, unknown[1]) for n in names)
    assert describe_feature("dev:arima")[0] == "arima against the others"
    assert "median forecast" in describe_feature("dev:arima")[1]
    assert describe_feature("backtest:seasonal_naive@24")[0] == "seasonal_naive@24's recent error"
    assert describe_feature("median_rel")[0] == "window median"
    assert describe_feature("acf@168")[0] == "168-step repetition"
    assert feature_label("volatility_ratio") == "recent volatility (`volatility_ratio`)"


def test_readable_prompt_cuts_the_description_at_a_word():
    task = " Task: forecast the next 96 steps."
    cased = "Dataset description: Half-hourly electricity demand in England and Wales (megawat" + task
    assert readable_prompt(cased, DESCRIPTION) == (
        "Dataset description: Half-hourly electricity demand in England and Wales\u2026" + task)
    on_a_word = "Dataset description: Half-hourly electricity demand in England and" + task
    assert readable_prompt(on_a_word, DESCRIPTION) == on_a_word.replace(" and", " and\u2026")
    whole = "dataset description : " + DESCRIPTION.lower().replace("(", "( ") + task
    assert readable_prompt(whole, DESCRIPTION) == f"Dataset description: {DESCRIPTION}{task}"
    unknown = "dataset description : [UNK] demand" + task  # not the run's description: shown as the core read it
    assert readable_prompt(unknown, DESCRIPTION) == unknown
    assert readable_prompt("(no prompt: core.prompt is false)", DESCRIPTION) == "(no prompt: core.prompt is false)"


def test_same_forecast_groups_put_the_period_expert_first():
    same, other = [1.0, 2.0, 3.0], [1.0, 2.0, 3.5]
    groups = same_forecast_groups({"seasonal_naive": same, "linear": other, "seasonal_naive@24": same})
    assert groups == [["seasonal_naive@24", "seasonal_naive"], ["linear"]]
    assert same_forecast_groups({"a": same, "b": other}) == [["a"], ["b"]]
