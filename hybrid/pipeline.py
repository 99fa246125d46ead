"""The pipeline: cross-fit every member, learn the combination out of fold, score, persist.

``fit_run`` is what ``hybrid fit`` does; ``forecast_run`` what ``hybrid
forecast`` does for one series (:mod:`hybrid.panel` serves many). One series
or many are one :class:`hybrid.dataset.Dataset`, fitted by one
:class:`HorizonFitter`. Per horizon (docs/architecture.md, "Data flow"):

1. every classical member at every stage (:mod:`hybrid.crossfit`): selection
   on train / val, one fit per fold, refit on train + val, production fit;
2. their out-of-fold forecasts of (a sample of) every historical window, and
   the sanity gate (:mod:`hybrid.stacking`);
3. the core, trained on the out-of-fold forecasts of its reference members;
4. the router and the static combiners, learned and checked fold by fold
   (:mod:`router.fitting`), and conformal bands from the out-of-fold errors
   (:mod:`hybrid.intervals`);
5. the test part, scored chunk by chunk (:mod:`hybrid.evaluation`); many
   series: the production forecasts of every series' next steps too.

The test part chooses nothing.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hybrid import artifacts
from hybrid.artifacts import choose_horizon, is_panel
from hybrid.config import Config, build_config, config_from_dict
from hybrid.crossfit import (
    MemberFits,
    SeriesFits,
    SeriesJob,
    fit_member_stages,
    forecast_deployed,
    oof_references,
    predict_many,
    series_task,
)
from hybrid.dataset import Dataset, from_long, from_series
from hybrid.deployment import COMBINED, Deployment, deploy
from hybrid.evaluation import Scoreboard, scores_train_only, train_only_scores
from hybrid.intervals import check_levels
from hybrid.members import REGISTRY, expand_period_experts, make_member, parse_member, uses_references
from hybrid.panel import production_frame, write_many_series
from hybrid.records import HorizonResult, build_manifest
from hybrid.sizing import AUTO, choose_context_length, choose_panel_context_length, core_folds, fit_fold_plans
from hybrid.stacking import OOFWindows, baseline_mse, sanity_gate
from hybrid.state import STATE_FORMAT, load_arrays
from kernel.contract import TaskSpec
from kernel.data import DataSource, Series, future_timestamps, load_series, long_frame, source_label
from kernel.distributed import is_main_process
from kernel.errors import HybridInputError
from kernel.parallel import parallel_map
from kernel.protocol import FoldPlan, Scaler
from llm_core.config import ladder_variant
from router.features import backtest_steps, shift_context

logger = logging.getLogger(__name__)


@dataclass
class FitResult:
    run_dir: Path
    manifest: dict[str, Any]


# ----------------------------------------------------------------------------- checks


def check_config(cfg: Config) -> tuple[int, ...]:
    """Every config check that needs no data; returns the sorted horizons."""
    build_config([("config", cfg.to_dict())])  # every key's type and choices, for a Config built in code too
    names = cfg.task.members
    if not names:
        raise HybridInputError("task.members is empty; name at least one member (e.g. --members linear).")
    seen = set()
    for name in names:
        parse_member(name)
        if name in seen:
            raise HybridInputError(f"member {name!r} is listed twice in task.members.")
        seen.add(name)
    for base in cfg.task.period_experts:
        if not REGISTRY.get(base, (None, False))[1]:
            takes = ", ".join(n for n, (_, p) in REGISTRY.items() if p)
            raise HybridInputError(f"task.period_experts: {base!r} takes no period; members that do: {takes}.")
    horizons = tuple(sorted(set(cfg.task.horizons)))
    if not horizons or min(horizons) < 1:
        raise HybridInputError(f"task.horizons must be positive integers; got {list(cfg.task.horizons)}.")
    L = cfg.task.context_length
    if L != AUTO and L < 2:
        raise HybridInputError(f"task.context_length must be auto or an integer of at least 2; got {L!r}.")
    if cfg.stack.max_windows < 0 or cfg.stack.gate_ratio <= 1.0 or cfg.stack.chunk_windows < 1:
        raise HybridInputError("stack.max_windows must be >= 0, stack.gate_ratio > 1 and stack.chunk_windows >= 1.")
    if cfg.runtime.n_jobs == 0:
        raise HybridInputError("runtime.n_jobs must be a positive number of workers or negative (-1: all cores); got 0.")
    check_levels(cfg.task.levels)
    for variant in cfg.core.ladder_variants:
        ladder_variant(cfg.core, variant)
    for key in ("dropout", "attn_dropout"):
        rate = getattr(cfg.core, key)
        if not 0 <= rate < 1:
            raise HybridInputError(f"core.{key} must be at least 0 and below 1; got {rate!r}.")
    return horizons


def prepare_data(cfg: Config, source: DataSource, max_horizon: int, series: Series | None = None) -> Dataset:
    """Load (unless ``series`` is given), split, scale and describe one series (``cfg``'s context length resolved)."""
    return from_series(cfg, load_series(source, cfg.data) if series is None else series, max_horizon)


def task_spec(cfg: Config, data: Dataset, horizon: int) -> TaskSpec:
    return TaskSpec(
        context_length=cfg.task.context_length,
        horizon=horizon,
        freq=data.freq,
        periods=data.periods.dominant,
        seed=cfg.task.seed,
        n_jobs=cfg.runtime.n_jobs if not data.many else 1,  # many series: the members fitted per series run in tasks
        backend=cfg.runtime.backend,
        dask_address=cfg.runtime.dask_address,
        channel_names=tuple(data.columns),
        description=cfg.data.description,
    )


# ----------------------------------------------------------------------------- one horizon


@dataclass
class Collected:
    """One horizon's members, fitted at every stage, and their out-of-fold windows.

    Attributes:
        oof: the sampled historical windows with every member's out-of-fold forecasts.
        members: the members that fitted (the core last); classical: those that read no references.
        baseline: [Co] the better of seasonal naive and the window mean, out of fold.
        channels: the output channels' names.
        steps: the backtest length H' of the router's features.
        seconds: fit seconds per member.
    """

    oof: OOFWindows
    members: list[str]
    classical: list[str]
    baseline: np.ndarray
    channels: list[str]
    steps: int
    seconds: dict[str, float]


Fits = MemberFits | SeriesFits


@dataclass
class HorizonFitter:
    """Fits, combines and scores every member for one horizon, on one series or many."""

    cfg: Config
    data: Dataset
    horizon: int
    plans: list[FoldPlan]
    core_plans: list[FoldPlan]
    names: tuple[str, ...]
    cache: dict[str, Fits]
    bar: Any = None
    cache_horizon: int = 0  # the longest horizon of the run: horizon-agnostic members fit for it (0: this one)
    fits: dict[str, Fits] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def L(self) -> int:  # noqa: N802 - the protocol's letter
        return self.cfg.task.context_length

    def _progress(self, name: str) -> Any:
        def say(stage: str) -> None:
            if self.bar is not None:
                self.bar.set_postfix_str(f"H={self.horizon} {name}: {stage}")
        return say

    def _fit(self, name: str, plans: list[FoldPlan], spec: TaskSpec, starts: np.ndarray, steps: int,
             references: Any = None) -> Fits | None:
        member = make_member(name, self.cfg)
        per_series = member.per_series and self.data.many  # its tasks return one horizon's forecasts, not fits
        agnostic = member.horizon_agnostic and not per_series
        if agnostic and name in self.cache:
            return self.cache[name]
        try:
            if per_series:
                fits: Fits = self._fit_per_series(name, spec, starts, steps)
            else:
                fitted_spec = replace(spec, horizon=self.cache_horizon or self.horizon) if agnostic else spec
                fits = fit_member_stages(name, self.cfg, self.data, fitted_spec, plans, references, self._progress(name))
                if self.data.many:
                    fits.fit = f"one fit per stage across {self.data.n_series} series"
        except HybridInputError:
            raise
        except Exception as exc:  # a failing member never stops the run
            logger.warning("member %s failed at H=%d: %s: %s", name, self.horizon, type(exc).__name__, exc)
            self.failed[name] = f"{type(exc).__name__}: {exc}"
            return None
        if agnostic:
            self.cache[name] = fits
        return fits

    def _fit_per_series(self, name: str, spec: TaskSpec, starts: np.ndarray, steps: int) -> SeriesFits:
        """A local member (ARIMA, ETS) on many series: one task per series (loky, or a Dask cluster)."""
        data, cfg = self.data, self.cfg
        which = data.series_of(starts)
        jobs = [SeriesJob(data.rows(i), data.splits[i], self.plans[i], starts[which == i] - data.offsets[i])
                for i in range(data.n_series)]
        task = functools.partial(series_task, name=name, cfg=cfg, spec=spec, steps=steps)  # spec.n_jobs: 1
        t0 = time.perf_counter()
        res = parallel_map(task, jobs, n_jobs=cfg.runtime.n_jobs, backend=cfg.runtime.backend,
                           dask_address=cfg.runtime.dask_address, desc=f"{name}: {len(jobs)} series")
        fits = SeriesFits.from_tasks(name, res, self.plans[0].n_folds)
        fits.seconds = {"all stages": round(time.perf_counter() - t0, 3)}
        return fits

    def _oof(self, fits: Fits, name: str, oof: OOFWindows, bt_ctx: np.ndarray | None, steps: int,
             refs: np.ndarray | None = None) -> None:
        """A member's out-of-fold forecasts (and backtests: ``bt_ctx``) of the sampled windows, into ``oof``."""
        out, H = self.data.out_ch, self.horizon
        oof.forecasts[name] = fits.oof(oof.starts, oof.context, H, refs)[:, out]
        if bt_ctx is not None:
            oof.backtests[name] = fits.oof_backtest(oof.starts, bt_ctx, H, steps)[:, out]

    def collect(self) -> Collected:
        """Fit every member at every stage; their out-of-fold forecasts of the sampled historical windows."""
        cfg, data, H, L = self.cfg, self.data, self.horizon, self.L
        spec = task_spec(cfg, data, H)
        steps = backtest_steps(H, L, cfg.router.backtest_steps)
        out = data.out_ch
        starts = data.sample_starts(H, cfg.stack.max_windows, self.plans, cfg.stack.folds)
        ctx, tgt = data.windows(starts, L, H)
        oof = OOFWindows(starts, data.fold_of(starts, self.plans), ctx, tgt[:, out], times=data.times(starts))
        bt_ctx = shift_context(ctx, steps)
        seconds: dict[str, float] = {}

        core_names = [n for n in self.names if uses_references(make_member(n, cfg))]
        classical = [n for n in self.names if n not in core_names]
        for name in classical:
            t0 = time.perf_counter()
            fits = self._fit(name, self.plans, spec, starts, steps)
            if fits is not None:
                self.fits[name] = fits
                self._oof(fits, name, oof, bt_ctx, steps)
            seconds[name] = round(time.perf_counter() - t0, 3)
            if self.bar is not None:
                self.bar.update()
        channels = [data.columns[j] for j in out]
        baseline = baseline_mse(oof, spec, out)
        gate = sanity_gate(oof, [n for n in classical if n in self.fits], baseline, cfg.stack.gate_ratio, channels) \
            if any(n in self.fits for n in classical) else None

        for name in core_names:
            t0 = time.perf_counter()
            wanted = tuple(cfg.core.reference_members) if cfg.core.references or cfg.core.classical_text else ()
            usable = tuple(r for r in wanted if r in self.fits and self.fits[r].folds
                           and (gate is None or gate.allowed_everywhere(r)))
            for r in wanted:
                if r not in usable:
                    why = ("it failed or is not a member of this run" if r not in self.fits
                           else "it is fitted series by series: its fold fits stay in their tasks"
                           if not self.fits[r].folds else "the sanity gate set it aside")
                    logger.warning("%s: reference member %s is not used: %s.", name, r, why)
            source = oof_references(self.fits, usable, data.values, L)
            fits = self._fit(name, self.core_plans, spec, starts, steps, source)
            if fits is not None:
                self.fits[name] = fits
                refs = None
                if fits.reference_names:
                    pick = [source.names.index(r) for r in fits.reference_names]
                    refs = source.forecasts(starts, H)[:, :, pick]
                self._oof(fits, name, oof, None, steps, refs)
            seconds[name] = round(time.perf_counter() - t0, 3)
            if self.bar is not None:
                self.bar.update()

        ok = [n for n in self.names if n in self.fits]
        if not ok:
            raise RuntimeError(f"every member failed at horizon {H}; see the warnings above.")
        return Collected(oof, ok, [n for n in ok if n not in core_names], baseline, channels, steps, seconds)

    def run(self) -> HorizonResult:
        cfg, data, H, L = self.cfg, self.data, self.horizon, self.L
        t_start = time.perf_counter()
        got = self.collect()
        oof, ok, channels, seconds = got.oof, got.members, got.channels, got.seconds
        gate = sanity_gate(oof, ok, got.baseline, cfg.stack.gate_ratio, channels)
        t0 = time.perf_counter()
        # the bands' level spread: one series' channels; many series have a level each (none is used)
        offset = None if data.many else data.scaler.mean[data.out_ch] / data.scaler.scale[data.out_ch]
        deployment, oof_combined = deploy(cfg, oof, ok, gate, data.periods.dominant, H, L, got.steps, data.out_ch,
                                          channels, got.classical, offset)
        deployment.references = {n: self.fits[n].reference_names for n in ok if self.fits[n].reference_names}
        seconds["combine"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        test_scores, train_only, window_errors = self.score_test(deployment, channels)
        seconds["test"] = round(time.perf_counter() - t0, 3)
        production = self.production(deployment) if data.many else None
        seconds["total"] = round(time.perf_counter() - t_start, 3)
        oof_scores = {n: oof.scores(n, channels) for n in ok}
        for name in ok:  # only production fits are saved; horizon-agnostic fits serve the next horizons first
            if self.cache.get(name) is not self.fits[name]:
                self.fits[name].release()
        n_oof = len(oof.starts)
        del oof, got  # the out-of-fold forecasts are not kept past this horizon
        return HorizonResult(
            horizon=H, members={n: self.fits[n] for n in ok}, failed=dict(self.failed), oof=oof_scores,
            oof_windows=n_oof, oof_combined=oof_combined, gate=gate, deployment=deployment, test=test_scores,
            test_train_only=train_only, seconds=seconds, channels=channels,
            test_windows=len(data.test_starts(L, H)), window_errors=window_errors, production=production,
        )

    # ------------------------------------------------------------------ test and production
    def _stage_forecasts(self, stage: str, context: np.ndarray, rows: slice, with_core: bool = True
                         ) -> dict[str, np.ndarray]:
        """Every member's ``stage`` forecasts [n, C, H] of ``context``; the core gets its references' own."""
        H = self.horizon
        out: dict[str, np.ndarray] = {}
        for name, fits in self.fits.items():
            if not fits.reads_references:
                out[name] = fits.forecast(stage, context, H, rows=rows)
        for name, fits in self.fits.items():
            if with_core and fits.reads_references:
                refs = (np.stack([out[r] for r in fits.reference_names], axis=2) if fits.reference_names else None)
                out[name] = fits.forecast(stage, context, H, refs, rows)
        return out

    def score_test(self, deployment: Deployment, channels: list[str]
                   ) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]:
        """Scores of every member (refit and train-only), every combination and the bands on the test part, and
        (many series) each test window's MSE by each of them."""
        cfg, data, H, L, out = self.cfg, self.data, self.horizon, self.L, self.data.out_ch
        test_starts = data.test_starts(L, H)
        board, board_train = Scoreboard(channels), Scoreboard(channels)
        errors: dict[str, list[np.ndarray]] = {}
        step = cfg.stack.chunk_windows
        for i in range(0, len(test_starts), step):
            rows = slice(i, i + step)
            ctx, tgt = data.windows(test_starts[rows], L, H)
            tgt = np.asarray(tgt[:, out], dtype=np.float32)
            fc = self._stage_forecasts("refit", ctx, rows)
            fc_out = {n: f[:, out] for n, f in fc.items()}
            bt = {n: self.fits[n].backtest("refit", ctx, H, deployment.steps, rows)[:, out]
                  for n in deployment.backtest_members}
            combos = board.add_deployed(deployment, ctx[:, out], fc_out, bt, tgt)
            for n, f in ({**fc_out, **combos} if data.many else {}).items():  # many series: scores per series
                errors.setdefault(n, []).append(((f.astype(np.float64) - tgt) ** 2).mean(axis=(1, 2)))
            if scores_train_only(cfg, reads_references=False):
                train_fc = self._stage_forecasts("selection", ctx, rows, with_core=scores_train_only(cfg, True))
                for n, f in train_fc.items():
                    board_train.add(n, f[:, out], tgt)
        scores = {n: board.scores(n) for n in board.tallies}
        return (scores, train_only_scores(board_train, scores, self.fits),
                {n: np.concatenate(e) for n, e in errors.items()})

    def production(self, deployment: Deployment) -> pd.DataFrame:
        """The H steps after each series' end by the production fits and the combination (original units)."""
        H, context = self.horizon, self.data.last_contexts(self.L)
        fc = self._stage_forecasts("production", context, slice(None))
        bt = {n: self.fits[n].backtest("production", context, H, deployment.steps) for n in deployment.backtest_members}
        return production_frame(deployment, context, fc, bt, self.data.ids, self.data.scalers, self.data.last,
                                self.data.freq)


# ----------------------------------------------------------------------------- the run


def load_dataset(cfg: Config, data: DataSource, horizons: tuple[int, ...]) -> tuple[Config, Dataset, dict[str, Any]]:
    """The data as one series or many, with ``task.context_length: auto`` resolved; returns the config, the
    dataset and what the length choice tried."""
    frame = long_frame(data, cfg.data)
    if frame is None:
        series = load_series(data, cfg.data)
        cfg, sizing = choose_context_length(cfg, series, horizons)
        return cfg, from_series(cfg, series, max(horizons)), sizing
    lengths = frame.groupby(frame["unique_id"].astype(str), sort=False).size().tolist() if "unique_id" in frame else []
    cfg, sizing = choose_panel_context_length(cfg, lengths or [0], horizons)
    return cfg, from_long(cfg, source_label(data), frame, max(horizons)), sizing


def fold_plans(cfg: Config, data: Dataset, max_horizon: int, core: bool) -> tuple[list[FoldPlan], list[FoldPlan]]:
    """Each series' fold plan, one fold count for all, and the core's (``stack.core_folds``; the same without one)."""
    L, purge = cfg.task.context_length, None if cfg.stack.purge < 0 else cfg.stack.purge
    ends = data.history_ends
    try:
        plans = fit_fold_plans(ends, L, max_horizon, cfg.stack.folds, purge)
        core_plans = fit_fold_plans(ends, L, max_horizon, min(core_folds(cfg), plans[0].n_folds), purge,
                                    "stack.core_folds") if core else plans
    except HybridInputError as exc:
        if not data.many:
            raise
        raise HybridInputError(f"unique_id {data.ids[int(np.argmin(ends))]}: {exc}") from None
    return plans, core_plans


def fit_run(cfg: Config, data: DataSource, run_dir: str | Path | None = None, overwrite: bool = False,
            latest: bool = True) -> FitResult:
    """Cross-fit every member for every horizon, combine, score, and write a complete run directory.

    Args:
        cfg: the full config.
        data: a file path, a built-in dataset name (None: the default dataset) or a DataFrame (see load_series);
            a long file of series that do not share one time axis is many series (:mod:`hybrid.dataset`).
        run_dir: where to write the run; default ``runs/<dataset>-<UTC time>`` (made unique).
        overwrite: replace a run already at ``run_dir`` (otherwise that is refused up front).
        latest: point ``runs/latest`` at the finished run (False for the API's private runs).

    Returns:
        The run directory and its manifest.
    """
    t_start = time.perf_counter()
    artifacts.check_run_dir(run_dir, overwrite)
    horizons = check_config(cfg)
    np.random.seed(cfg.task.seed)
    cfg, run, sizing = load_dataset(cfg, data, horizons)
    L, H_max = cfg.task.context_length, max(horizons)
    names = expand_period_experts(cfg.task.members, cfg.task.period_experts, run.periods.dominant, L)
    has_core = any(uses_references(make_member(n, cfg)) for n in names)
    plans, core_plans = fold_plans(cfg, run, H_max, has_core)
    cache: dict[str, Fits] = {}
    results: dict[int, HorizonResult] = {}
    bar = tqdm(total=len(horizons) * len(names), desc="fit", unit="member", disable=not cfg.runtime.progress)
    for H in horizons:
        results[H] = HorizonFitter(cfg, run, H, plans, core_plans, names, cache, bar, H_max).run()
    bar.close()
    for fits in cache.values():
        fits.release()
    manifest = build_manifest(cfg, run, horizons, plans, core_plans, results)
    if sizing:
        manifest["context_length_auto"] = sizing
    if not is_main_process():  # torchrun: every rank fits (the core trains data-parallel), rank 0 alone writes the run
        return FitResult(Path(), manifest)
    with artifacts.staged_run_dir(run_dir, run.name, overwrite=overwrite, latest=latest) as (stage, final):
        manifest["stored_members"] = artifacts.store_fits(stage, results)
        manifest["state_format"] = STATE_FORMAT  # members and combinations as JSON + .npz (+ safetensors): no pickles
        if run.many:
            write_many_series(stage, run, results, L)
        else:  # the last L rows (original units) let `hybrid forecast` run without the data file
            np.savez(stage / "tail.npz", values=run.series.values[-L:],
                     timestamps=np.asarray(run.series.timestamps[-L:].strftime("%Y-%m-%dT%H:%M:%S"), dtype=str))
        manifest["fit_seconds_total"] = round(time.perf_counter() - t_start, 2)
        artifacts.write_json(stage / artifacts.MANIFEST, manifest)
    logger.info("run written to %s", final)
    return FitResult(final, manifest)


# ----------------------------------------------------------------------------- forecast


@dataclass
class ForecastResult:
    """A forecast of the H steps after the end of the data.

    Attributes:
        frame: timestamp column, one column per output channel and its
            interval columns ``<channel>-lo-<level>`` / ``-hi-`` (original units).
        members: member name -> forecast [C_out, H] in original units.
        weights: member name -> weight in the combined forecast (mean over
            the output channels; see ``channel_weights``).
        horizon: H.
        fitted_horizon: the fitted horizon that served it.
        history: the context window (original units), output channels.
        channel_weights: member name -> weight per output channel [C_out].
        mode: what ``hybrid`` is (router.mode at fit time).
        fallback: the static mode used instead of the router, or None.
        bands: level -> (lo, hi) [C_out, H] in original units.
        details: JSON-ready explanation for the vote report.
    """

    frame: pd.DataFrame
    members: dict[str, np.ndarray]
    weights: dict[str, float]
    horizon: int
    fitted_horizon: int
    history: pd.DataFrame
    channel_weights: dict[str, np.ndarray] = field(default_factory=dict)
    mode: str = ""
    fallback: str | None = None
    bands: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def _context_rows(run_dir: Path, manifest: dict[str, Any], data: DataSource
                  ) -> tuple[np.ndarray, pd.DatetimeIndex, str]:
    """Last L rows (original units) and their timestamps, from the run or new data."""
    L = manifest["context_length"]
    if data is None:
        tail = load_arrays(run_dir / "tail.npz")
        return tail["values"], pd.DatetimeIndex(pd.to_datetime(tail["timestamps"].tolist())), manifest["freq"]
    cfg = config_from_dict(manifest["config"])
    series = load_series(data, replace(cfg.data, name=manifest["dataset"]))
    if list(series.columns) != manifest["columns"]:
        raise HybridInputError(
            f"--data {source_label(data)} has columns {', '.join(series.columns)}, but the run was fitted on "
            f"{', '.join(manifest['columns'])}; pass data with the same columns."
        )
    if series.n_rows < L:
        raise HybridInputError(
            f"--data {source_label(data)} has {series.n_rows} rows; forecasting needs the last {L} (context_length)."
        )
    return series.values[-L:], series.timestamps[-L:], series.freq


def forecast_run(run_dir: Path, horizon: int | None = None, data: DataSource = None) -> ForecastResult:
    """Forecast the ``horizon`` steps after the end of the data with a fitted run."""
    manifest = artifacts.read_manifest(run_dir)
    if is_panel(manifest):
        raise HybridInputError(f"{run_dir} is a many-series run; its forecasts are in {run_dir / 'forecast.csv'} "
                               "(hybrid forecast prints them).")
    artifacts.check_state_format(run_dir, manifest)
    fitted_h = choose_horizon(horizon, manifest["horizons"])
    horizon = horizon or fitted_h
    values, stamps, freq = _context_rows(run_dir, manifest, data)
    scaler = Scaler.from_dict(manifest["scaler"])
    context = scaler.transform(values).T[None]  # [1, C, L]
    members, deployment = artifacts.load_fits(run_dir, manifest, fitted_h)
    columns = manifest["columns"]
    out_idx = [columns.index(c) for c in manifest["output_columns"]]
    fc, bt_all = forecast_deployed(deployment, context, lambda n, c, r: predict_many(members[n], c, fitted_h, r))
    fc_out = {n: f[:, out_idx] for n, f in fc.items()}
    bt = {n: b[:, out_idx] for n, b in bt_all.items()}
    X, W, combined = deployment.forecast(context[:, out_idx], fc_out, bt)  # [1, Co, F], [1, Co, M], [1, Co, H]
    bands = deployment.band_sets(context[:, out_idx], fc_out, combined, members=False).get(COMBINED, {})
    sub = Scaler(scaler.mean[out_idx], scaler.scale[out_idx])

    def to_original(f: np.ndarray) -> np.ndarray:
        """[1, Co, H] scaled -> [Co, horizon] original units."""
        return sub.inverse(f[0, :, :horizon].T.astype(np.float64)).T

    future = future_timestamps(stamps[-1], horizon, freq)
    cols = manifest["output_columns"]
    comb = to_original(combined)
    frame: dict[str, Any] = {"timestamp": future}
    original_bands = {lv: (to_original(lo), to_original(hi)) for lv, (lo, hi) in bands.items()}
    for i, col in enumerate(cols):
        frame[col] = comb[i]
        for lv, (lo, hi) in original_bands.items():
            frame[f"{col}-lo-{lv:g}"] = lo[i]
            frame[f"{col}-hi-{lv:g}"] = hi[i]
    history = pd.DataFrame(values[:, out_idx], index=stamps, columns=cols)
    channel_weights = {n: W[0, :, k] for k, n in enumerate(deployment.members)}
    details = deployment.explain(manifest, X, cols, members, context, fc)
    return ForecastResult(
        frame=pd.DataFrame(frame),
        members={n: to_original(f) for n, f in fc_out.items()},
        weights={n: float(w.mean()) for n, w in channel_weights.items()},
        horizon=horizon,
        fitted_horizon=fitted_h,
        history=history,
        channel_weights=channel_weights,
        mode=deployment.mode,
        fallback=deployment.fallback,
        bands=original_bands,
        details=details,
    )
