"""Vote reports: why the forecast is what it is, as Markdown, JSON and PNG plots.

``hybrid forecast`` calls :func:`write_report`: it stores everything the
report needs in ``<run_dir>/last_forecast.json`` (the forecast and its bands,
the context, every member's forecast, the weights and the router's
explanation) and renders, beside ``forecast.csv``:

- ``report.md``: per output channel, each member's forecast summary, weight,
  rank, out-of-fold and test error; how wide the prediction band is and
  which members' disagreement drives it; the features that moved the weights
  for this window (or the rule that fired); the weight per period; then each
  member's out-of-fold error by fold, the router's out-of-fold check, any
  fallback and why, and the members the sanity gate set aside;
- ``report.json``: the same content for scripts;
- ``plot-<channel>.png``: recent history, every member's forecast, the
  combined forecast with its shaded bands, weights in the legend.

``hybrid report`` re-renders them from ``last_forecast.json`` (:func:`rerender`).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hybrid import artifacts
from kernel.errors import HybridInputError

logger = logging.getLogger(__name__)

STATE = "last_forecast.json"
NO_PERIOD = "no period"
LEARNED = ("vote", "select", "rules")
MODE_TEXT = {
    "vote": "the learned router's vote: a weighted mean of the members, with weights computed for "
            "this very window from its features",
    "select": "the learned router's selection: the one member it expects to be most accurate for this window",
    "rules": "the rule table: a short decision tree over window features that names one member",
    "equal": "equal weights over the members (the same for every window)",
    "inverse_error": "weights proportional to 1 / out-of-fold MSE (the same for every window)",
    "best_single": "the member with the lowest out-of-fold MSE alone (the same for every window)",
    "top_k": "the members within a few percent of the best out-of-fold MSE, equally weighted (the same for "
             "every window)",
}


def member_period(name: str) -> str:
    """``"ets@24"`` -> ``"24"``; members without ``@p`` -> ``"no period"``."""
    _, at, period = name.partition("@")
    return period if at else NO_PERIOD


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "channel"


# --- state --------------------------------------------------------------------
def build_state(result: Any, run_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Everything a report needs, JSON-ready, from a :class:`hybrid.pipeline.ForecastResult`."""
    manifest = artifacts.read_manifest(run_dir)
    cols = list(result.history.columns)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(Path(run_dir).resolve()),
        "out_dir": str(Path(out_dir).resolve()),
        "dataset": manifest["dataset"],
        "context_length": manifest["context_length"],
        "horizon": result.horizon,
        "fitted_horizon": result.fitted_horizon,
        "mode": result.mode,
        "fallback": result.fallback,
        "history_timestamps": [str(t) for t in result.history.index],
        "history": {c: result.history[c].astype(float).tolist() for c in cols},
        "timestamps": [str(t) for t in result.frame["timestamp"]],
        "combined": {c: result.frame[c].astype(float).tolist() for c in cols},
        "bands": {f"{lv:g}": {c: {"lo": lo[i].astype(float).tolist(), "hi": hi[i].astype(float).tolist()}
                              for i, c in enumerate(cols)} for lv, (lo, hi) in result.bands.items()},
        "members": {n: {c: fc[i].astype(float).tolist() for i, c in enumerate(cols)} for n, fc in result.members.items()},
        "weights": {n: {c: float(w[i]) for i, c in enumerate(cols)} for n, w in result.channel_weights.items()},
        "details": result.details,
    }


def member_text_block(name: str, attr: str, value: Any) -> list[str]:
    """Markdown lines for what one member says (``prompt_text()`` / ``explain()``) about the window.

    A per-channel list whose entries are all the same is shown once, not once per channel.
    """
    if isinstance(value, list) and value and all(v == value[0] for v in value):
        value = f"{value[0]}  (the same for every channel)"
    return [f"**{name}** `{attr}()`:", "", "```", str(value), "```", ""]


def write_report(result: Any, run_dir: Path, out_dir: Path) -> list[Path]:
    """Store the forecast's state in the run and render the report into ``out_dir``."""
    state = build_state(result, run_dir, out_dir)
    artifacts.write_json(Path(run_dir) / STATE, state)
    return render(state, Path(out_dir))


def rerender(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Render the report of the run's last forecast again (``hybrid report``)."""
    path = Path(run_dir) / STATE
    if not path.is_file():
        raise HybridInputError(f"{run_dir} has no forecast to report on ({STATE} is missing); run `hybrid forecast` first.")
    state = json.loads(path.read_text(encoding="utf-8"))
    return render(state, Path(out_dir) if out_dir else Path(state["out_dir"]))


# --- content ------------------------------------------------------------------
def _direction(change: float, scale: float) -> str:
    if abs(change) < 0.1 * scale:
        return "flat"
    return "up" if change > 0 else "down"


def _channel_metric(metrics: dict[str, Any], name: str, part: str, col: str) -> float | None:
    block = (metrics.get(name) or {}).get(part) or {}
    per = block.get("per_channel") or {}
    return (per.get(col) or {}).get("mse", block.get("mse") if not per else None)


def _band_text(state: dict[str, Any], col: str, rows: list[dict[str, Any]], scale: float) -> dict[str, Any] | None:
    """How wide the lowest-level band is at the horizon end, and which members' disagreement drives it."""
    if not state.get("bands"):
        return None
    level = min(state["bands"], key=float)
    band = state["bands"][level][col]
    lo, hi = float(band["lo"][-1]), float(band["hi"][-1])
    comb = float(state["combined"][col][-1])
    far = sorted(rows, key=lambda r: -abs(r["level_end"] - comb))
    drivers = [r["member"] for r in far if abs(r["level_end"] - comb) > 0.25 * (hi - lo)][:2]
    return {"level": level, "lo_end": lo, "hi_end": hi, "width_end": hi - lo, "width_in_history_std": (hi - lo) / scale,
            "furthest_members": [{"member": r["member"], "gap_end": r["level_end"] - comb} for r in far[:3]],
            "drivers": drivers}


def summarise(state: dict[str, Any]) -> dict[str, Any]:
    """The report's content per output channel (what report.json holds)."""
    details = state["details"]
    metrics = details.get("metrics", {})
    gated = (details.get("gate") or {}).get("gated") or {}
    channels: dict[str, Any] = {}
    for col, hist in state["history"].items():
        hist_arr = np.asarray(hist, dtype=np.float64)
        last, scale = float(hist_arr[-1]), float(hist_arr.std() or 1.0)
        weights = {n: state["weights"].get(n, {}).get(col, 0.0) for n in state["members"]}
        order = sorted(weights, key=lambda n: -weights[n])
        rows = []
        for n in order:
            fc = np.asarray(state["members"][n][col])
            rows.append({
                "member": n,
                "period": member_period(n),
                "level_end": float(fc[-1]),
                "mean": float(fc.mean()),
                "change": float(fc[-1] - last),
                "direction": _direction(float(fc[-1] - last), scale),
                "weight": weights[n],
                "rank": order.index(n) + 1,
                "selected": n == order[0],
                "gated": col in gated.get(n, []),
                "oof_mse": _channel_metric(metrics, n, "oof", col),
                "test_mse": _channel_metric(metrics, n, "test", col),
            })
        periods: dict[str, float] = {}
        for n, w in weights.items():
            periods[member_period(n)] = periods.get(member_period(n), 0.0) + w
        comb = np.asarray(state["combined"][col])
        router_view = details.get("channels", {}).get(col, {})
        explain_mode = state["mode"] if state["mode"] in LEARNED else "vote"
        channels[col] = {
            "last_observed": last,
            "combined": {"level_end": float(comb[-1]), "mean": float(comb.mean()),
                         "change": float(comb[-1] - last), "direction": _direction(float(comb[-1] - last), scale),
                         "oof_mse": _channel_metric(metrics, "hybrid", "oof", col),
                         "test_mse": _channel_metric(metrics, "hybrid", "test", col)},
            "band": _band_text(state, col, rows, scale),
            "members": rows,
            "top_member": order[0],
            "period_weights": dict(sorted(periods.items(), key=lambda kv: -kv[1])),
            "router": router_view.get(explain_mode),
            "router_mode_shown": explain_mode,
            "router_weights_by_mode": {m: router_view[m]["weights"] for m in LEARNED if m in router_view},
        }
    return {
        "dataset": state["dataset"],
        "created": state["created"],
        "run_dir": state["run_dir"],
        "horizon": state["horizon"],
        "fitted_horizon": state["fitted_horizon"],
        "first_timestamp": state["timestamps"][0],
        "last_observed_timestamp": state["history_timestamps"][-1],
        "mode": state["mode"],
        "fallback": state["fallback"],
        "fallback_reason": details.get("fallback_reason"),
        "router_check": details.get("check"),
        "rules": details.get("rules"),
        "periods": details.get("periods"),
        "gate": details.get("gate"),
        "oof_by_fold": {n: (m.get("oof") or {}).get("by_fold") for n, m in metrics.items()
                        if (m.get("oof") or {}).get("by_fold")},
        "channels": channels,
        "member_text": details.get("member_text", {}),
    }


def _f(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _fallback_text(rep: dict[str, Any]) -> str:
    mode, fb = rep["mode"], rep["fallback"]
    why = rep.get("fallback_reason") or "it could not be checked"
    return (f"**Fallback.** The learned router (`{mode}`) was not used: {why}. It must beat both equal weights and "
            f"the best single member out of fold, pooled and on most folds, to be used, so this forecast uses "
            f"`{fb}` instead (the static combiner with the lowest leave-one-fold-out error): {MODE_TEXT.get(fb, fb)}.")


def _why(col: str, ch: dict[str, Any], rep: dict[str, Any]) -> str:
    mode, fb = rep["mode"], rep["fallback"]
    used = fb or mode
    share = ", ".join(f"{r['member']} {r['weight']:.0%}" for r in ch["members"] if r["weight"] > 0.005)
    comb = ch["combined"]
    parts = [f"The forecast for **{col}** is {MODE_TEXT.get(used, used)}. Weights: {share}. "
             f"It ends at {_f(comb['level_end'])} ({comb['direction']}, {comb['change']:+.4g} from the last "
             f"observed {_f(ch['last_observed'])})."]
    r = ch.get("router")
    if r and not fb and mode in ("vote", "select"):
        drivers = r.get("drivers", [])[:3]
        if drivers:
            said = "; ".join(f"`{d['feature']}` = {_f(d['value'], 3)} ({d['z']:+.1f} sd from the out-of-fold "
                             f"average) favours {d['favours']} over {d['disfavours']}" for d in drivers)
            base = ", ".join(f"{m} {w:.0%}" for m, w in r.get("baseline_weights", {}).items())
            parts.append(f"For an average window the router would give {base}; this window differs mostly "
                         f"because {said}.")
        if r.get("shrink_to_equal"):
            parts.append(f"Its weights are mixed with {r['shrink_to_equal']:.0%} equal weights (chosen leave-one-"
                         "fold-out).")
    if r and not fb and mode == "rules":
        parts.append(f"The rule that fired: if {' and '.join(r['rule']) or 'always'}, use {r['use']}.")
    band = ch.get("band")
    if band:
        text = (f"The {band['level']} % band at the end of the horizon runs from {_f(band['lo_end'])} to "
                f"{_f(band['hi_end'])} (width {_f(band['width_end'])}, {band['width_in_history_std']:.2f} standard "
                "deviations of the recent history)")
        if band["drivers"]:
            gaps = ", ".join(f"{g['member']} ({g['gap_end']:+.3g})" for g in band["furthest_members"]
                             if g["member"] in band["drivers"])
            text += f"; the members that disagree most with the combination at that point are {gaps}."
        else:
            text += "; the members agree there, so the band reflects the out-of-fold errors of such windows."
        parts.append(text)
    return " ".join(parts)


def to_markdown(rep: dict[str, Any], plots: dict[str, str]) -> str:
    lines = [f"# Forecast report: {rep['dataset']}", ""]
    lines.append(f"Next {rep['horizon']} steps after {rep['last_observed_timestamp']} (fitted horizon "
                 f"{rep['fitted_horizon']}); run `{rep['run_dir']}`; written {rep['created']}.")
    lines += ["", "## How the forecast is made", ""]
    lines.append("Several members forecast the same window independently; the combined forecast is "
                 "`sum_m w_m * forecast_m`, with weights that are non-negative and sum to one. The combiner "
                 f"(`router.mode`) is `{rep['mode']}`: {MODE_TEXT.get(rep['mode'], rep['mode'])}.")
    lines.append("Every weight was learned from out-of-fold forecasts: for each window of the training and "
                 "validation parts, forecasts by members fitted without that window's fold (and a gap around it). "
                 "A learned router is used only if it beats equal weights and the best single member out of fold, "
                 "pooled and on most folds. The test part chose nothing.")
    lines.append("Errors are MSE on standardised values (training mean and std); `oof` is out of fold over train + "
                 "validation, `test` over every test window. Members named `name@p` are period experts for period p. "
                 "Bands are conformal intervals from the out-of-fold errors.")
    if rep["fallback"]:
        lines += ["", _fallback_text(rep)]
    gate = rep.get("gate") or {}
    for line in gate.get("reasons") or []:
        lines += ["", f"**Set aside.** {line}; it gets no weight on that channel."]
    for col, ch in rep["channels"].items():
        lines += ["", f"## {col}", "", "### Why", "", _why(col, ch, rep), "", "### Members", ""]
        lines.append("| member | period | level at end | direction | weight | rank | selected | oof MSE | test MSE |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in ch["members"]:
            name = f"{r['member']} (set aside)" if r["gated"] else r["member"]
            lines.append(f"| {name} | {r['period']} | {_f(r['level_end'])} | {r['direction']} | "
                         f"{r['weight']:.3f} | {r['rank']} | {'yes' if r['selected'] else ''} | "
                         f"{_f(r['oof_mse'])} | {_f(r['test_mse'])} |")
        c = ch["combined"]
        lines.append(f"| **combined** | | {_f(c['level_end'])} | {c['direction']} | 1.000 | | | "
                     f"{_f(c['oof_mse'])} | {_f(c['test_mse'])} |")
        lines += ["", "### What drove the weights", ""]
        r = ch.get("router")
        if not r:
            lines.append("No learned router in this run (fewer than two members); the weights come from "
                         "out-of-fold errors alone.")
        elif "rule" in r:
            lines.append(f"Rule fired: if {' and '.join(r['rule']) or 'always'} then use **{r['use']}**.")
        else:
            note = "" if not rep["fallback"] and rep["mode"] in ("vote", "select") else (
                f" (shown for information: the `{ch['router_mode_shown']}` router's view of this window; "
                f"the forecast uses `{rep['fallback'] or rep['mode']}`)")
            lines.append(f"Features of this window that moved the router's weights most{note}. `push` is the "
                         "spread of the feature's contribution to the members' log-weights; z is the value in "
                         "standard deviations from the out-of-fold average.")
            lines += ["", "| feature | value | z | favours | disfavours | push |", "|---|---|---|---|---|---|"]
            for d in r.get("drivers", []):
                lines.append(f"| {d['feature']} | {_f(d['value'], 3)} | {d['z']:+.2f} | {d['favours']} | "
                             f"{d['disfavours']} | {d['push']:.3f} |")
        if ch["router_weights_by_mode"]:
            modes = list(ch["router_weights_by_mode"])
            lines += ["", "Weights each router mode gives this window (before any fallback):", "",
                      "| member | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
            for n in ch["router_weights_by_mode"][modes[0]]:
                lines.append(f"| {n} | " + " | ".join(f"{ch['router_weights_by_mode'][m][n]:.3f}" for m in modes) + " |")
        lines += ["", "### Weight per period", "", "| period | weight |", "|---|---|"]
        lines += [f"| {p} | {w:.3f} |" for p, w in ch["period_weights"].items()]
        if col in plots:
            lines += ["", f"![{col}]({plots[col]})"]
    if rep["member_text"]:
        lines += ["", "## What members say about this window", ""]
        for n, texts in rep["member_text"].items():
            for attr, value in texts.items():
                lines += member_text_block(n, attr, value)
    by_fold = rep.get("oof_by_fold") or {}
    if by_fold:
        folds = sorted({f for v in by_fold.values() for f in v}, key=int)
        lines += ["", "## Out-of-fold error by fold (all output channels)", "",
                  "| member | " + " | ".join(f"fold {int(f) + 1}" for f in folds) + " |", "|---|" + "---|" * len(folds)]
        for n, v in by_fold.items():
            lines.append(f"| {n} | " + " | ".join(_f(v.get(f)) for f in folds) + " |")
    check = rep.get("router_check")
    if check:
        lines += ["", "## Router check, out of fold (leave one fold out)", ""]
        lines += ["| mode | passed | oof MSE | equal | best single | folds won | fallback |",
                  "|---|---|---|---|---|---|---|"]
        for m in LEARNED:
            c = check.get(m)
            if c:
                lines.append(f"| {m} | {'yes' if c.get('passed') else 'no'} | {_f(c.get('oof_mse'))} | "
                             f"{_f(c.get('oof_mse_equal'))} | {_f(c.get('oof_mse_best_single'))} | "
                             f"{c.get('folds_won')} of {c.get('folds')} | {c.get('fallback') or '-'} |")
        static = (check.get("static") or {}).get("oof_mse") or {}
        if static:
            lines += ["", "Static combiners, leave-one-fold-out MSE: "
                      + ", ".join(f"{k} {_f(v)}" for k, v in static.items()) + "."]
        lines.append("")
        lines.append("After this check every mode was refitted on all out-of-fold windows.")
    if rep.get("rules"):
        lines += ["", "## Rule table (`rules` mode)", "", "| # | if | then use | samples | oof MSE of choice "
                  "| mean member oof MSE |", "|---|---|---|---|---|---|"]
        for i, r in enumerate(rep["rules"], 1):
            lines.append(f"| {i} | {' and '.join(r['if'])} | {r['use']} | {r['samples']} | "
                         f"{_f(r['oof_mse_chosen'])} | {_f(r['oof_mse_members_mean'])} |")
    return "\n".join(lines) + "\n"


# --- rendering ----------------------------------------------------------------
def _plot(state: dict[str, Any], col: str, path: Path) -> None:
    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h = len(state["timestamps"])
    n_hist = min(len(state["history"][col]), max(3 * h, 48))
    hist_t = pd.to_datetime(state["history_timestamps"][-n_hist:])
    fut_t = pd.to_datetime(state["timestamps"])
    fig = Figure(figsize=(10, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(hist_t, state["history"][col][-n_hist:], color="black", lw=1.2, label="history")
    for k, level in enumerate(sorted(state.get("bands", {}), key=float, reverse=True)):
        band = state["bands"][level][col]
        ax.fill_between(fut_t, band["lo"], band["hi"], color="crimson", alpha=0.12 + 0.12 * k, lw=0,
                        label=f"{level} % band")
    for n, by_col in state["members"].items():
        w = state["weights"].get(n, {}).get(col, 0.0)
        ax.plot(fut_t, by_col[col], lw=0.9, ls="--", alpha=0.4 + 0.6 * min(w, 1.0), label=f"{n} (w={w:.2f})")
    ax.plot(fut_t, state["combined"][col], color="crimson", lw=2.2, label="combined")
    ax.axvline(hist_t[-1], color="grey", lw=0.8, ls=":")
    ax.set_title(f"{state['dataset']} / {col}: {state['mode']}" + (f" -> {state['fallback']}" if state["fallback"] else ""))
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def render(state: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write report.md, report.json and one PNG per output channel into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = summarise(state)
    plots, written = {}, []
    for col in state["history"]:
        name = f"plot-{_safe(col)}.png"
        tmp = out_dir / f".{name}.tmp.png"
        _plot(state, col, tmp)
        tmp.replace(out_dir / name)
        plots[col] = name
        written.append(out_dir / name)
    md = out_dir / "report.md"
    tmp = out_dir / ".report.md.tmp"
    tmp.write_text(to_markdown(rep, plots), encoding="utf-8")
    tmp.replace(md)
    rep["metrics"] = state["details"].get("metrics", {})
    rep["plots"] = plots
    artifacts.write_json(out_dir / "report.json", rep)
    return [md, out_dir / "report.json", *written]
