"""Vote reports: why the forecast is what it is, as Markdown, JSON and PNG plots.

``hybrid forecast`` calls :func:`write_report`: it stores everything the
report needs in ``<run_dir>/last_forecast.json`` (the forecast, the context,
every member's forecast, the weights and the router's explanation) and
renders, beside ``forecast.csv``:

- ``report.md``: per output channel, each member's forecast summary, weight,
  rank, validation and test error; the features that moved the weights for
  this window (or the rule that fired); the weight per period; the router's
  held-back check and any fallback;
- ``report.json``: the same content for scripts;
- ``plot-<channel>.png``: recent history, every member's forecast, the
  combined forecast, weights in the legend.

``hybrid report`` re-renders them from ``last_forecast.json`` (:func:`rerender`).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hybrid import artifacts
from hybrid.errors import HybridInputError

logger = logging.getLogger(__name__)

STATE = "last_forecast.json"
NO_PERIOD = "no period"
MODE_TEXT = {
    "vote": "the learned router's vote: a weighted mean of the members, with weights computed for "
            "this very window from its features",
    "select": "the learned router's selection: the one member it expects to be most accurate for this window",
    "rules": "the rule table: a short decision tree over window features that names one member",
    "equal": "equal weights over the members (the same for every window)",
    "inverse_error": "weights proportional to 1 / validation MSE (the same for every window)",
    "best_single": "the member with the lowest validation MSE alone (the same for every window)",
}


def member_period(name: str) -> str:
    """``"ets@24"`` -> ``"24"``; members without ``@p`` -> ``"no period"``."""
    _, at, period = name.partition("@")
    return period if at else NO_PERIOD


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "channel"


# --- state --------------------------------------------------------------------
def build_state(result: Any, run_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Everything a report needs, JSON-ready, from a :class:`ForecastResult`."""
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
        "members": {n: {c: fc[i].astype(float).tolist() for i, c in enumerate(cols)} for n, fc in result.members.items()},
        "weights": {n: {c: float(w[i]) for i, c in enumerate(cols)} for n, w in result.channel_weights.items()},
        "details": result.details,
    }


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
    import json

    state = json.loads(path.read_text(encoding="utf-8"))
    return render(state, Path(out_dir) if out_dir else Path(state["out_dir"]))


# --- content ------------------------------------------------------------------
def _direction(change: float, scale: float) -> str:
    if abs(change) < 0.1 * scale:
        return "flat"
    return "up" if change > 0 else "down"


def summarise(state: dict[str, Any]) -> dict[str, Any]:
    """The report's content per output channel (what report.json holds)."""
    details = state["details"]
    metrics = details.get("metrics", {})
    channels: dict[str, Any] = {}
    for col, hist in state["history"].items():
        hist_arr = np.asarray(hist, dtype=np.float64)
        last, scale = float(hist_arr[-1]), float(hist_arr.std() or 1.0)
        weights = {n: state["weights"].get(n, {}).get(col, 0.0) for n in state["members"]}
        order = sorted(weights, key=lambda n: -weights[n])
        top = order[0]
        rows = []
        for n in order:
            fc = np.asarray(state["members"][n][col])
            m = metrics.get(n, {})
            rows.append({
                "member": n,
                "period": member_period(n),
                "level_end": float(fc[-1]),
                "mean": float(fc.mean()),
                "change": float(fc[-1] - last),
                "direction": _direction(float(fc[-1] - last), scale),
                "weight": weights[n],
                "rank": order.index(n) + 1,
                "selected": n == top,
                "val_mse": m.get("val", {}).get("mse"),
                "test_mse": m.get("test", {}).get("mse"),
            })
        periods: dict[str, float] = {}
        for n, w in weights.items():
            periods[member_period(n)] = periods.get(member_period(n), 0.0) + w
        comb = np.asarray(state["combined"][col])
        router_view = details.get("channels", {}).get(col, {})
        explain_mode = state["mode"] if state["mode"] in ("vote", "select", "rules") else "vote"
        channels[col] = {
            "last_observed": last,
            "combined": {"level_end": float(comb[-1]), "mean": float(comb.mean()),
                         "change": float(comb[-1] - last), "direction": _direction(float(comb[-1] - last), scale)},
            "members": rows,
            "top_member": top,
            "period_weights": dict(sorted(periods.items(), key=lambda kv: -kv[1])),
            "router": router_view.get(explain_mode),
            "router_mode_shown": explain_mode,
            "router_weights_by_mode": {m: router_view[m]["weights"] for m in ("vote", "select", "rules")
                                       if m in router_view},
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
        "channels": channels,
        "member_text": details.get("member_text", {}),
    }


def _f(x: Any, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _fallback_text(rep: dict[str, Any]) -> str:
    mode, fb = rep["mode"], rep["fallback"]
    check = (rep.get("router_check") or {}).get(mode) or {}
    if "holdout_mse" in check:
        why = (f"on the last {check['holdout_windows']} validation windows (held back, after a gap of "
               f"{check['gap_windows']}) it scored MSE {_f(check['holdout_mse'])}, against "
               f"{_f(check['holdout_mse_equal'])} for equal weights and {_f(check['holdout_mse_best_single'])} "
               f"for the best single member ({check['best_single']})")
    else:
        why = check.get("reason") or rep.get("fallback_reason") or "it could not be checked"
    return (f"**Fallback.** The learned router (`{mode}`) was not used: {why}. It must beat both to be used, "
            f"so this forecast uses `{fb}` instead: {MODE_TEXT.get(fb, fb)}.")


def _why(col: str, ch: dict[str, Any], rep: dict[str, Any]) -> str:
    mode, fb = rep["mode"], rep["fallback"]
    used = fb or mode
    rows = ch["members"]
    share = ", ".join(f"{r['member']} {r['weight']:.0%}" for r in rows if r["weight"] > 0.005)
    comb = ch["combined"]
    parts = [f"The forecast for **{col}** is {MODE_TEXT.get(used, used)}. Weights: {share}. "
             f"It ends at {_f(comb['level_end'])} ({comb['direction']}, {comb['change']:+.4g} from the last "
             f"observed {_f(ch['last_observed'])})."]
    r = ch.get("router")
    if r and not fb and mode in ("vote", "select"):
        drivers = r.get("drivers", [])[:3]
        if drivers:
            said = "; ".join(f"`{d['feature']}` = {_f(d['value'], 3)} ({d['z']:+.1f} sd from the validation "
                             f"average) favours {d['favours']} over {d['disfavours']}" for d in drivers)
            base = ", ".join(f"{m} {w:.0%}" for m, w in r.get("baseline_weights", {}).items())
            parts.append(f"For an average validation window the router would give {base}; this window "
                         f"differs mostly because {said}.")
    if r and not fb and mode == "rules":
        parts.append(f"The rule that fired: if {' and '.join(r['rule']) or 'always'}, use {r['use']}.")
    return " ".join(parts)


def to_markdown(rep: dict[str, Any], plots: dict[str, str]) -> str:
    lines = [f"# Forecast report: {rep['dataset']}", ""]
    lines.append(f"Next {rep['horizon']} steps after {rep['last_observed_timestamp']} (fitted horizon "
                 f"{rep['fitted_horizon']}); run `{rep['run_dir']}`; written {rep['created']}.")
    lines += ["", "## How the forecast is made", ""]
    lines.append(f"Several members forecast the same window independently; the combined forecast is "
                 f"`sum_m w_m * forecast_m`, with weights that are non-negative and sum to one. The combiner "
                 f"(`router.mode`) is `{rep['mode']}`: {MODE_TEXT.get(rep['mode'], rep['mode'])}.")
    if rep["mode"] in ("vote", "select", "rules"):
        lines.append("The router was trained on validation windows only (never on test data) and had to beat "
                     "equal weights and the best single member on held-back validation windows before being used.")
    lines.append("Errors are MSE on standardised values (training mean and std), over every window of "
                 "the validation or test part. Members named `name@p` are period experts for period p.")
    if rep["fallback"]:
        lines += ["", _fallback_text(rep)]
    for col, ch in rep["channels"].items():
        lines += ["", f"## {col}", "", "### Why", "", _why(col, ch, rep), "", "### Members", ""]
        lines.append("| member | period | level at end | direction | weight | rank | selected | val MSE | test MSE |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in ch["members"]:
            lines.append(f"| {r['member']} | {r['period']} | {_f(r['level_end'])} | {r['direction']} | "
                         f"{r['weight']:.3f} | {r['rank']} | {'yes' if r['selected'] else ''} | "
                         f"{_f(r['val_mse'])} | {_f(r['test_mse'])} |")
        c = ch["combined"]
        lines.append(f"| **combined** | | {_f(c['level_end'])} | {c['direction']} | 1.000 | | | "
                     f"{_f(_metric(rep, 'val'))} | {_f(_metric(rep, 'test'))} |")
        lines += ["", "### What drove the weights", ""]
        r = ch.get("router")
        if not r:
            lines.append("No learned router in this run (fewer than two members); the weights come from "
                         "validation errors alone.")
        elif "rule" in r:
            lines.append(f"Rule fired: if {' and '.join(r['rule']) or 'always'} then use **{r['use']}**.")
        else:
            note = "" if not rep["fallback"] and rep["mode"] in ("vote", "select") else (
                f" (shown for information: the `{ch['router_mode_shown']}` router's view of this window; "
                f"the forecast uses `{rep['fallback'] or rep['mode']}`)")
            lines.append(f"Features of this window that moved the router's weights most{note}. `push` is the "
                         "spread of the feature's contribution to the members' log-weights; z is the value in "
                         "standard deviations from the validation average.")
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
                lines += [f"**{n}** `{attr}()`:", "", "```", str(value), "```", ""]
    check = rep.get("router_check")
    if check:
        lines += ["", "## Router check on held-back validation windows", ""]
        lines += ["| mode | passed | held-back MSE | equal | best single | fallback |", "|---|---|---|---|---|---|"]
        for m, c in check.items():
            lines.append(f"| {m} | {'yes' if c.get('passed') else 'no'} | {_f(c.get('holdout_mse'))} | "
                         f"{_f(c.get('holdout_mse_equal'))} | {_f(c.get('holdout_mse_best_single'))} "
                         f"({c.get('best_single', '-')}) | {c.get('fallback') or '-'} |")
        lines.append("")
        lines.append("After this check every mode was refitted on all validation windows.")
    if rep.get("rules"):
        lines += ["", "## Rule table (`rules` mode)", "", "| # | if | then use | val samples | val MSE of choice "
                  "| mean member val MSE |", "|---|---|---|---|---|---|"]
        for i, r in enumerate(rep["rules"], 1):
            lines.append(f"| {i} | {' and '.join(r['if'])} | {r['use']} | {r['samples']} | "
                         f"{_f(r['val_mse_chosen'])} | {_f(r['val_mse_equal_members_mean'])} |")
    return "\n".join(lines) + "\n"


def _metric(rep: dict[str, Any], part: str) -> float | None:
    m = rep.get("_metrics", {}).get("hybrid", {})
    return m.get(part, {}).get("mse")


# --- rendering ----------------------------------------------------------------
def _plot(state: dict[str, Any], col: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h = len(state["timestamps"])
    n_hist = min(len(state["history"][col]), max(3 * h, 48))
    import pandas as pd

    hist_t = pd.to_datetime(state["history_timestamps"][-n_hist:])
    fut_t = pd.to_datetime(state["timestamps"])
    fig = Figure(figsize=(10, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(hist_t, state["history"][col][-n_hist:], color="black", lw=1.2, label="history")
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
    rep["_metrics"] = state["details"].get("metrics", {})
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
    rep["metrics"] = rep.pop("_metrics")
    rep["plots"] = plots
    artifacts.write_json(out_dir / "report.json", rep)
    return [md, out_dir / "report.json", *written]
