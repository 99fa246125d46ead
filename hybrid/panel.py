"""What a run of many series writes and serves beyond one series': forecasts at fit time, per-series scores.

Many series (a long file whose series do not share one time axis,
:mod:`hybrid.dataset`) are fitted by the one pipeline (:mod:`hybrid.pipeline`):
members of the linear family, the naive baselines and the core are fitted
once across every series; ARIMA and ETS series by series, one task per
series (loky, or a Dask cluster with ``runtime.backend: dask``). The run also
keeps:

- ``forecast.csv``: the production fits' forecasts of the H steps after each
  series' end, long format, with the bands and each member's weight per
  series; ``hybrid forecast`` serves it;
- ``series_scores.csv``: the test MSE of each series, member and combination;
- ``series.npz``: each series' ``unique_id`` and scaler, with which
  ``hybrid forecast --data NEW.csv`` forecasts each series' last window of a
  new file by the stored production fits (series of the fit only);
- ``history.csv``: the last rows of every series, for the report's plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybrid import artifacts
from hybrid.artifacts import choose_horizon
from hybrid.config import config_from_dict
from hybrid.crossfit import forecast_deployed, predict_many
from hybrid.dataset import Dataset
from hybrid.deployment import COMBINED, Deployment
from hybrid.panel_report import HISTORY_FILE, history_frame
from hybrid.state import load_arrays
from kernel.data import DataSource, each_series, future_timestamps, read_table, source_label
from kernel.errors import HybridInputError
from kernel.protocol import Scaler

FORECAST_FILE = "forecast.csv"
SERIES_FILE = "series.npz"  # each series' unique_id and scaler (mean, scale), for forecasts from new data
SERIES_SCORES = "series_scores.csv"


def production_frame(deployment: Deployment, context: np.ndarray, fc: dict[str, np.ndarray],
                     bt: dict[str, np.ndarray], ids: list[str], scalers: list[Scaler],
                     last: list[pd.Timestamp], freq: str) -> pd.DataFrame:
    """The H steps after each series' end (``context`` [S, 1, L] its last window, scaled; ``fc`` / ``bt`` each
    member's forecasts and backtests of it): ``unique_id, ds, hybrid``, its bands, each member and its weight."""
    fc = {n: fc[n] for n in deployment.members}
    _, W, combined = deployment.forecast(context, fc, bt)  # weights [S, 1, M], hybrid [S, 1, H]
    H = combined.shape[-1]
    mean = np.array([s.mean[0] for s in scalers])[:, None]
    scale = np.array([s.scale[0] for s in scalers])[:, None]
    cols: dict[str, Any] = {
        "unique_id": np.repeat(ids, H),
        "ds": np.concatenate([future_timestamps(t, H, freq) for t in last]),
        COMBINED: (combined[:, 0] * scale + mean).ravel(),
    }
    for lv, (lo, hi) in deployment.band_sets(context, fc, combined, members=False).get(COMBINED, {}).items():
        cols[f"{COMBINED}-lo-{lv:g}"] = (lo[:, 0] * scale + mean).ravel()
        cols[f"{COMBINED}-hi-{lv:g}"] = (hi[:, 0] * scale + mean).ravel()
    for k, n in enumerate(deployment.members):
        cols[n] = (fc[n][:, 0] * scale + mean).ravel()
        cols[f"weight:{n}"] = np.repeat(W[:, 0, k], H)
    return pd.DataFrame(cols)


def write_many_series(stage: Path, data: Dataset, results: dict[int, Any], context_length: int) -> None:
    """A many-series run's own files (see the module docstring); ``results``: horizon -> HorizonResult."""
    pd.concat([r.production.assign(horizon=H) for H, r in results.items()]).to_csv(stage / FORECAST_FILE, index=False)
    frames = []
    for H, r in results.items():
        series_of_test = data.series_of(data.test_starts(context_length, H))
        per_series = pd.DataFrame({"unique_id": np.array(data.ids)[series_of_test], **r.window_errors}).groupby(
            "unique_id", sort=False).mean()
        per_series.insert(0, "test_windows", np.bincount(series_of_test, minlength=data.n_series))
        per_series.insert(0, "horizon", H)
        frames.append(per_series.reset_index())
    pd.concat(frames).to_csv(stage / SERIES_SCORES, index=False)
    history = [data.original(i)[:, 0] for i in range(data.n_series)]
    history_frame(data.ids, history, data.last, data.freq).to_csv(stage / HISTORY_FILE, index=False)
    np.savez(stage / SERIES_FILE, ids=np.array(data.ids, dtype=str), mean=np.array([s.mean[0] for s in data.scalers]),
             scale=np.array([s.scale[0] for s in data.scalers]))


def panel_forecast(run_dir: Path, manifest: dict[str, Any], horizon: int | None, data: DataSource
                   ) -> tuple[pd.DataFrame, int]:
    """``hybrid forecast`` for a panel run, cut to ``horizon``: the production forecasts made at fit time, or
    (``data``: a long file of the run's series) those from the end of each series in ``data``."""
    fitted = choose_horizon(horizon, manifest["horizons"])
    if data is None:
        frame = pd.read_csv(run_dir / FORECAST_FILE)
        frame = frame[frame["horizon"] == fitted].drop(columns="horizon")
    else:
        frame = forecast_new_data(run_dir, manifest, fitted, data)
    frame = frame.groupby("unique_id", sort=False).head(horizon or fitted)
    return frame.reset_index(drop=True), fitted


def forecast_new_data(run_dir: Path, manifest: dict[str, Any], H: int, data: DataSource) -> pd.DataFrame:
    """Fitted horizon ``H``'s forecasts after the end of each series of ``data`` (a long file of series the run
    was fitted on, scaled as they were), by the stored production members and combination."""
    if "stored_members" not in manifest:
        raise HybridInputError(f"{run_dir} keeps no fitted members (a many-series run of an older version); fit "
                               "it again to forecast from new data.")
    cfg, label, L = config_from_dict(manifest["config"]), source_label(data), manifest["context_length"]
    stored = load_arrays(run_dir / SERIES_FILE)
    index = {str(uid): i for i, uid in enumerate(stored["ids"])}
    ids, rows, contexts, last, scalers = [], [], [], [], []
    for uid, series, freq in each_series(read_table(data, cfg.data), label, cfg.data):
        why = ("was not in the fit (forecast the run's series only, or fit again with it)" if uid not in index
               else f"is spaced {freq}, the run {manifest['freq']}" if freq != manifest["freq"]
               else f"has {len(series)} rows; forecasting needs the last {L} (context_length)" if len(series) < L
               else "")
        if why:
            raise HybridInputError(f"--data {label}: unique_id {uid} {why}.")
        i = index[uid]
        scaler = Scaler(stored["mean"][i : i + 1], stored["scale"][i : i + 1])
        scalers.append(scaler)
        contexts.append(scaler.transform(series["y"].to_numpy(np.float32)[-L:, None]).T)
        ids.append(uid)
        rows.append(i)
        last.append(series.index[-1])
    context = np.ascontiguousarray(np.stack(contexts))  # [S, 1, L]
    members, deployment = artifacts.load_fits(run_dir, manifest, H)
    local = {n for n, by_h in manifest["stored_members"].items() if by_h.get(str(H), "").startswith("series:")}

    def predict(name: str, ctx: np.ndarray, refs: np.ndarray | None) -> np.ndarray:
        if name in local:  # one fit per series of the run
            return np.concatenate([predict_many(members[name][i], ctx[k : k + 1], H) for k, i in enumerate(rows)])
        return predict_many(members[name], ctx, H, refs)

    fc, bt = forecast_deployed(deployment, context, predict)
    return production_frame(deployment, context, fc, bt, ids, scalers, last, manifest["freq"])
