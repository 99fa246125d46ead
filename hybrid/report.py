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

The Markdown is written for a forecaster: values in the data's units with
thousands separators and no scientific notation (:func:`fmt_value`), router
features under plain names with a glossary (:func:`describe_feature`), members
that made exactly the same forecast in one row (:func:`same_forecast_groups`),
and the core's prompt with its cut description ending on a whole word
(:func:`readable_prompt`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
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
    "greedy": "greedy ensemble selection: members added one at a time (again, when it helps) to the running "
              "average that lowers the out-of-fold MSE most; the weights are how often each was added (the same "
              "for every window)",
    "median": "the median of the sound members' forecasts, step by step (not a weighted mean: the weights shown are "
              "the members it takes the median of, equally)",
}


def member_period(name: str) -> str:
    """``"ets@24"`` -> ``"24"``; members without ``@p`` -> ``"no period"``."""
    _, at, period = name.partition("@")
    return period if at else NO_PERIOD


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "channel"


# --- words and numbers --------------------------------------------------------
MAX_DECIMALS = 10  # fmt_value never writes more decimals than this (smaller values read as 0)


def fmt_value(x: Any, sign: bool = False) -> str:
    """A number as a forecaster reads it: no scientific notation, decimals by magnitude.

    ``26270.4`` -> ``"26,270"``, ``251.34`` -> ``"251.3"``, ``23.134`` -> ``"23.13"``,
    ``0.025613`` -> ``"0.0256"`` (three significant digits below 1); ``sign``
    writes ``+`` before positive values (changes, gaps).

    Args:
        x: a float, an int (written as is), or None (``"-"``).
        sign: prefix positive values with ``+``.

    Returns:
        The text.
    """
    if x is None:
        return "-"
    if isinstance(x, (bool, str)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):+,d}" if sign else f"{int(x):,d}"
    value = float(x)
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 1000:
        decimals = 0
    elif size >= 100:
        decimals = 1
    elif size >= 1:
        decimals = 2
    elif size == 0:
        decimals = 0
    else:
        decimals = min(MAX_DECIMALS, 2 - math.floor(math.log10(size)))
    text = f"{value:{'+' if sign else ''},.{decimals}f}"
    return "0" if float(text.replace(",", "")) == 0 else text


# Plain names and glossary lines of the router's features (router.features.feature_names).
_CONTEXT_FEATURES: dict[str, tuple[str, str]] = {
    "log_std": ("volatility against training", "log of the window's standard deviation on the training scale: above "
                "0 the window moves more than the training data did, below 0 less"),
    "skew": ("skewness", "asymmetry of the window's values: positive when its spikes go up, negative when they go down"),
    "kurtosis": ("heavy tails", "excess kurtosis of the window's values: high when a few extreme values stand out"),
    "min_rel": ("window low", "the window's lowest value, in standard deviations from the window's mean"),
    "max_rel": ("window high", "the window's highest value, in standard deviations from the window's mean"),
    "median_rel": ("window median", "the window's median, in standard deviations from the window's mean "
                   "(negative: most values sit below the mean, pulled up by a few high ones)"),
    "last_rel": ("last value", "the last observed value, in standard deviations from the window's mean"),
    "trend_slope": ("trend", "slope of a straight line through the window, in standard deviations per window "
                    "length (negative: falling)"),
    "trend_strength": ("trend strength", "how much of the window a straight line explains (R squared, 0 to 1)"),
    "spectral_entropy": ("irregularity", "spectral entropy of the detrended window, 0 to 1: low for one clean "
                         "cycle, high for noise"),
    "level_shift": ("largest level jump", "the largest jump between the means of consecutive eighths of the window, "
                    "in standard deviations"),
    "recent_shift": ("recent level shift", "the mean of the window's last eighth minus the mean of the rest, in "
                     "standard deviations (negative: the latest values are lower)"),
    "volatility_ratio": ("recent volatility", "step-to-step volatility of the window's last quarter against the "
                         "whole window, log (negative: the latest steps are calmer than usual)"),
    "spread": ("member disagreement", "how far the members' forecasts disagree: their standard deviation across "
               "members, in window standard deviations, averaged over the horizon, log"),
}


def describe_feature(name: str) -> tuple[str, str]:
    """A router feature's plain name and glossary line.

    Args:
        name: a name from :func:`router.features.feature_names`, e.g. ``"dev:arima"``,
            ``"median_rel"``, ``"acf@24"``.

    Returns:
        ``(plain name, explanation)``; an unknown name is returned as is with a
        pointer to ``router/features.py``.
    """
    kind, colon, member = name.partition(":")
    if colon and kind == "dev":
        return (f"{member} against the others", f"{member}'s mean forecast minus the members' median forecast, in "
                f"window standard deviations (negative: {member} forecasts lower than the others)")
    if colon and kind == "backtest":
        return (f"{member}'s recent error", f"{member}'s error when it forecasts the window's last steps from the "
                f"steps before them, log of the relative MSE (lower is better; 0 when {member} has no backtest)")
    base, at, period = name.partition("@")
    if at and base == "seasonal_strength":
        return (f"{period}-step cycle strength", f"how much of the detrended window a repeating {period}-step "
                "profile explains (0 none, 1 a pure cycle)")
    if at and base == "acf":
        return (f"{period}-step repetition", f"autocorrelation of the detrended window at lag {period}: near 1 when "
                f"each value repeats the one {period} steps before")
    if name in _CONTEXT_FEATURES:
        return _CONTEXT_FEATURES[name]
    return name, "a window feature of the router (see router/features.py)"


def feature_label(name: str) -> str:
    """``"volatility_ratio"`` -> ``"recent volatility (`volatility_ratio`)"``: the plain name, then the code name."""
    return f"{describe_feature(name)[0]} (`{name}`)"


def _condition_feature(condition: str) -> str | None:
    """The feature a rule condition tests (``"dev:ets <= -0.743"`` -> ``"dev:ets"``); None for ``"always"``."""
    head = condition.split(" ", 1)[0]
    return None if head == "always" else head


def _letters(text: str) -> str:
    """Lower-case letters and digits of ``text``, accents removed (how an uncased tokenizer sees it)."""
    plain_text = unicodedata.normalize("NFKD", text)
    return "".join(c.lower() for c in plain_text if c.isalnum() and not unicodedata.combining(c))


DESCRIPTION_HEAD = "Dataset description:"
TASK_HEAD = " Task:"
ELLIPSIS = "\u2026"


def readable_prompt(text: str, description: str) -> str:
    """The core's prompt with a cut dataset description ending on a whole word and an ellipsis.

    The core reads the description cut to ``core.max_description_tokens``
    tokens, decoded back to text, so it may end inside a word ("... (megawat").
    When the decoded description is a prefix of ``description`` (compared on
    letters and digits, as an uncased tokenizer lowercases and re-spaces
    punctuation), it is shown in the original spelling, up to the last whole
    word before the cut, followed by ``…``; the per-window text after it is
    kept as the core read it. A prompt whose description cannot be matched is
    returned unchanged.

    Args:
        text: one prompt, ``"<decoded description> Task: ..."``.
        description: the dataset description of the run's config (``data.description``).

    Returns:
        The prompt to show.
    """
    full = f"{DESCRIPTION_HEAD} {description.strip()}"
    cut = text.find(TASK_HEAD)
    if not description.strip() or cut < 0 or not _letters(text[:cut]).startswith(_letters(DESCRIPTION_HEAD)):
        return text
    read, rest = _letters(text[:cut]), text[cut:]
    if not _letters(full).startswith(read):
        return text
    if read == _letters(full):
        return full + rest
    pos, seen = 0, 0
    while seen < len(read):  # the position in `full` just after the last letter the core read
        seen += len(_letters(full[pos]))
        pos += 1
    if pos < len(full) and full[pos].isalnum() and full[pos - 1].isalnum():  # the cut is inside a word
        pos = max(full.rfind(" ", 0, pos), len(DESCRIPTION_HEAD))
    return full[:pos].rstrip(" ,;:([{-") + ELLIPSIS + rest


def same_forecast_groups(forecasts: dict[str, Any]) -> list[list[str]]:
    """Members whose forecasts are exactly equal, grouped; each group's first name is the one to show.

    ``seasonal_naive`` without a period uses the dominant period, so it makes
    the very forecast of ``seasonal_naive@<dominant period>``; the report
    shows such members once. Within a group a name with ``@p`` comes first
    (it says which period the forecast follows), else the first in ``forecasts``.

    Args:
        forecasts: member -> its forecast of one channel [H].

    Returns:
        Groups in the order of ``forecasts`` (single members too).
    """
    groups: list[list[str]] = []
    arrays = {n: np.asarray(f, dtype=np.float64) for n, f in forecasts.items()}
    for name, fc in arrays.items():
        home = next((g for g in groups if np.array_equal(arrays[g[0]], fc)), None)
        if home is None:
            groups.append([name])
        else:
            home.append(name)
    return [sorted(g, key=lambda n: member_period(n) == NO_PERIOD) for g in groups]


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
        "description": _description(manifest),
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


def _description(manifest: dict[str, Any]) -> str:
    """The run's dataset description (``data.description``; empty when none)."""
    return str(((manifest.get("config") or {}).get("data") or {}).get("description") or "")


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
    if "description" not in state:  # a forecast stored before reports tidied the core's prompt
        state["description"] = _description(artifacts.read_manifest(Path(run_dir)))
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
    unsound = (details.get("sound") or {}).get("unsound") or {}
    channels: dict[str, Any] = {}
    for col, hist in state["history"].items():
        hist_arr = np.asarray(hist, dtype=np.float64)
        last, scale = float(hist_arr[-1]), float(hist_arr.std() or 1.0)
        weights = {n: state["weights"].get(n, {}).get(col, 0.0) for n in state["members"]}
        groups = {g[0]: g for g in same_forecast_groups({n: state["members"][n][col] for n in state["members"]})}
        group_weight = {n: sum(weights[m] for m in g) for n, g in groups.items()}
        order = sorted(groups, key=lambda n: -group_weight[n])
        rows = []
        for n in order:
            fc = np.asarray(state["members"][n][col])
            rows.append({
                "member": n,
                "same_forecast_as": groups[n][1:],  # members with exactly this forecast, shown in this row
                "weights_each": {m: weights[m] for m in groups[n]},
                "period": member_period(n),
                "level_end": float(fc[-1]),
                "mean": float(fc.mean()),
                "change": float(fc[-1] - last),
                "direction": _direction(float(fc[-1] - last), scale),
                "weight": group_weight[n],
                "rank": order.index(n) + 1,
                "selected": n == order[0],
                "gated": all(col in gated.get(m, []) for m in groups[n]),
                "unsound": all(col in unsound.get(m, []) for m in groups[n]),
                "oof_mse": _channel_metric(metrics, n, "oof", col),
                "test_mse": _channel_metric(metrics, n, "test", col),
            })
        periods: dict[str, float] = {}
        for r in rows:  # a member without @p that equals a period expert counts for that period
            periods[r["period"]] = periods.get(r["period"], 0.0) + r["weight"]
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
        "description": state.get("description", ""),
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
        "sound": details.get("sound"),
        "band_checks": band_checks(details.get("bands") or {}),
        "ladders": details.get("ladders") or {},
        "oof_by_fold": {n: (m.get("oof") or {}).get("by_fold") for n, m in metrics.items()
                        if (m.get("oof") or {}).get("by_fold")},
        "channels": channels,
        "member_text": details.get("member_text", {}),
    }


def _f(x: Any) -> str:
    return fmt_value(x)


BAND_MISS = {80.0: 0.10, 95.0: 0.05}  # the last fold's coverage this far from nominal gets a warning


def band_checks(bands: dict[str, Any]) -> list[str]:
    """Warnings for the combination's bands whose coverage on the last fold (from the earlier folds alone) missed."""
    out = []
    for level, scores in ((bands.get("hybrid") or {}).get("last_fold") or {}).items():
        nominal = float(level)
        miss = BAND_MISS.get(nominal, 0.05 + 0.05 * (nominal < 90))
        cov = scores["coverage"]
        if abs(cov - nominal / 100) > miss:
            out.append(f"the {nominal:g} % band covered {cov:.0%} of the last fold's values when fitted on the "
                       f"earlier folds alone: expect {'less' if cov < nominal / 100 else 'more'} than {nominal:g} % "
                       "coverage if the series keeps drifting as it did")
    return out


def _shown(row: dict[str, Any]) -> str:
    """A member row's name and the members with exactly its forecast: ``"seasonal_naive@48 = seasonal_naive"``."""
    return " = ".join([row["member"], *row.get("same_forecast_as", [])])


def _same_forecast_notes(ch: dict[str, Any]) -> list[str]:
    """One sentence per row that stands for several members with exactly the same forecast."""
    notes = []
    for r in ch["members"]:
        others = r.get("same_forecast_as") or []
        if not others:
            continue
        names = " and ".join(f"`{n}`" for n in [r["member"], *others])
        why = ""
        base, _, period = r["member"].partition("@")
        if period and base in others:
            why = f" (without `@p`, {base} uses the dominant period, {period})"
        notes.append(f"**Same forecast.** {names} made exactly the same forecast{why}, so they are shown as one "
                     "member, `" + _shown(r) + "`, whose weight is the sum of theirs.")
    return notes


def _sd_text(z: float) -> str:
    """``-1.33`` -> ``"1.3 sd below"``."""
    return f"{abs(z):.1f} sd {'below' if z < 0 else 'above'}"


def _fallback_text(rep: dict[str, Any]) -> str:
    mode, fb = rep["mode"], rep["fallback"]
    why = rep.get("fallback_reason") or "it could not be checked"
    return (f"**Fallback.** The learned router (`{mode}`) was not used: {why}. It must beat both equal weights and "
            f"the best single member out of fold, pooled and on most folds, to be used, so this forecast uses "
            f"`{fb}` instead (the static combiner with the lowest leave-one-fold-out error): {MODE_TEXT.get(fb, fb)}.")


def _why(col: str, ch: dict[str, Any], rep: dict[str, Any]) -> str:
    mode, fb = rep["mode"], rep["fallback"]
    used = fb or mode
    share = ", ".join(f"{_shown(r)} {r['weight']:.0%}" for r in ch["members"] if r["weight"] > 0.005)
    comb = ch["combined"]
    parts = [f"The forecast for **{col}** is {MODE_TEXT.get(used, used)}. Weights: {share}. "
             f"It ends at {_f(comb['level_end'])} ({comb['direction']}, {fmt_value(comb['change'], sign=True)} from "
             f"the last observed {_f(ch['last_observed'])})."]
    r = ch.get("router")
    if r and not fb and mode in ("vote", "select"):
        drivers = [d for d in r.get("drivers", []) if d["favours"] != d["disfavours"]][:3]
        if drivers:
            said = "; ".join(f"the {describe_feature(d['feature'])[0]} (`{d['feature']}` = {_f(d['value'])}, "
                             f"{_sd_text(d['z'])} its out-of-fold average) favours {d['favours']} over "
                             f"{d['disfavours']}" for d in drivers)
            base = ", ".join(f"{m} {w:.0%}" for m, w in r.get("baseline_weights", {}).items())
            parts.append(f"For an average window the router would give {base}; this window differs mostly "
                         f"because {said}.")
        if r.get("shrink"):
            parts.append(f"Its weights are mixed with {r['shrink']:.0%} of the {r['shrink_to']} combination's "
                         "(chosen leave-one-fold-out).")
    if r and not fb and mode == "rules":
        parts.append(f"The rule that fired: if {' and '.join(r['rule']) or 'always'}, use {r['use']}.")
    band = ch.get("band")
    if band:
        text = (f"The {band['level']} % band at the end of the horizon runs from {_f(band['lo_end'])} to "
                f"{_f(band['hi_end'])} (width {_f(band['width_end'])}, {band['width_in_history_std']:.2f} standard "
                "deviations of the recent history)")
        if band["drivers"]:
            shown = {row["member"]: _shown(row) for row in ch["members"]}
            gaps = ", ".join(f"{shown.get(g['member'], g['member'])} ({fmt_value(g['gap_end'], sign=True)})"
                             for g in band["furthest_members"] if g["member"] in band["drivers"])
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
                 "Only sound members are combined: on each channel, those within "
                 f"{(rep.get('sound') or {}).get('ratio', 'a set factor')} x the best member's out-of-fold error. "
                 "A learned router is used only if it beats the static combinations out of fold (equal weights, the "
                 "best single member and the best static combination, by the run's check). The test part chose "
                 "nothing.")
    lines.append("Levels, changes and bands are in the data's units. Errors are MSE on standardised values (training "
                 "mean and std); `oof` is out of fold over train + validation, `test` over every test window. Members "
                 "named `name@p` are period experts for period p. Bands are conformal intervals from the out-of-fold "
                 "errors. The window features the router reads are explained in the glossary at the end.")
    notes = {col: _same_forecast_notes(ch) for col, ch in rep["channels"].items()}
    shared = next(iter(notes.values()), []) if len({tuple(n) for n in notes.values()}) == 1 else []
    for note in shared:  # the same members coincide on every channel: said once, here
        lines += ["", note]
    if rep["fallback"]:
        lines += ["", _fallback_text(rep)]
    gate = rep.get("gate") or {}
    for line in gate.get("reasons") or []:
        lines += ["", f"**Set aside.** {line}; it gets no weight on that channel."]
    for line in (rep.get("sound") or {}).get("reasons") or []:
        lines += ["", f"**Not sound.** {line}; it gets no weight on that channel."]
    for line in rep.get("band_checks") or []:
        lines += ["", f"**Bands.** {line}."]
    for col, ch in rep["channels"].items():
        lines += ["", f"## {col}", "", "### Why", "", _why(col, ch, rep), "", "### Members", ""]
        lines.append("| member | period | level at end | direction | weight | rank | selected | oof MSE | test MSE |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in ch["members"]:
            name = f"{_shown(r)} (set aside)" if r["gated"] else f"{_shown(r)} (not sound)" if r.get("unsound") \
                else _shown(r)
            lines.append(f"| {name} | {r['period']} | {_f(r['level_end'])} | {r['direction']} | "
                         f"{r['weight']:.3f} | {r['rank']} | {'yes' if r['selected'] else ''} | "
                         f"{_f(r['oof_mse'])} | {_f(r['test_mse'])} |")
        c = ch["combined"]
        lines.append(f"| **combined** | | {_f(c['level_end'])} | {c['direction']} | 1.000 | | | "
                     f"{_f(c['oof_mse'])} | {_f(c['test_mse'])} |")
        for note in [] if shared else notes[col]:
            lines += ["", note]
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
                moved = d["favours"] != d["disfavours"]  # a feature that moved no weight favours nobody
                lines.append(f"| {feature_label(d['feature'])} | {_f(d['value'])} | {d['z']:+.2f} | "
                             f"{d['favours'] if moved else '-'} | {d['disfavours'] if moved else '-'} | "
                             f"{d['push']:.3f} |")
        if ch["router_weights_by_mode"]:
            modes = list(ch["router_weights_by_mode"])
            lines += ["", "Weights each router mode gives this window (before any fallback):", "",
                      "| member | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
            for row in ch["members"]:  # members with one forecast in one row, their weights added
                names = [row["member"], *row.get("same_forecast_as", [])]
                lines.append(f"| {_shown(row)} | " + " | ".join(
                    f"{sum(ch['router_weights_by_mode'][m].get(n, 0.0) for n in names):.3f}" for m in modes) + " |")
        lines += ["", "### Weight per period", "", "| period | weight |", "|---|---|"]
        lines += [f"| {p} | {w:.3f} |" for p, w in ch["period_weights"].items()]
        if col in plots:
            lines += ["", f"![{col}]({plots[col]})"]
    if rep["member_text"]:
        lines += ["", "## What members say about this window", ""]
        for n, texts in rep["member_text"].items():
            for attr, value in texts.items():
                if attr == "prompt_text" and rep.get("description"):
                    value = ([readable_prompt(v, rep["description"]) if isinstance(v, str) else v for v in value]
                             if isinstance(value, list) else readable_prompt(str(value), rep["description"]))
                lines += member_text_block(n, attr, value)
    lines += ladder_lines(rep.get("ladders") or {})
    by_fold = rep.get("oof_by_fold") or {}
    if by_fold:
        folds = sorted({f for v in by_fold.values() for f in v}, key=int)
        lines += ["", "## Out-of-fold error by fold (all output channels)", "",
                  "| member | " + " | ".join(f"fold {int(f) + 1}" for f in folds) + " |", "|---|" + "---|" * len(folds)]
        for group in same_forecast_groups({n: [v.get(f) for f in folds] for n, v in by_fold.items()}):
            lines.append(f"| {' = '.join(group)} | " + " | ".join(_f(by_fold[group[0]].get(f)) for f in folds) + " |")
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
    return "\n".join([*lines, *_glossary(rep)]) + "\n"


def ladder_lines(ladders: dict[str, Any]) -> list[str]:
    """The core's budget as its selection fit chose it on validation (``core.budget: auto``): every rung, the winner."""
    lines: list[str] = []
    for name, lad in ladders.items():
        win = lad["winner"]
        lines += ["", f"## The budget of {name}, chosen on validation", "",
                  f"Kept: **{win['variant']}** at rung {win['rung']} ({win['samples_per_epoch']} samples an epoch, "
                  f"best epoch {win['best_epoch']}, validation loss {_f(win['best_val_loss'])}). Why: {win['why']}.", ""]
        rungs = lad.get("ladder") or []
        if rungs:
            lines += ["| variant | rung | samples an epoch | epochs run | best epoch | best validation loss | seconds |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {r['variant']} | {r['rung']} | {r['samples_per_epoch']} | {r['epochs']} | {r['best_epoch']} "
                      f"| {_f(r['best_val_loss'])} | {r['seconds']:.1f} |" for r in rungs]
    return lines


def features_shown(rep: dict[str, Any]) -> list[str]:
    """The router features the report names (drivers, fired rules, the rule table), in order of first mention."""
    names: list[str] = []
    for ch in rep["channels"].values():
        r = ch.get("router") or {}
        names += [d["feature"] for d in r.get("drivers", [])]
        names += [f for f in map(_condition_feature, r.get("rule", [])) if f]
    for row in rep.get("rules") or []:
        names += [f for f in map(_condition_feature, row["if"]) if f]
    return list(dict.fromkeys(names))


def _glossary(rep: dict[str, Any]) -> list[str]:
    """The glossary section: one line per router feature the report names (none: no section)."""
    names = features_shown(rep)
    if not names:
        return []
    lines = ["", "## Glossary of window features", "",
             "What the router reads in the last context window of each channel (computed from the context and the "
             "members' forecasts only, never from the future; \"standard deviations\" are the window's own):", ""]
    for name in names:
        label, text = describe_feature(name)
        lines.append(f"- `{name}` ({label}): {text}.")
    return lines


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
