"""Fitting the router on out-of-fold windows: leave-one-fold-out choices and the deployment check.

Everything here learns from cross-fitted forecasts: each window's member
forecasts come from fits that never saw its target, and the windows carry the
fold they belong to. Every choice is judged by leave-one-fold-out (LOFO): fit
on the other folds, score on the left-out one, pool the scores.

- The static combiners' weights (equal, inverse error, best single, top-k per
  output channel) come from the members' OOF errors; their LOFO scores say
  which one is the fallback.
- ``vote``: the L2 penalty and a shrinkage of its weights toward equal
  weights, ``w = (1 - lambda) w_router + lambda w_equal``, are chosen
  together by LOFO. ``select``: its L2 penalty by LOFO. ``rules``: no choice.
- A learned mode is deployed only if its LOFO MSE beats equal weights, the
  best single member and the best static combiner, pooled over the folds, by
  at least ``min_gain`` (relative): ``check: pooled``, the default. With
  ``check: one_se`` it must also win on more than ``min_fold_wins`` of the
  folds and by at least ``min_t`` standard errors of its per-fold gains (the
  one-standard-error rule, the default until replaying both rules out of
  fold, ``benchmarks/deployment_rule.py``, found the pooled rule's nested
  out-of-fold MSE lower in most runs). Otherwise it falls back, visibly, to
  the static combiner with the lowest LOFO MSE.
- Finally every mode is refitted on all OOF windows with the chosen settings.

References:
    Montero-Manso, Athanasopoulos, Hyndman & Talagala, "FFORMA: Feature-based
    forecast model averaging", IJF 2020; Wolpert, "Stacked generalization",
    Neural Networks 1992.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.config import RouterConfig
from router.models import (
    ROUTER_MODES,
    Z_CLIP,
    RuleTree,
    SoftmaxLinear,
    combined_mse,
    masked_equal,
    member_errors,
)
from router.router import Router
from router.static import STATIC_MODES, static_weights

logger = logging.getLogger(__name__)

OBJECTIVE = {"vote": "combined", "select": "fforma"}


@dataclass
class StackSet:
    """What the router learns from: out-of-fold windows of train + validation, output channels only.

    Attributes:
        X: raw features [N, Co, F].
        G, b, c: per-sample moments of the members' OOF forecasts and the
            target ([N, Co, M, M], [N, Co, M], [N, Co]; see ``router.models.moments``).
        folds: the fold of each window [N].
        mask: [Co, M] bool, the members each output channel may use (the sanity gate).
    """

    X: np.ndarray
    G: np.ndarray
    b: np.ndarray
    c: np.ndarray
    folds: np.ndarray
    mask: np.ndarray

    @property
    def fold_ids(self) -> list[int]:
        return sorted(int(f) for f in np.unique(self.folds))

    def member_errors(self) -> np.ndarray:
        """Each member's MSE per window and channel [N, Co, M]."""
        return member_errors(self.G, self.b, self.c)

    def channel_errors(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Mean member error per output channel over the windows ``rows`` -> [Co, M]."""
        return self.member_errors()[rows].mean(axis=0)


def _flat(a: np.ndarray) -> np.ndarray:
    """[N, Co, ...] -> [N * Co, ...]."""
    return a.reshape(-1, *a.shape[2:])


def _mask_samples(data: StackSet, rows: np.ndarray) -> np.ndarray:
    """The gate per sample of the windows ``rows`` -> [len(rows) * Co, M]."""
    return _flat(np.broadcast_to(data.mask, (len(rows), *data.mask.shape)))


def _standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = X.std(0)
    return X.mean(0), np.where(std > 1e-8, std, 1.0)


def _fit_mode(mode: str, data: StackSet, rows: np.ndarray, l2s: tuple[float, ...], cfg: RouterConfig, seed: int
              ) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Fit one mode on the windows ``rows`` for each L2 in ``l2s`` (each from equal weights: the loss is not
    convex, and a warm start along the L2 path ended in worse optima); returns the models and the standardisation."""
    X = _flat(data.X[rows])
    mean, std = _standardiser(X)
    mask = _mask_samples(data, rows)
    G, b, c = _flat(data.G[rows]), _flat(data.b[rows]), _flat(data.c[rows])
    if mode == "rules":
        return [RuleTree(cfg.tree_depth, cfg.tree_min_leaf, seed).fit(X, member_errors(G, b, c), mask)], mean, std
    Z = np.clip((X - mean) / std, -Z_CLIP, Z_CLIP)
    return [SoftmaxLinear(OBJECTIVE[mode], l2, cfg.max_iter).fit(Z, G, b, c, mask) for l2 in l2s], mean, std


def _apply(mode: str, model: Any, mean: np.ndarray, std: np.ndarray, data: StackSet, rows: np.ndarray
           ) -> np.ndarray:
    """Raw weights of ``mode`` on the windows ``rows`` -> [len(rows), Co, M]."""
    X = data.X[rows]
    mask = np.broadcast_to(data.mask, X.shape[:-1] + (data.mask.shape[1],))
    M = data.mask.shape[1]
    if mode == "rules":
        return np.eye(M)[model.choice(X, mask)]
    w = model.weights(np.clip((X - mean) / std, -Z_CLIP, Z_CLIP), mask)
    return np.eye(M)[np.argmax(w, axis=-1)] if mode == "select" else w


def _scores(w: np.ndarray, data: StackSet, rows: np.ndarray) -> np.ndarray:
    """MSE per window and channel of weights w [n, Co, M] on the windows ``rows`` -> [n, Co]."""
    return combined_mse(w, data.G[rows], data.b[rows], data.c[rows])


def lofo_static(data: StackSet, mode: str, tolerance: float) -> np.ndarray:
    """Leave-one-fold-out weights [N, Co, M] of a static combiner (weights from the other folds' errors)."""
    out = np.empty(data.b.shape)
    err = data.member_errors()
    for f in data.fold_ids:
        hold = data.folds == f
        out[hold] = static_weights(err[~hold].mean(0), mode, data.mask, tolerance)
    return out


def lofo_learned(data: StackSet, mode: str, l2s: tuple[float, ...], cfg: RouterConfig, seed: int
                 ) -> list[np.ndarray]:
    """Leave-one-fold-out raw weights [N, Co, M] of a learned mode, one array per L2 of ``l2s``."""
    out = [np.empty(data.b.shape) for _ in l2s]
    for f in data.fold_ids:
        hold = np.flatnonzero(data.folds == f)
        fit = np.flatnonzero(data.folds != f)
        models, mean, std = _fit_mode(mode, data, fit, l2s, cfg, seed)
        for k, model in enumerate(models):
            out[k][hold] = _apply(mode, model, mean, std, data, hold)
    return out


def _by_fold(per_sample: np.ndarray, folds: np.ndarray) -> dict[int, float]:
    return {int(f): float(per_sample[folds == f].mean()) for f in np.unique(folds)}


def deployment_check(score: float, baseline: float, gain: np.ndarray, cfg: RouterConfig
                     ) -> tuple[bool, bool, int, float]:
    """Whether a learned mode is deployed (the module docstring's rule).

    Args:
        score: its pooled LOFO MSE; baseline: the lowest pooled LOFO MSE of
            equal weights, the best single member and the best static combiner.
        gain: per fold, the best of those three's MSE minus the mode's.
        cfg: ``min_gain``, ``check`` and, for ``one_se``, ``min_fold_wins`` and ``min_t``.

    Returns:
        passed, whether the pooled gain alone passes, the folds won and the
        t-statistic of the per-fold gains.
    """
    wins = int((gain > 0).sum())
    if gain.size > 1:
        se = float(gain.std(ddof=1) / np.sqrt(gain.size))
        t_stat = float(gain.mean() / se) if se > 0 else (np.inf if gain.mean() > 0 else 0.0)
    else:
        t_stat = 0.0  # one fold or none: no spread to judge the gain by
    pooled_ok = score < (1.0 - cfg.min_gain) * baseline
    folds_ok = cfg.check == "pooled" or (wins > cfg.min_fold_wins * len(gain) and t_stat >= cfg.min_t)
    return bool(pooled_ok and folds_ok), bool(pooled_ok), wins, t_stat


def fit_router(data: StackSet, members: list[str], names: list[str], backtest_members: list[str],
               periods: tuple[int, ...], horizon: int, context_length: int, steps: int, cfg: RouterConfig,
               seed: int = 0, tolerance: float = 0.05) -> tuple[Router, dict[str, np.ndarray]]:
    """Fit every mode on the OOF windows, choose its settings and decide its deployment by LOFO.

    Args:
        data: the out-of-fold windows (see :class:`StackSet`); at least two folds.
        members: member order; names: feature names; backtest_members: members
            with a backtest feature.
        periods, horizon, context_length, steps: what the features were made with.
        cfg: the ``router`` section.
        seed: the run's seed.
        tolerance: the ``top_k`` combiner's relative margin.

    Returns:
        A fitted :class:`Router` whose ``check_`` records every LOFO score,
        and the LOFO weights [N, Co, M] of every mode, static and learned (as
        each mode is used: the vote shrunk, select and rules one-hot): the
        out-of-fold forecasts of every combination, for its error bands.
    """
    if len(members) < 2:
        raise ValueError(f"the router needs at least two members; got {members}.")
    if len(data.fold_ids) < 2:
        raise ValueError("the router needs out-of-fold windows from at least two folds.")
    folds = data.folds
    n_folds = len(data.fold_ids)
    all_rows = np.arange(len(folds))
    weights = {mode: lofo_static(data, mode, tolerance) for mode in STATIC_MODES}
    static_lofo = {mode: _scores(w, data, all_rows) for mode, w in weights.items()}
    static_pooled = {mode: float(v.mean()) for mode, v in static_lofo.items()}
    fallback = min(static_pooled, key=static_pooled.__getitem__)
    eq, best = static_lofo["equal"], static_lofo["best_single"]

    settings: dict[str, dict[str, float]] = {}
    lofo: dict[str, np.ndarray] = {}
    eq_w = masked_equal(np.broadcast_to(data.mask, data.b.shape))
    for mode in ROUTER_MODES:
        if mode == "rules":
            settings[mode] = {}
            weights[mode] = lofo_learned(data, mode, (0.0,), cfg, seed)[0]
            lofo[mode] = _scores(weights[mode], data, all_rows)
            continue
        best_score, chosen = np.inf, {}
        grid = tuple(cfg.shrinkage) if mode == "vote" else (0.0,)
        l2s = tuple(cfg.l2)
        for l2, raw in zip(l2s, lofo_learned(data, mode, l2s, cfg, seed), strict=True):
            for lam in grid:
                w = (1.0 - lam) * raw + lam * eq_w
                per = _scores(w, data, all_rows)
                if per.mean() < best_score:
                    best_score, chosen = float(per.mean()), {"l2": float(l2), "shrink": float(lam)}
                    lofo[mode], weights[mode] = per, w
        settings[mode] = chosen

    check: dict[str, dict[str, Any]] = {}
    fallbacks: dict[str, str | None] = {}
    static_f = {m: _by_fold(v, folds) for m, v in static_lofo.items()}
    eq_f, best_f, fb_f = static_f["equal"], static_f["best_single"], static_f[fallback]
    baseline = min(float(eq.mean()), float(best.mean()), static_pooled[fallback])
    for mode in ROUTER_MODES:
        score = float(lofo[mode].mean())
        per_fold = _by_fold(lofo[mode], folds)
        # the gain per fold over the best of equal weights, the best single member and the fallback
        gain = np.array([min(eq_f[f], best_f[f], fb_f[f]) - per_fold[f] for f in per_fold])
        passed, pooled_ok, wins, t_stat = deployment_check(score, baseline, gain, cfg)
        check[mode] = {
            "passed": passed,
            "oof_mse": score,
            "oof_mse_equal": float(eq.mean()),
            "oof_mse_best_single": float(best.mean()),
            "oof_mse_fallback": static_pooled[fallback],
            "folds_won": wins,
            "folds": n_folds,
            "gain_t": t_stat,
            "by_fold": {str(f): v for f, v in per_fold.items()},
            "by_fold_equal": {str(f): v for f, v in eq_f.items()},
            "by_fold_best_single": {str(f): v for f, v in best_f.items()},
            "min_gain": cfg.min_gain,
            "check": cfg.check,
            "min_t": cfg.min_t,
            "min_fold_wins": cfg.min_fold_wins,
            "settings": settings[mode],
            "fallback": None if passed else fallback,
        }
        fallbacks[mode] = None if passed else fallback
        if not passed:
            why = ("pooled" if not pooled_ok else f"on {wins} of {n_folds} folds only"
                   if wins <= cfg.min_fold_wins * n_folds else f"by {t_stat:.2f} standard errors only")
            logger.warning(
                "router %s at H=%d does not beat equal weights (%.4f), the best single member (%.4f) and %s (%.4f) "
                "out of fold (%s: %.4f); falling back to %s",
                mode, horizon, float(eq.mean()), float(best.mean()), fallback, static_pooled[fallback], why, score,
                fallback)
    check["static"] = {"oof_mse": static_pooled, "fallback": fallback,
                       "by_fold": {m: {str(f): x for f, x in v.items()} for m, v in static_f.items()},
                       "fold_windows": {str(int(f)): int((folds == f).sum()) for f in np.unique(folds)}}

    models: dict[str, Any] = {}
    mean = std = None
    for mode in ROUTER_MODES:
        fitted, mean, std = _fit_mode(mode, data, all_rows, (settings[mode].get("l2", 0.0),), cfg, seed)
        models[mode] = fitted[0]
    err = data.channel_errors()
    static = {mode: static_weights(err, mode, data.mask, tolerance) for mode in STATIC_MODES}
    assert mean is not None and std is not None
    router = Router(members=list(members), periods=tuple(periods), horizon=horizon, context_length=context_length,
                  steps=steps, names=list(names), backtest_members=list(backtest_members), mask=data.mask.copy(),
                  mean_=mean, std_=std, models_=models,
                  shrink_={mode: s.get("shrink", 0.0) for mode, s in settings.items()}, static_=static,
                  check_=check, fallback_=fallbacks)
    return router, weights
