"""Many series in long format (``unique_id, ds, y``), handled as many series: a panel.

A long file whose series do not share one time axis (different lengths,
starts or ends) is not pivoted into a wide table that would have to align:

- every series is validated on its own (sorted, duplicates, missing values,
  spacing: the same rules and messages as a wide file, naming the series), and
  gets its own split (``data.split``, as a wide file's: 70/10/20 by default),
  its own scaler fitted on its own training part and its own blocked fold
  plan over its own history (and the core's, of ``stack.core_folds`` folds);
- **global members** (the linear family and the context-only baselines) are
  fitted once across all series: their training windows are the windows of
  every series (none spans two series), each fold's training set the union of
  every series' fold training segments;
- **local members** (ARIMA, ETS) are fitted per series, one task per series
  through :func:`kernel.parallel.parallel_map` (loky, or a Dask cluster with
  ``runtime.backend: dask``); a task fits every stage of its series and
  returns float32 forecasts only, never the fitted models;
- the sanity gate, the router, the static combiners and the conformal bands
  are learned from the out-of-fold windows of every series together
  (:func:`hybrid.deployment.deploy`, unchanged);
- the test part of every series is scored over every window (each window
  weighs the same; per-series scores go to ``series_scores.csv``);
- the production fits forecast the H steps after each series' end at fit time:
  ``hybrid forecast`` serves that table (``forecast.csv``, long format, with
  the bands and each member's weight per series);
- the run stores the production fits (a local member: one per series, which
  its tasks return) and each horizon's combination as a one-series run does
  (:func:`hybrid.artifacts.store_fits`), and each series' scaler
  (``series.npz``): ``hybrid forecast --data NEW.csv`` forecasts each series'
  last window of the new file with them (series of the fit only).

The Time-LLM core runs across series (a global model, every stage fitted on
every series' windows, early-stopped on every series' validation part) only
without references (``core.references`` and ``core.classical_text`` false):
its reference tokens look forecasts up by row of one series.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hybrid import artifacts
from hybrid.artifacts import PANEL, choose_horizon
from hybrid.config import Config, config_from_dict
from hybrid.crossfit import MemberFits, fit_in_one_pass, predict_by_fold, predict_many
from hybrid.deployment import COMBINED, Deployment, deploy
from hybrid.evaluation import Scoreboard, scores_train_only, train_only_scores
from hybrid.members import expand_period_experts, make_member, uses_references
from hybrid.panel_report import HISTORY_FILE, history_frame
from hybrid.records import HorizonResult, run_manifest
from hybrid.sizing import choose_panel_context_length, core_folds, fit_fold_plans
from hybrid.stacking import OOFWindows, baseline_mse, sanity_gate
from hybrid.state import STATE_FORMAT, load_arrays
from kernel.contract import Forecaster, Segment, TaskSpec
from kernel.data import (
    LONG_COLUMNS,
    DataConfig,
    DataSource,
    _handle_missing,
    _parse_times,
    _regularise,
    dataset_name,
    dayfirst_setting,
    future_timestamps,
    read_table,
    resolve_split_kind,
    source_label,
)
from kernel.errors import HybridInputError
from kernel.parallel import parallel_map
from kernel.periods import Periods, detect_periods
from kernel.protocol import FoldPlan, Scaler, Split, gather_windows, make_split, windows
from router.features import backtest_steps, shift_context

logger = logging.getLogger(__name__)

CHANNELS = ["y"]
PERIOD_SERIES = 64  # series (the longest) whose training parts the panel's periods are detected on
FORECAST_FILE = "forecast.csv"
SERIES_FILE = "series.npz"  # each series' unique_id and scaler (mean, scale), for forecasts from new data
SERIES_SCORES = "series_scores.csv"


# ----------------------------------------------------------------------------- data


def long_frame(source: DataSource, cfg: DataConfig) -> pd.DataFrame | None:
    """The rows of ``source`` when it is handled as a panel, else None (it is read as one wide series).

    A panel: ``data.layout: long``, or ``auto`` and a long file (``unique_id, ds, y``) whose series do not all
    share the same first timestamp, last timestamp and length. A long file whose series do is one
    multichannel series (one channel per ``unique_id``), as before.
    """
    if cfg.layout not in ("auto", "wide", "long"):
        raise HybridInputError(f"data.layout must be auto, wide or long; got {cfg.layout!r}.")
    if source is None or cfg.layout == "wide" or not (isinstance(source, pd.DataFrame) or Path(source).is_file()):
        return None
    try:
        head = read_table(source, cfg, nrows=0)
    except Exception:  # noqa: BLE001 - load_series reads it again and says what is wrong
        return None
    if not set(LONG_COLUMNS) <= set(head.columns):
        if cfg.layout == "long":
            raise HybridInputError(f"data.layout: long needs columns {', '.join(LONG_COLUMNS)}; {source_label(source)} has "
                                   f"{', '.join(map(str, head.columns))}.")
        return None
    frame = read_table(source, cfg)
    if cfg.layout == "long":
        return frame
    by = frame.groupby("unique_id", sort=False)["ds"]
    aligned = all(s.nunique() == 1 for s in (by.size(), by.first(), by.last()))
    return None if aligned else frame


@dataclass
class Panel:
    """Many series, scaled and split one by one, stored one after the other.

    Attributes:
        ids: the series' ``unique_id`` values, in file order.
        values: [N, 1] float32, every series scaled by its own training part, back to back.
        offsets: [S + 1] row where each series starts in ``values`` (and where the last ends).
        splits: each series' train / validation / test borders (rows of the series), of kind ``split_kind``.
        plans: each series' fold plan over its own history.
        core_plans: each series' fold plan for the core (``stack.core_folds``; ``plans`` without a core).
        mean, scale: [S] each series' scaler.
        last: each series' last timestamp.
        freq: the panel's spacing.
        periods: detected on the training parts of the longest series.
        name, source: dataset name and file.
    """

    ids: list[str]
    values: np.ndarray
    offsets: np.ndarray
    splits: list[Split]
    plans: list[FoldPlan]
    mean: np.ndarray
    scale: np.ndarray
    last: list[pd.Timestamp]
    freq: str
    periods: Periods
    name: str
    source: str
    split_kind: str = "ratio"
    core_plans: list[FoldPlan] | None = None

    @property
    def n_series(self) -> int:
        return len(self.ids)

    def series(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def segments(self, part: str) -> list[Segment]:
        """Every series' ``part`` (train / val / trainval / all) as segments placed in ``values``."""
        out = []
        for i, sp in enumerate(self.splits):
            lo, hi = {"train": (0, sp.train_end), "val": (sp.val_start, sp.val_end), "trainval": (0, sp.val_end),
                      "all": (0, int(self.offsets[i + 1] - self.offsets[i]))}[part]
            o = int(self.offsets[i])
            out.append(Segment(self.values[o + lo : o + hi], o + lo))
        return out

    def fold_segments(self, fold: int, min_rows: int, plans: list[FoldPlan] | None = None) -> list[Segment]:
        """Every series' training data for fold ``fold`` of ``plans`` (default: ``self.plans``): its history without
        the fold and the purge gaps."""
        out = []
        for i, plan in enumerate(plans or self.plans):
            o = int(self.offsets[i])
            out += [Segment(s.values, s.start + o) for s in plan.train_segments(fold, self.series(i), min_rows)]
        return out


def each_series(frame: pd.DataFrame, source: str, data_cfg: DataConfig) -> Iterator[tuple[str, pd.DataFrame, str]]:
    """Every series of a long frame, validated on its own: ``(unique_id, its rows (column y) on a regular time
    index, its spacing)``, in file order.

    Raises:
        HybridInputError: for every input problem, naming the series (``unique_id``) and the fix.
    """
    missing = [c for c in LONG_COLUMNS if c not in frame.columns]
    if missing:
        raise HybridInputError(f"{source}: a long file needs columns {', '.join(LONG_COLUMNS)}; missing {missing}.")
    y = pd.to_numeric(frame["y"], errors="coerce")
    bad = y.isna() & frame["y"].notna() & (frame["y"].astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise HybridInputError(f"column 'y' is not numeric: CSV line {row + 2} holds {frame['y'].iloc[row]!r}; "
                               "fix or remove those rows.")
    times = _parse_times(frame["ds"], "ds", source, dayfirst_setting(data_cfg))
    long = pd.DataFrame({"unique_id": frame["unique_id"].astype(str).to_numpy(), "y": y.to_numpy()}, index=times)
    for uid, rows in long.groupby("unique_id", sort=False):
        where = f"{source} [unique_id {uid}]"
        data = rows[["y"]]
        if not data.index.is_monotonic_increasing:
            data = data.sort_index(kind="stable")
        dup = data.index.duplicated(keep=False)
        if dup.any():
            if data_cfg.duplicates not in ("first", "mean"):
                raise HybridInputError(
                    f"duplicate timestamp {data.index[np.flatnonzero(dup)[0]]} for unique_id {uid}; set "
                    "data.duplicates: first or mean, or remove the duplicates."
                )
            data = data.groupby(level=0).first() if data_cfg.duplicates == "first" else data.groupby(level=0).mean()
        try:
            data = _handle_missing(data, data_cfg, where)
            data, freq = _regularise(data, data_cfg, where)
        except HybridInputError as exc:
            raise HybridInputError(f"unique_id {uid}: {exc}") from None
        yield str(uid), data, freq


def load_panel(source: str, cfg: Config, max_horizon: int, frame: pd.DataFrame | None = None,
               core_folds: int = 0) -> Panel:
    """Read and validate a long file series by series, split, scale and plan folds for each.

    ``data.split`` chooses each series' split as it does a wide series' (``auto``: ett for a dataset named
    ETTh* / ETTm*, else ratio); ``core_folds`` > 0: each series also gets a fold plan with that many folds
    for the core.

    Raises:
        HybridInputError: for every input problem, naming the series (``unique_id``) and the fix.
    """
    L, data_cfg = cfg.task.context_length, cfg.data
    if frame is None:
        frame = pd.read_csv(source)
    purge = None if cfg.stack.purge < 0 else cfg.stack.purge
    name = data_cfg.name or dataset_name(source)
    kind = resolve_split_kind(name, data_cfg.split)
    ids, parts, splits, plans, core_plans, means, scales, lasts, freqs = [], [], [], [], [], [], [], [], []
    for uid, data, freq in each_series(frame, source, data_cfg):
        values = data["y"].to_numpy(np.float32)[:, None]  # float32 in original units, as a wide series keeps them
        try:
            split = make_split(len(values), L, max_horizon, kind=kind, freq=freq, ratios=tuple(data_cfg.split_ratios))
        except HybridInputError as exc:
            raise HybridInputError(f"unique_id {uid}: {exc} Or drop the series from the file.") from None
        train = values[: split.train_end]
        scaler = Scaler.fit(train)
        if float(train.std(dtype=np.float64)) < 1e-8 * max(1.0, float(np.abs(scaler.mean[0]))):
            raise HybridInputError(f"unique_id {uid} is constant over its training part ({train[0, 0]:g}); there is "
                                   "nothing to learn from it: drop it from the file.")
        ids.append(uid)
        parts.append(scaler.transform(values))
        splits.append(split)
        means.append(float(scaler.mean[0]))
        scales.append(float(scaler.scale[0]))
        lasts.append(data.index[-1])
        freqs.append(freq)
    ends = [sp.val_end for sp in splits]
    try:  # one fold count for every series, moved as the wide path moves it (hybrid.sizing.fit_fold_plans)
        plans = fit_fold_plans(ends, L, max_horizon, cfg.stack.folds, purge)
        if core_folds:
            core_plans = fit_fold_plans(ends, L, max_horizon, min(core_folds, plans[0].n_folds), purge,
                                        "stack.core_folds")
    except HybridInputError as exc:
        raise HybridInputError(f"unique_id {ids[int(np.argmin(ends))]}: {exc}") from None
    kinds = sorted(set(freqs))
    if len(kinds) > 1:
        raise HybridInputError(f"{source}: the series have different spacings ({', '.join(kinds)}); a panel needs one "
                               "(set data.freq, or fit them separately).")
    lengths = np.array([len(p) for p in parts])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    longest = np.argsort(-lengths, kind="stable")[:PERIOD_SERIES]
    n = min(splits[i].train_end for i in longest)
    tails = [parts[i][splits[i].train_end - n : splits[i].train_end] for i in longest]
    periods = detect_periods(np.concatenate(tails, axis=1), k=cfg.task.n_periods)
    logger.info("%s: %d series in long format (%d-%d rows, %d in all) at %s; per-series %s splits; periods %s",
                name, len(ids), lengths.min(), lengths.max(), offsets[-1], kinds[0], kind, list(periods.dominant))
    return Panel(ids, np.concatenate(parts), offsets, splits, plans, np.array(means), np.array(scales),
                 lasts, kinds[0], periods, name, str(source), kind, core_plans or None)


# ----------------------------------------------------------------------------- members


def is_local(name: str, cfg: Config) -> bool:
    """Whether a member is fitted series by series (a per-channel model) rather than across series."""
    return make_member(name, cfg).per_series


@dataclass
class SeriesJob:
    """One series' work for one local member (what a worker receives)."""

    values: np.ndarray  # [T, 1] scaled
    split: Split
    plan: FoldPlan
    starts: np.ndarray  # out-of-fold window starts (rows of the series)


def _with_backtest(member: Forecaster, context: np.ndarray, horizon: int, steps: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A member's forecasts of ``context`` and of its backtest (shifted) context."""
    return (predict_many(member, context, horizon),
            predict_many(member, shift_context(context, steps), horizon)[:, :, :steps])


def local_task(job: SeriesJob, name: str, cfg: Config, spec: TaskSpec, steps: int) -> dict[str, Any]:
    """Every stage of one local member on one series; returns float32 forecasts and the production fit only.

    Keys: ``oof`` / ``oof_bt`` (the out-of-fold windows ``job.starts``),
    ``test`` / ``test_bt`` (every test window), ``test_train`` (the same by
    the train-only fit, when ``stack.train_only`` scores it), ``prod`` /
    ``prod_bt`` (the window ending at the series' end), ``production`` (the
    production fit, stored for forecasts from new data), ``fallback`` (the
    selection fit fell back to seasonal naive), ``fold_fallbacks`` (how many
    fold fits did: short series leave folds few training points).
    """
    L, H = spec.context_length, spec.horizon
    y, sp, plan = job.values, job.split, job.plan
    selection = make_member(name, cfg).fit([Segment(y[: sp.train_end])], Segment(y[sp.val_start : sp.val_end]), spec)
    folds = [selection.frozen().fit(plan.train_segments(k, y, L + H), None, spec) for k in range(plan.n_folds)]
    refit = selection.frozen().fit([Segment(y[: sp.val_end])], None, spec) if cfg.task.refit == "train+val" else selection
    production = selection.frozen().fit([Segment(y)], None, spec)
    ctx = np.ascontiguousarray(gather_windows(y, job.starts, L, H)[0])
    fold_of = plan.fold_of(job.starts)
    oof = predict_by_fold(folds, fold_of, ctx, H)
    oof_bt = np.ascontiguousarray(predict_by_fold(folds, fold_of, shift_context(ctx, steps), H)[:, :, :steps])
    test_ctx = np.ascontiguousarray(windows(y[sp.test_start : sp.test_end], L, H)[0])
    test, test_bt = _with_backtest(refit, test_ctx, H, steps)
    prod, prod_bt = _with_backtest(production, np.ascontiguousarray(y[-L:].T[None]), H, steps)
    def fell_back(member: Forecaster) -> bool:
        return member.describe().get("channel_status", [{}])[0].get("status", "ok") != "ok"

    return {"oof": oof, "oof_bt": oof_bt, "test": test, "test_bt": test_bt,
            "test_train": predict_many(selection, test_ctx, H) if scores_train_only(cfg, False) else None,
            "prod": prod, "prod_bt": prod_bt, "production": production, "fallback": fell_back(selection),
            "fold_fallbacks": sum(map(fell_back, folds))}


@dataclass
class PanelFits:
    """One member's fits on a panel, for the manifest: ``seconds`` and ``describe()``, as
    :class:`hybrid.crossfit.MemberFits` has them, and how it was fitted (``fit``).

    Attributes:
        fit: one global fit, or one task per series (and how many fell back to seasonal naive).
        folds: fold fits per series.
        fits: a global member's fits at every stage (only the production fit is kept); None for a local one.
        series_fits: a local member's production fit of each series (its tasks return no other fit).
        seconds: fit seconds.
    """

    fit: str
    folds: int
    fits: MemberFits | None = None
    series_fits: list[Forecaster] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def production(self) -> Forecaster | list[Forecaster]:
        """What the run stores (:func:`hybrid.artifacts.store_fits`): the production fit, or one per series."""
        return self.fits.production if self.fits is not None else self.series_fits

    def describe(self) -> dict[str, Any]:
        out = self.fits.describe() if self.fits is not None else {"folds": self.folds}
        return {**out, "seconds": self.seconds, "fit": self.fit}


@dataclass
class PanelHorizon:
    """What one horizon of a panel fit produced."""

    result: HorizonResult  # what the manifest's results entry is written from (hybrid.records.horizon_entry)
    forecast: pd.DataFrame  # production forecasts, long format (original units)
    series_scores: pd.DataFrame  # test MSE per series and member


def _windows_of(panel: Panel, starts: list[np.ndarray], L: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """Contexts [n, 1, L] and targets [n, 1, H] of per-series starts (rows of each series), series after series."""
    ctx, tgt = zip(*(gather_windows(panel.series(i), s, L, H) for i, s in enumerate(starts)), strict=True)
    return np.ascontiguousarray(np.concatenate(ctx)), np.ascontiguousarray(np.concatenate(tgt))


def fit_horizon(cfg: Config, panel: Panel, names: tuple[str, ...], H: int, bar: Any = None) -> PanelHorizon:
    """Cross-fit every member on every series at horizon ``H``, learn the combination, score the test windows."""
    L = cfg.task.context_length
    t_start = time.perf_counter()
    steps = backtest_steps(H, L, cfg.router.backtest_steps)
    spec = TaskSpec(context_length=L, horizon=H, freq=panel.freq, periods=panel.periods.dominant, seed=cfg.task.seed,
                    n_jobs=1, backend=cfg.runtime.backend, dask_address=cfg.runtime.dask_address,
                    channel_names=("y",), description=cfg.data.description)
    # stack.max_windows shared out over the series, but at least one window per fold of each series: with fewer, a
    # series' few windows would all fall in its first folds and leave-one-fold-out would have folds without windows
    cap = 0 if cfg.stack.max_windows == 0 else max(cfg.stack.folds, cfg.stack.max_windows // panel.n_series)
    starts = [plan.sample_starts(H, cap) for plan in panel.plans]
    folds = np.concatenate([plan.fold_of(s) for plan, s in zip(panel.plans, starts, strict=True)])
    ctx, tgt = _windows_of(panel, starts, L, H)
    series_of_oof = np.repeat(np.arange(panel.n_series), [len(s) for s in starts])
    oof = OOFWindows(panel.offsets[series_of_oof] + np.concatenate(starts), folds, ctx, tgt)
    bt_ctx = shift_context(ctx, steps)
    test_starts = [np.arange(sp.test_start, sp.test_end - L - H + 1) for sp in panel.splits]
    test_ctx, test_tgt = _windows_of(panel, test_starts, L, H)
    series_of_test = np.repeat(np.arange(panel.n_series), [len(s) for s in test_starts])
    last_ctx = np.ascontiguousarray(np.stack([panel.series(i)[-L:].T for i in range(panel.n_series)]))  # [S, 1, L]
    test_fc: dict[str, np.ndarray] = {}
    test_bt: dict[str, np.ndarray] = {}
    train_fc: dict[str, np.ndarray] = {}
    prod_fc: dict[str, np.ndarray] = {}
    prod_bt: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    fits: dict[str, PanelFits] = {}
    failed: dict[str, str] = {}
    n_folds = panel.plans[0].n_folds
    for name in names:
        t0 = time.perf_counter()
        if bar is not None:
            bar.set_postfix_str(f"H={H} {name}")
        try:
            if is_local(name, cfg):
                jobs = [SeriesJob(panel.series(i), panel.splits[i], panel.plans[i], starts[i])
                        for i in range(panel.n_series)]
                task = functools.partial(local_task, name=name, cfg=cfg, spec=spec, steps=steps)
                res = parallel_map(task, jobs, n_jobs=cfg.runtime.n_jobs, backend=cfg.runtime.backend,
                                   dask_address=cfg.runtime.dask_address, desc=f"{name}: {len(jobs)} series")
                oof.forecasts[name] = np.concatenate([r["oof"] for r in res])
                oof.backtests[name] = np.concatenate([r["oof_bt"] for r in res])
                test_fc[name] = np.concatenate([r["test"] for r in res])
                test_bt[name] = np.concatenate([r["test_bt"] for r in res])
                if scores_train_only(cfg, reads_references=False):
                    train_fc[name] = np.concatenate([r["test_train"] for r in res])
                prod_fc[name] = np.concatenate([r["prod"] for r in res])
                prod_bt[name] = np.concatenate([r["prod_bt"] for r in res])
                n_fb, n_fold_fb = sum(r["fallback"] for r in res), sum(r["fold_fallbacks"] for r in res)
                fits[name] = PanelFits(f"fitted per series ({panel.n_series} tasks); {n_fb} fell back to seasonal "
                                       f"naive, and {n_fold_fb} of {panel.n_series * n_folds} fold fits", n_folds,
                                       series_fits=[r["production"] for r in res])
            else:
                core = uses_references(make_member(name, cfg))
                plans = panel.core_plans if core and panel.core_plans else panel.plans  # stack.core_folds
                fold_of = np.concatenate([p.fold_of(s) for p, s in zip(plans, starts, strict=True)])
                fitted = _fit_global(name, cfg, panel, spec, steps, plans, fold_of, ctx, bt_ctx, test_ctx, last_ctx,
                                     oof, test_fc, test_bt, train_fc, prod_fc, prod_bt)
                fits[name] = PanelFits(f"one global fit across {panel.n_series} series per stage",
                                       plans[0].n_folds, fitted)
        except HybridInputError:
            raise
        except Exception as exc:  # a failing member never stops the run
            logger.warning("member %s failed at H=%d: %s: %s", name, H, type(exc).__name__, exc)
            failed[name] = f"{type(exc).__name__}: {exc}"
            for d in (oof.forecasts, oof.backtests, test_fc, test_bt, train_fc, prod_fc, prod_bt):
                d.pop(name, None)
        seconds[name] = round(time.perf_counter() - t0, 3)
        if name in fits:
            fits[name].seconds = {"all stages": seconds[name]}
        if bar is not None:
            bar.update()
    ok = [n for n in names if n in oof.forecasts]
    if not ok:
        raise RuntimeError(f"every member failed at horizon {H}; see the warnings above.")
    gate = sanity_gate(oof, ok, baseline_mse(oof, spec, [0]), cfg.stack.gate_ratio, CHANNELS)
    t0 = time.perf_counter()
    deployment, oof_combined = deploy(cfg, oof, ok, gate, panel.periods.dominant, H, L, steps, [0], CHANNELS, ok)
    seconds["combine"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    board, board_train = Scoreboard(CHANNELS), Scoreboard(CHANNELS)
    sq_err: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(test_ctx), cfg.stack.chunk_windows):
        sl = slice(i, i + cfg.stack.chunk_windows)
        fc = {n: test_fc[n][sl] for n in ok}
        combos = board.add_deployed(deployment, test_ctx[sl], fc, {n: test_bt[n][sl] for n in ok}, test_tgt[sl])
        for n, f in {**fc, **combos}.items():
            sq_err.setdefault(n, []).append(((f.astype(np.float64) - test_tgt[sl]) ** 2).mean(axis=(1, 2)))
        for n in (n for n in ok if n in train_fc):
            board_train.add(n, train_fc[n][sl], test_tgt[sl])
    seconds["test"] = round(time.perf_counter() - t0, 3)
    seconds["total"] = round(time.perf_counter() - t_start, 3)

    test = {n: board.scores(n) for n in board.tallies}
    result = HorizonResult(
        horizon=H, members={n: fits[n] for n in ok}, failed=failed, oof={n: oof.scores(n, CHANNELS) for n in ok},
        oof_windows=len(oof.starts), oof_combined=oof_combined, gate=gate, deployment=deployment,
        test=test, test_train_only=train_only_scores(board_train, test, ok),
        seconds=seconds, channels=CHANNELS, test_windows=len(test_ctx),
    )
    errors = {n: np.concatenate(e) for n, e in sq_err.items()}
    per_series = pd.DataFrame({"unique_id": np.array(panel.ids)[series_of_test], **errors}).groupby(
        "unique_id", sort=False).mean()
    per_series.insert(0, "test_windows", np.bincount(series_of_test, minlength=panel.n_series))
    per_series.insert(0, "horizon", H)
    forecast = production_frame(deployment, last_ctx, prod_fc, prod_bt, panel.ids, panel.mean, panel.scale,
                                panel.last, panel.freq)
    return PanelHorizon(result, forecast, per_series.reset_index())


def _fit_global(name: str, cfg: Config, panel: Panel, spec: TaskSpec, steps: int, plans: list[FoldPlan],
                folds: np.ndarray, ctx: np.ndarray, bt_ctx: np.ndarray, test_ctx: np.ndarray, last_ctx: np.ndarray,
                oof: OOFWindows, test_fc: dict, test_bt: dict, train_fc: dict, prod_fc: dict, prod_bt: dict
                ) -> MemberFits:
    """One member fitted across every series at every stage; its forecasts go into the dicts given.

    ``plans``: each series' fold plan for this member, ``folds``: the fold of each out-of-fold window in them.
    """
    L, H = spec.context_length, spec.horizon
    member = make_member(name, cfg)
    trains = [panel.segments("train"), *(panel.fold_segments(k, L + H, plans) for k in range(plans[0].n_folds)),
              panel.segments("trainval"), panel.segments("all")]
    # the core, alone across series, early-stops on every series' val part (the naive members ignore it)
    fitted = fit_in_one_pass(name, member, plans[0], trains, panel.segments("val"), spec, cfg.task.refit == "train+val")
    oof.forecasts[name] = predict_by_fold(fitted.folds, folds, ctx, H)
    oof.backtests[name] = np.ascontiguousarray(predict_by_fold(fitted.folds, folds, bt_ctx, H)[:, :, :steps])
    test_fc[name], test_bt[name] = _with_backtest(fitted.refit, test_ctx, H, steps)
    if scores_train_only(cfg, uses_references(member)):
        train_fc[name] = predict_many(fitted.selection, test_ctx, H)
    prod_fc[name], prod_bt[name] = _with_backtest(fitted.production, last_ctx, H, steps)
    fitted.release()  # every forecast is made: keep the production fit and the description
    return fitted


def production_frame(deployment: Deployment, context: np.ndarray, fc: dict[str, np.ndarray],
                     bt: dict[str, np.ndarray], ids: list[str], mean: np.ndarray, scale: np.ndarray,
                     last: list[pd.Timestamp], freq: str) -> pd.DataFrame:
    """The H steps after each series' end (``context`` [S, 1, L] its last window, scaled; ``fc`` / ``bt`` each
    member's forecasts and backtests of it): ``unique_id, ds, hybrid``, its bands, each member and its weight."""
    fc = {n: fc[n] for n in deployment.members}
    _, W, combined = deployment.forecast(context, fc, bt)  # weights [S, 1, M], hybrid [S, 1, H]
    H = combined.shape[-1]
    mean, scale = np.asarray(mean)[:, None], np.asarray(scale)[:, None]
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


# ----------------------------------------------------------------------------- the run


def fit_panel(cfg: Config, source: str, frame: pd.DataFrame, horizons: tuple[int, ...],
              run_dir: str | Path | None = None, overwrite: bool = False, latest: bool = True
              ) -> tuple[Path, dict[str, Any]]:
    """``hybrid fit`` on many series: cross-fit, combine, score and write a run directory (see the module docstring).

    ``latest``: point ``runs/latest`` at the finished run (``artifacts.staged_run_dir``).
    """
    t_start = time.perf_counter()
    lengths = frame.groupby(frame["unique_id"].astype(str), sort=False).size().tolist() if "unique_id" in frame else []
    cfg, sizing = choose_panel_context_length(cfg, lengths or [0], horizons)
    readers = [n for n in cfg.task.members if uses_references(make_member(n, cfg))]
    if readers and (cfg.core.references or cfg.core.classical_text):
        # reference tokens look forecasts up by row of one series: on many series the core adapts, as a member that
        # cannot fit a short series does, instead of stopping the default member set
        logger.warning("%s (the Time-LLM core) reads no references on many series (they are looked up by row of one "
                       "series): core.references and core.classical_text are off for this run.", ", ".join(readers))
        cfg = replace(cfg, core=replace(cfg.core, references=False, classical_text=False))
    panel = load_panel(source, cfg, max(horizons), frame, core_folds(cfg) if readers else 0)
    names = expand_period_experts(cfg.task.members, cfg.task.period_experts, panel.periods.dominant,
                                  cfg.task.context_length)
    results: dict[int, PanelHorizon] = {}
    bar = tqdm(total=len(horizons) * len(names), desc="fit", unit="member", disable=not cfg.runtime.progress)
    for H in horizons:
        results[H] = fit_horizon(cfg, panel, names, H, bar)
    bar.close()
    lengths = panel.lengths()
    manifest = run_manifest(cfg, {H: r.result for H, r in results.items()}, {
        "state_format": STATE_FORMAT,  # fitted members and combinations as JSON + .npz (+ safetensors)
        "layout": PANEL,
        "dataset": panel.name,
        "source": panel.source,
        "columns": CHANNELS,
        "output_columns": CHANNELS,
        "target": "y",
        "features": "S",
        "freq": panel.freq,
        "n_rows": int(panel.offsets[-1]),
        "n_series": panel.n_series,
        "series_rows": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max())},
        "context_length": cfg.task.context_length,
        **({"context_length_auto": sizing} if sizing else {}),
        "horizons": list(horizons),
        "split": {"kind": f"{panel.split_kind}, per series", "ratios": list(cfg.data.split_ratios)},
        "periods": panel.periods.to_dict(),
        "cross_fit": {"folds": cfg.stack.folds, "scheme": "blocked folds per series; fold k of the panel is fold k "
                      "of every series", "max_windows": cfg.stack.max_windows,
                      "core_folds": panel.core_plans[0].n_folds if panel.core_plans else None},
    })
    with artifacts.staged_run_dir(run_dir, panel.name, overwrite=overwrite, latest=latest) as (stage, final):
        pd.concat([r.forecast.assign(horizon=H) for H, r in results.items()]).to_csv(stage / FORECAST_FILE, index=False)
        pd.concat([r.series_scores for r in results.values()]).to_csv(stage / SERIES_SCORES, index=False)
        history = [panel.series(i)[:, 0] * panel.scale[i] + panel.mean[i] for i in range(panel.n_series)]
        history_frame(panel.ids, history, panel.last, panel.freq).to_csv(stage / HISTORY_FILE, index=False)
        manifest["stored_members"] = artifacts.store_fits(stage, {H: r.result for H, r in results.items()})
        np.savez(stage / SERIES_FILE, ids=np.array(panel.ids, dtype=str), mean=panel.mean, scale=panel.scale)
        manifest["fit_seconds_total"] = round(time.perf_counter() - t_start, 2)
        artifacts.write_json(stage / artifacts.MANIFEST, manifest)
    logger.info("run written to %s", final)
    return final, manifest


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
    ids, rows, contexts, last = [], [], [], []
    for uid, series, freq in each_series(read_table(data, cfg.data), label, cfg.data):
        why = ("was not in the fit (forecast the run's series only, or fit again with it)" if uid not in index
               else f"is spaced {freq}, the run {manifest['freq']}" if freq != manifest["freq"]
               else f"has {len(series)} rows; forecasting needs the last {L} (context_length)" if len(series) < L
               else "")
        if why:
            raise HybridInputError(f"--data {label}: unique_id {uid} {why}.")
        i = index[uid]
        scaler = Scaler(stored["mean"][i : i + 1], stored["scale"][i : i + 1])
        contexts.append(scaler.transform(series["y"].to_numpy(np.float32)[-L:, None]).T)
        ids.append(uid)
        rows.append(i)
        last.append(series.index[-1])
    context = np.ascontiguousarray(np.stack(contexts))  # [S, 1, L]
    members, deployment = artifacts.load_fits(run_dir, manifest, H)
    local = {n for n, by_h in manifest["stored_members"].items() if by_h.get(str(H), "").startswith("series:")}

    def predict(name: str, ctx: np.ndarray) -> np.ndarray:
        if name in local:  # one fit per series of the run
            return np.concatenate([predict_many(members[name][i], ctx[k : k + 1], H) for k, i in enumerate(rows)])
        return predict_many(members[name], ctx, H)

    fc = {n: predict(n, context) for n in deployment.members}
    bt = {n: predict(n, shift_context(context, deployment.steps))[:, :, :deployment.steps]
          for n in deployment.backtest_members}
    return production_frame(deployment, context, fc, bt, ids, stored["mean"][rows], stored["scale"][rows], last,
                            manifest["freq"])
