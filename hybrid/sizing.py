"""Sizing the task to the series: the context length and the number of folds a series allows.

A short series (144 monthly points) cannot hold a context of 512 steps, and
five cross-fitting folds over a short history leave some fold without a
training window. Rather than a chain of errors, a fit picks what fits:

- ``task.context_length: auto`` (the default) takes the candidates 512, 336,
  96, two to four times the dominant period found on the training rows and
  two to four times the longest horizon (down to half of it), keeps those the
  split and the folds allow (with at least ``MIN_TRAIN_WINDOWS`` training
  windows; those with two cycles of the period when any do), and chooses
  among them by the validation MSE of the linear member (a ridge map, fitted
  in a second per candidate). One log line says which, and the manifest keeps
  every candidate's score.
- :func:`fit_fold_plan` lowers ``stack.folds`` (or ``stack.core_folds``) to
  the most folds that leave every fold a training window, with one warning.

The training rows do not depend on the context length (the split's borders
do not; only the validation and test parts' look-back does), so periods found
on them are the periods the fit will find.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from baselines.linear import RidgeLinear
from hybrid.config import Config
from kernel.contract import Segment, TaskSpec
from kernel.data import Series, resolve_split_kind
from kernel.errors import HybridInputError
from kernel.periods import detect_periods
from kernel.protocol import FoldPlan, Scaler, make_fold_plan, make_split

logger = logging.getLogger(__name__)

AUTO = "auto"
FIXED_CANDIDATES = (512, 336, 96)
MIN_TRAIN_WINDOWS = 8  # a context length must leave at least this many training windows
MIN_CONTEXT = 4
MAX_FOLDS = 10  # fold counts tried when the configured one leaves a fold without a training window


def _fits(n_rows: int, L: int, H: int, kind: str, freq: str, ratios: tuple[float, ...], folds: int) -> bool:
    """Whether a context L and horizon H leave every part a window, some fold count near ``folds`` a training
    window in every fold, and ``MIN_TRAIN_WINDOWS`` training windows."""
    try:
        split = make_split(n_rows, L, H, kind=kind, freq=freq, ratios=ratios)
    except HybridInputError:
        return False
    enough = split.n_windows("train", L, H) >= MIN_TRAIN_WINDOWS
    return enough and _first_plans([split.val_end], L, H, folds, None) is not None


def _fold_counts(folds: int) -> list[int]:
    """``folds`` first, then the counts nearest to it (fewer first) within 2 .. MAX_FOLDS."""
    out = [folds]
    for d in range(1, MAX_FOLDS):
        out += [k for k in (folds - d, folds + d) if 2 <= k <= MAX_FOLDS]
    return out


def _first_plans(history_ends: Sequence[int], L: int, H: int, folds: int, purge: int | None
                 ) -> list[FoldPlan] | None:
    """One plan per history with ``folds`` folds or the nearest count that leaves every fold of every history a
    training window (one count for all); None when no count does."""
    for k in _fold_counts(folds):
        try:
            return [make_fold_plan(end, L, H, k, purge) for end in history_ends]
        except HybridInputError:
            continue
    return None


def candidates(n_rows: int, horizon: int, periods: tuple[int, ...], kind: str, freq: str,
               ratios: tuple[float, ...], folds: int = 5) -> list[int]:
    """Context lengths worth trying that the series allows, longest first."""
    wanted = set(FIXED_CANDIDATES)
    for p in periods[:1]:
        wanted |= {k * p for k in (4, 3, 2) if p >= 2}
    wanted |= {k * horizon for k in (4, 3, 2)}
    wanted |= {max(MIN_CONTEXT, k * horizon // 2) for k in (3, 2, 1)}  # very short series: down to H / 2
    found = sorted((L for L in wanted if L >= MIN_CONTEXT and _fits(n_rows, L, horizon, kind, freq, ratios, folds)),
                   reverse=True)
    two_cycles = [L for L in found if periods and L >= 2 * periods[0]]
    return two_cycles or found  # seasonal members need two cycles of the period in a window, when the series allows


def longest_horizon(n_rows: int, kind: str, freq: str, ratios: tuple[float, ...], folds: int = 5) -> int:
    """The longest horizon some candidate context length allows (0: none)."""
    best = 0
    for H in range(1, n_rows):
        if not candidates(n_rows, H, (), kind, freq, ratios, folds):
            break
        best = H
    return best


def choose_context_length(cfg: Config, series: Series, horizons: tuple[int, ...]) -> tuple[Config, dict[str, Any]]:
    """Resolve ``task.context_length: auto`` (see the module docstring); returns the config and what was tried.

    Raises:
        HybridInputError: when no context length fits the longest horizon; names the longest that fits.
    """
    if cfg.task.context_length != AUTO:
        if isinstance(cfg.task.context_length, str):
            raise HybridInputError(
                f"task.context_length must be a positive integer or auto; got {cfg.task.context_length!r}.")
        return cfg, {}
    H = max(horizons)
    kind = resolve_split_kind(series.name, cfg.data.split)
    ratios = tuple(cfg.data.split_ratios)
    probe = make_split(series.n_rows, 1, 1, kind=kind, freq=series.freq, ratios=ratios)
    train = series.values[probe.train_start:probe.train_end]
    scaler = Scaler.fit(train)
    periods = detect_periods(scaler.transform(train), k=cfg.task.n_periods).dominant
    found = candidates(series.n_rows, H, periods, kind, series.freq, ratios, cfg.stack.folds)
    if not found:
        longest = longest_horizon(series.n_rows, kind, series.freq, ratios, cfg.stack.folds)
        fix = (f"use --horizon {longest} or less" if longest else "use a longer series")
        raise HybridInputError(
            f"series too short: {series.n_rows} rows leave no context length for horizon {H} with a "
            f"{'/'.join(str(round(r * 100)) for r in ratios)} split and cross-fitting folds; {fix}.")
    scores = {L: _validation_mse(series, scaler, L, H, kind, ratios, cfg) for L in found} if len(found) > 1 else {}
    L = min(scores, key=scores.__getitem__) if scores else found[0]
    if scores:
        logger.info("context_length auto: %d (validation MSE of the linear member: %s)", L,
                    ", ".join(f"{k}: {v:.4g}" for k, v in scores.items()))
    else:
        logger.info("context_length auto: %d, the only candidate this series allows", L)
    info = {"chosen": L, "candidates": found, "validation_mse": {str(k): v for k, v in scores.items()},
            "periods": list(periods)}
    return replace(cfg, task=replace(cfg.task, context_length=L)), info


def choose_panel_context_length(cfg: Config, lengths: list[int], horizons: tuple[int, ...]
                                ) -> tuple[Config, dict[str, Any]]:
    """``task.context_length: auto`` for many series: the longest candidate every series allows (by its length)."""
    if cfg.task.context_length != AUTO:
        return cfg, {}
    H, shortest = max(horizons), min(lengths)
    ratios = tuple(cfg.data.split_ratios)
    found = candidates(shortest, H, (), "ratio", "D", ratios, cfg.stack.folds)
    if not found:
        longest = longest_horizon(shortest, "ratio", "D", ratios, cfg.stack.folds)
        raise HybridInputError(
            f"the shortest series has {shortest} rows, which leave no context length for horizon {H}; "
            + (f"use --horizon {longest} or less, or drop the shortest series." if longest else "drop it."))
    logger.info("context_length auto: %d, the longest candidate the shortest series (%d rows) allows", found[0],
                shortest)
    info = {"chosen": found[0], "candidates": found, "shortest_series": shortest}
    return replace(cfg, task=replace(cfg.task, context_length=found[0])), info


def core_folds(cfg: Config) -> int:
    """The core's fold count: ``stack.core_folds``, or auto (2 on CPU, ``stack.folds`` on a GPU)."""
    if cfg.stack.core_folds > 0:
        return cfg.stack.core_folds
    if cfg.stack.core_folds == 0 or cfg.stack.core_folds < -1:
        raise HybridInputError(f"stack.core_folds must be -1 (auto) or at least 2; got {cfg.stack.core_folds}.")
    import importlib.util

    on_gpu = False
    if cfg.core.device != "cpu" and importlib.util.find_spec("torch") is not None:
        import torch

        on_gpu = torch.cuda.is_available()
    return cfg.stack.folds if on_gpu else 2


def _validation_mse(series: Series, scaler: Scaler, L: int, H: int, kind: str, ratios: tuple[float, ...],
                    cfg: Config) -> float:
    """Validation MSE (scaled units) of the linear member with context L, fitted on the training part."""
    split = make_split(series.n_rows, L, H, kind=kind, freq=series.freq, ratios=ratios)
    values = scaler.transform(series.values)
    spec = TaskSpec(context_length=L, horizon=H, freq=series.freq, periods=(), seed=cfg.task.seed)
    member = RidgeLinear(normalization=cfg.linear.normalization, alphas=cfg.linear.alphas)
    val = Segment(values[split.val_start:split.val_end], split.val_start)
    member.fit([Segment(values[split.train_start:split.train_end], 0)], val, spec)
    return float(min(member.val_mse_by_alpha_.values()))


def fit_fold_plans(history_ends: Sequence[int], context_length: int, max_horizon: int, folds: int,
                   purge: int | None, key: str = "stack.folds") -> list[FoldPlan]:
    """One fold plan per series, all with ``folds`` folds or the nearest count that leaves every fold of every
    series a training window (fold k of many series is fold k of each, so the count is shared).

    On a short history a fold's hole (its rows, its targets and the purge gap) can leave no segment long
    enough for a training window on either side; smaller folds (more of them) leave more, larger ones less.

    Raises:
        HybridInputError: when no count from 2 to ``MAX_FOLDS`` fits; the message names ``key``.
    """
    if folds < 2:
        raise HybridInputError(f"{key} must be at least 2; got {folds}.")
    shortest = min(history_ends)
    plans = _first_plans(history_ends, context_length, max_horizon, folds, purge)
    if plans is not None:
        if plans[0].n_folds != folds:
            logger.warning("%s: %d folds leave a fold without a training window on a history of %d rows "
                           "(context_length %d, horizon %d); using %d.", key, folds, shortest, context_length,
                           max_horizon, plans[0].n_folds)
        return plans
    raise HybridInputError(
        f"cross-fitting: no count of folds ({key}, 2 to {MAX_FOLDS}) leaves every fold a training window on a "
        f"history of {shortest} rows with context_length {context_length} + horizon {max_horizon}; use a "
        "shorter --context-length (or task.context_length: auto) or --horizon"
        + (", or a smaller stack.purge" if purge else "") + ".")


def fit_fold_plan(history_end: int, context_length: int, max_horizon: int, folds: int, purge: int | None,
                  key: str = "stack.folds") -> FoldPlan:
    """:func:`fit_fold_plans` for one series."""
    return fit_fold_plans([history_end], context_length, max_horizon, folds, purge, key)[0]
