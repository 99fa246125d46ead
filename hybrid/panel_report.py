"""The vote report of a many-series run: what the combination is, how each series weighs its members, a few plots.

``hybrid forecast`` on a many-series run writes ``report.md`` and ``plot-<unique_id>.png`` for up to
``PLOTTED`` series beside the forecast: the series with the largest, the median and the smallest test MSE of the
combined forecast, and the first in the file (each once), so the plots show where it does well and where not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybrid.deployment import COMBINED

PLOTTED = 4
HISTORY_FILE = "history.csv"  # the last rows of every series (original units), written at fit time
HISTORY_ROWS = 96  # rows per series kept for the plots


def history_frame(ids: list[str], values: list[np.ndarray], last: list[pd.Timestamp], freq: str) -> pd.DataFrame:
    """``unique_id, ds, y`` of each series' last ``HISTORY_ROWS`` rows (values in original units, [T] each)."""
    parts = []
    for uid, y, end in zip(ids, values, last, strict=True):
        y = np.asarray(y, np.float64)[-HISTORY_ROWS:]
        parts.append(pd.DataFrame({"unique_id": uid, "ds": pd.date_range(end=end, periods=len(y), freq=freq),
                                   "y": y}))
    return pd.concat(parts, ignore_index=True)


def chosen_series(scores: pd.DataFrame) -> list[str]:
    """Up to ``PLOTTED`` series: the worst, median and best test MSE of ``hybrid``, and the first in the file."""
    if scores.empty or COMBINED not in scores:
        return []
    order = scores.sort_values(COMBINED, kind="stable")["unique_id"].astype(str).tolist()
    picks = [order[-1], order[len(order) // 2], order[0], str(scores["unique_id"].iloc[0])]
    return list(dict.fromkeys(picks))[:PLOTTED]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def write_panel_report(run_dir: Path, manifest: dict[str, Any], frame: pd.DataFrame, fitted: int,
                       out_dir: Path) -> list[Path]:
    """Write ``report.md`` and the plots of a many-series forecast ``frame`` (long, with ``weight:`` columns)."""
    entry = manifest["results"][str(fitted)]
    comb = entry["combiner"]
    members = list(comb["members"])
    scores = pd.read_csv(run_dir / "series_scores.csv")
    scores = scores[scores["horizon"] == fitted]
    scores["unique_id"] = scores["unique_id"].astype(str)
    frame = frame.assign(unique_id=frame["unique_id"].astype(str))
    scores = scores[scores["unique_id"].isin(frame["unique_id"])]  # a forecast from new data may hold fewer series
    weights = frame.groupby("unique_id", sort=False)[[f"weight:{m}" for m in members]].first()
    n_series = frame["unique_id"].nunique()
    lines = [f"# Vote report: {manifest['dataset']} ({n_series} series, {len(frame) // max(1, n_series)} steps)",
             "", f"Fitted horizon {fitted}, context length {manifest['context_length']}; run `{run_dir}`.", ""]
    used = comb["used"]
    lines.append(f"The combined forecast `{COMBINED}` is `{used}`" + (f" (the router `{comb['mode']}` fell back: "
                 f"{comb['fallback_reason']})" if comb.get("fallback") else "") + ". It was learned from the "
                 "out-of-fold forecasts of every series together; the test part chose nothing.")
    for line in (entry.get("gate") or {}).get("reasons") or []:
        lines += ["", f"**Set aside.** {line}."]
    for line in (comb.get("sound") or {}).get("reasons") or []:
        lines += ["", f"**Not sound.** {line}."]
    mean_w = weights.mean().rename(lambda c: c.removeprefix("weight:"))
    lines += ["", "## Members", "", "| member | mean weight over the series | series where it weighs most | "
              "test MSE (mean over series) |", "|---|---|---|---|"]
    top = weights.idxmax(axis=1).str.removeprefix("weight:").value_counts()
    for m in sorted(members, key=lambda m: -mean_w[m]):
        mse = float(scores[m].mean()) if m in scores else float("nan")
        lines.append(f"| {m} | {mean_w[m]:.3f} | {int(top.get(m, 0))} | {mse:.4g} |")
    if COMBINED in scores:
        lines.append(f"| **{COMBINED}** | | | {float(scores[COMBINED].mean()):.4g} |")
    shown = chosen_series(scores)
    paths = []
    history = pd.read_csv(run_dir / HISTORY_FILE) if (run_dir / HISTORY_FILE).exists() else None
    if shown:
        lines += ["", "## A few series", "", "The series with the largest, the median and the smallest test MSE of "
                  "the combined forecast, and the first series of the file.", ""]
        lines += ["| series | test MSE of hybrid | best member on its test windows | its weights |",
                  "|---|---|---|---|"]
    for uid in shown:
        row = scores[scores["unique_id"] == uid].iloc[0]
        best = min((m for m in members if m in row), key=lambda m: row[m])
        w = ", ".join(f"{m} {weights.loc[uid, f'weight:{m}']:.2f}" for m in members
                      if weights.loc[uid, f"weight:{m}"] > 0.005)
        plot = f"plot-{_safe(uid)}.png"
        lines.append(f"| {uid} | {row[COMBINED]:.4g} | {best} ({row[best]:.4g}) | {w} |")
        if history is not None:
            _plot(history[history["unique_id"].astype(str) == uid], frame[frame["unique_id"] == uid], members,
                  weights.loc[uid], f"{manifest['dataset']} / {uid}", out_dir / plot)
            paths.append(out_dir / plot)
    lines += ["", *[f"![{p.stem}]({p.name})" for p in paths]]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return [report, *paths]


def _plot(history: pd.DataFrame, forecast: pd.DataFrame, members: list[str], weights: pd.Series, title: str,
          path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(pd.to_datetime(history["ds"]), history["y"], color="black", lw=1.2, label="history")
    t = pd.to_datetime(forecast["ds"])
    bands = sorted({c.rsplit("-", 1)[1] for c in forecast.columns if c.startswith(f"{COMBINED}-lo-")}, key=float,
                   reverse=True)
    for k, lv in enumerate(bands):
        ax.fill_between(t, forecast[f"{COMBINED}-lo-{lv}"], forecast[f"{COMBINED}-hi-{lv}"], color="crimson",
                        alpha=0.12 + 0.12 * k, lw=0, label=f"{lv} % band")
    for m in members:
        w = float(weights[f"weight:{m}"])
        ax.plot(t, forecast[m], lw=0.9, ls="--", alpha=0.35 + 0.6 * min(w, 1.0), label=f"{m} (w={w:.2f})")
    ax.plot(t, forecast[COMBINED], color="crimson", lw=2.0, label=COMBINED)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
