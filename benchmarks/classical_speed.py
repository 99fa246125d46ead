"""Speed and accuracy of the classical members (ARIMA, ETS) on ETTh1.

Protocol (docs/architecture.md): ETT split (train rows 0..8640), per-channel standard
scaling fitted on train, L = 512, every stride-1 test window. The members are
fitted once (at the longest horizon, they are horizon-agnostic); the 2785 test
contexts of H = 96 are forecast once at H = 720, and each horizon H is scored
on its own first N_H windows, truncated to H (N_H = 3392 - 512 - H + 1).

The per-window refit cost (what a refit-per-window evaluation would pay) is
measured on a few windows per channel with the model each channel chose and
extrapolated to every window and channel.

Usage:
    python benchmarks/classical_speed.py [--data /work/shared/data/ETTh1.csv] [--n-jobs 2]
        [--refit-windows 5] [--out benchmarks/classical_speed.md]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from baselines.arima import Arima  # noqa: E402
from baselines.ets import Ets  # noqa: E402
from baselines.naive import SeasonalNaive  # noqa: E402
from kernel.contract import TaskSpec  # noqa: E402
from kernel.periods import detect_periods  # noqa: E402
from kernel.protocol import Scaler, make_split, mse_mae, windows  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402

L = 512
HORIZONS = (96, 192, 336, 720)


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its reaped children (MiB)."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return self_kb / 1024, child_kb / 1024


def refit_seconds_arima(member: Arima, contexts: np.ndarray, n: int) -> float:
    """Mean seconds of one pmdarima fit (the channel's chosen order) on one window."""
    import pmdarima as pm

    times = []
    for j, model in enumerate(member.models_):
        if model is None:
            continue
        kwargs, _ = model.to_statsmodels()
        for i in np.linspace(0, len(contexts) - 1, n).astype(int):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pm.ARIMA(
                    order=kwargs["order"],
                    seasonal_order=kwargs["seasonal_order"],
                    with_intercept=model.has_mean,
                    maxiter=member.maxiter,
                    suppress_warnings=True,
                ).fit(contexts[i, j].astype(np.float64))
            times.append(time.perf_counter() - start)
    return float(np.mean(times))


def refit_seconds_ets(member: Ets, contexts: np.ndarray, n: int) -> float:
    """Mean seconds of one statsmodels ETSModel fit (the channel's chosen model) on one window."""
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    times = []
    for j, model in enumerate(member.models_):
        if model is None:
            continue
        for i in np.linspace(0, len(contexts) - 1, n).astype(int):
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ETSModel(
                    contexts[i, j].astype(np.float64),
                    error="add",
                    trend=None if model.trend == "none" else "add",
                    damped_trend=model.trend == "add_damped",
                    seasonal="add" if model.period else None,
                    seasonal_periods=model.period or None,
                ).fit(disp=False, maxiter=member.maxiter)
            times.append(time.perf_counter() - start)
    return float(np.mean(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/ETTh1.csv")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--backend", default="loky")
    parser.add_argument("--refit-windows", type=int, default=5)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    frame = pd.read_csv(args.data)
    values = frame.drop(columns=[frame.columns[0]]).to_numpy(np.float64)  # [T, C]
    split = make_split(len(values), L, max(HORIZONS), kind="ett", freq="h")
    scaler = Scaler.fit(split.part(values, "train"))
    scaled = scaler.transform(values)
    train, val, test = (split.part(scaled, p) for p in ("train", "val", "test"))
    periods = detect_periods(train).dominant
    spec = TaskSpec(
        context_length=L, horizon=max(HORIZONS), freq="h", periods=periods, n_jobs=args.n_jobs, backend=args.backend
    )
    contexts, _ = windows(test, L, min(HORIZONS))  # [2785, C, L]: every test context
    n_windows, n_channels, _ = contexts.shape

    rows, accuracy, status_lines = [], {}, []
    classical_s = 0.0  # fit + predict (H=720, every window) of arima and ets
    total_start = time.perf_counter()
    for member in (SeasonalNaive(), Arima(), Ets()):
        start = time.perf_counter()
        member.fit(train, val, spec)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        forecast = member.predict(contexts)  # [N, C, 720]
        predict_s = time.perf_counter() - start
        # predict cost at H = 96 alone (the length the 2785 windows are scored at)
        start = time.perf_counter()
        if hasattr(member, "horizon_"):
            member.horizon_, saved = min(HORIZONS), member.horizon_
            member.predict(contexts)
            member.horizon_ = saved
        predict96_s = time.perf_counter() - start
        if isinstance(member, (Arima, Ets)):
            classical_s += fit_s + predict_s
        accuracy[member.name] = {}
        for h in HORIZONS:
            _, target = windows(test, L, h)
            accuracy[member.name][h] = mse_mae(forecast[: len(target), :, :h], target)
        refit = ""
        if isinstance(member, Arima):
            per_window = refit_seconds_arima(member, contexts, args.refit_windows)
        elif isinstance(member, Ets):
            per_window = refit_seconds_ets(member, contexts, args.refit_windows)
        else:
            per_window = None
        if per_window is not None:
            refit_total = per_window * n_windows * n_channels
            ratio = refit_total / predict96_s
            refit = f"{per_window * 1e3:.0f} ms x {n_windows * n_channels} = {refit_total:.0f} s ({ratio:.0f}x)"
            for st in member.channel_status_:
                status_lines.append(
                    f"- {member.name} channel {st['channel']}: {st['status']} {st.get('order') or ''} "
                    f"{st.get('selected_by', '')} {st['reason']}".rstrip()
                )
        mse, mae = accuracy[member.name][96]
        rows.append(
            f"| {member.name} | {fit_s:.1f} | {predict_s:.2f} | {predict96_s:.2f} | {mse:.3f} | {mae:.3f} | {refit or '-'} |"
        )
    total_s = time.perf_counter() - total_start
    rss_self, rss_children = peak_rss_mb()

    lines = [
        "# Classical members on ETTh1: speed and accuracy",
        "",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}; Python {platform.python_version()}; "
        f"n_jobs={args.n_jobs}, backend={args.backend}.",
        f"ETT split, L={L}, periods found on train: {list(periods)}; {n_windows} test windows x {n_channels} channels "
        f"at H=96 (scaled units).",
        "",
        "| member | fit s | predict s (all windows, H=720) | predict s (H=96) | MSE H=96 | MAE H=96 "
        "| per-window refit (extrapolated, vs predict H=96) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"arima + ets, fit + forecast of every test window at H=720: **{classical_s:.1f} s** (goal < 60 s). "
        f"Whole script {total_s:.1f} s including the refit sampling. Peak RSS {rss_self:.0f} MiB (main process; "
        f"loky workers not included, {rss_children:.0f} MiB largest reaped child).",
        "Refit column: mean seconds of one statsmodels ETSModel / pmdarima ARIMA fit of the channel's chosen model "
        f"on {args.refit_windows} windows per channel, times every window and channel, and the ratio to this member's "
        "batched forecast of the same windows at H=96.",
        "",
        "## Accuracy by horizon (one forecast at 720, truncated)",
        "",
        "| member | " + " | ".join(f"H={h} MSE / MAE" for h in HORIZONS) + " |",
        "|---|" + "---|" * len(HORIZONS),
        *(
            f"| {name} | " + " | ".join(f"{acc[h][0]:.3f} / {acc[h][1]:.3f}" for h in HORIZONS) + " |"
            for name, acc in accuracy.items()
        ),
        "",
        "## Chosen models",
        "",
        *status_lines,
    ]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
