"""Fitting the combination on out-of-fold windows: leave-one-fold-out choices and the deployment decision.

Everything here learns from cross-fitted forecasts: each window's member
forecasts come from fits that never saw its target, and the windows carry the
fold they belong to. Every choice is judged by leave-one-fold-out (LOFO): learn
on the other folds, score on the left-out one, pool the scores. Within each LOFO
step everything is learned from the other folds alone, the sound set included.

- **Sound members** (``router.static.sound_mask``): on each output channel only
  the members allowed by the sanity gate and within ``sound_ratio`` x the best
  member's out-of-fold MSE take part in any combination, static or learned.
- The static combiners (equal, inverse error, best single, top-k, greedy
  selection, median; per output channel) come from the sound members'
  out-of-fold errors.
- ``vote``: the L2 penalty and a shrinkage of its weights toward the best
  weighted static combiner, ``w = (1 - lambda) w_router + lambda w_static``,
  are chosen together by LOFO. ``select``: its L2 penalty by LOFO. ``rules``: no choice.
  Only the configured ``router.mode`` searches the L2 grid; the other learned
  modes, fitted for the report, take its middle value.
- The decision (``check``). ``shrinkage`` (the default): the vote is deployed as
  learned; its shrinkage toward the best static combiner, chosen leave-one-fold-out
  (and able to make it nearly that combiner), is its check; ``select`` and
  ``rules`` are checked as ``pooled``. ``pooled`` deploys a learned mode when its
  pooled LOFO MSE beats equal weights, the best single member and the best static
  combiner by ``min_gain``; ``one_se`` also asks it to win most folds by ``min_t``
  standard errors; ``robust`` starts from ``router.robust`` (a static combiner) and
  leaves it only for a gain of ``min_gain`` and ``min_t`` standard errors. When a
  learned mode is not deployed, the run falls back, visibly, to the static
  combination the same rule picks. The default was chosen on nested out-of-fold
  replays of 24 gallery cases (BENCHMARKS.md, "Robust combination"): it had the
  lowest geometric mean of hybrid / best member (0.988) and the lowest worst case
  (1.028) of seven candidates.
- Finally every mode is refitted on all OOF windows with the chosen settings.

References:
    Montero-Manso, Athanasopoulos, Hyndman & Talagala, "FFORMA: Feature-based
    forecast model averaging", IJF 2020; Wolpert, "Stacked generalization",
    Neural Networks 1992; Claeskens, Magnus, Vasnev & Wang, "The forecast
    combination puzzle", IJF 2016.
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
    member_errors,
)
from router.router import Router
from router.static import STATIC_MODES, WEIGHTED_MODES, median_forecast, sound_mask, static_weights

logger = logging.getLogger(__name__)

OBJECTIVE = {"vote": "combined", "select": "fforma"}


@dataclass
class StackSet:
    """What the combination learns from: out-of-fold windows of train + validation, output channels only.

    Attributes:
        X: raw features [N, Co, F].
        G, b, c: per-sample moments of the members' OOF forecasts and the
            target ([N, Co, M, M], [N, Co, M], [N, Co]; see ``router.models.moments``).
        folds: the fold of each window [N].
        mask: [Co, M] bool, the members each output channel may use (the sanity gate).
        forecasts: the members' OOF forecasts, M arrays [N, Co, H] (the median needs them), or None.
        target: [N, Co, H] (with ``forecasts``), or None.
    """

    X: np.ndarray
    G: np.ndarray
    b: np.ndarray
    c: np.ndarray
    folds: np.ndarray
    mask: np.ndarray
    forecasts: list[np.ndarray] | None = None
    target: np.ndarray | None = None

    @property
    def fold_ids(self) -> list[int]:
        return sorted(int(f) for f in np.unique(self.folds))

    def member_errors(self) -> np.ndarray:
        """Each member's MSE per window and channel [N, Co, M]."""
        return member_errors(self.G, self.b, self.c)

    def channel_errors(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Mean member error per output channel over the windows ``rows`` -> [Co, M]."""
        return self.member_errors()[rows].mean(axis=0)

    def channel_moments(self, rows: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean moments per output channel over the windows ``rows``: G [Co, M, M], b [Co, M], c [Co]."""
        return self.G[rows].mean(0), self.b[rows].mean(0), self.c[rows].mean(0)

    def median_mse(self, rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """MSE per window and channel [n, Co] of the median of the members ``mask`` [Co, M] allows."""
        if self.forecasts is None or self.target is None:
            raise ValueError("the median combiner needs the members' forecasts in the StackSet.")
        med = median_forecast([f[rows] for f in self.forecasts], mask)
        return np.square(med.astype(np.float64) - self.target[rows]).mean(-1)


def _flat(a: np.ndarray) -> np.ndarray:
    """[N, Co, ...] -> [N * Co, ...]."""
    return a.reshape(-1, *a.shape[2:])


def _standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = X.std(0)
    return X.mean(0), np.where(std > 1e-8, std, 1.0)


def _fit_mode(mode: str, data: StackSet, rows: np.ndarray, mask: np.ndarray, l2s: tuple[float, ...],
              cfg: RouterConfig, seed: int) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Fit one mode on the windows ``rows`` (members ``mask`` [Co, M]) for each L2 in ``l2s`` (each from equal
    weights: the loss is not convex, and a warm start along the L2 path ended in worse optima); returns the models
    and the standardisation."""
    X = _flat(data.X[rows])
    mean, std = _standardiser(X)
    sample_mask = _flat(np.broadcast_to(mask, (len(rows), *mask.shape)))
    G, b, c = _flat(data.G[rows]), _flat(data.b[rows]), _flat(data.c[rows])
    if 0 < cfg.max_samples < X.shape[0]:  # a seeded sample of (window, channel) pairs bounds the fit time
        keep = np.sort(np.random.default_rng(seed).choice(X.shape[0], cfg.max_samples, replace=False))
        X, sample_mask, G, b, c = X[keep], sample_mask[keep], G[keep], b[keep], c[keep]
    if mode == "rules":
        return [RuleTree(cfg.tree_depth, cfg.tree_min_leaf, seed).fit(X, member_errors(G, b, c), sample_mask)], mean, std
    Z = np.clip((X - mean) / std, -Z_CLIP, Z_CLIP)
    return [SoftmaxLinear(OBJECTIVE[mode], l2, cfg.max_iter).fit(Z, G, b, c, sample_mask) for l2 in l2s], mean, std


def _apply(mode: str, model: Any, mean: np.ndarray, std: np.ndarray, data: StackSet, rows: np.ndarray,
           mask: np.ndarray) -> np.ndarray:
    """Raw weights of ``mode`` on the windows ``rows`` (members ``mask`` [Co, M]) -> [len(rows), Co, M]."""
    X = data.X[rows]
    sample_mask = np.broadcast_to(mask, X.shape[:-1] + (mask.shape[1],))
    M = mask.shape[1]
    if mode == "rules":
        return np.eye(M)[model.choice(X, sample_mask)]
    w = model.weights(np.clip((X - mean) / std, -Z_CLIP, Z_CLIP), sample_mask)
    return np.eye(M)[np.argmax(w, axis=-1)] if mode == "select" else w


def _scores(w: np.ndarray, data: StackSet, rows: np.ndarray | slice) -> np.ndarray:
    """MSE per window and channel of weights w [n, Co, M] on the windows ``rows`` -> [n, Co]."""
    return combined_mse(w, data.G[rows], data.b[rows], data.c[rows])


@dataclass
class Lofo:
    """Leave-one-fold-out results: every static combiner's weights and per-window scores, each fold's sound set.

    Attributes:
        weights: static mode -> LOFO weights [N, Co, M] (the median's: equal over its members).
        scores: static mode -> LOFO MSE per window and channel [N, Co].
        sound: fold -> the sound set [Co, M] learned without that fold.
    """

    weights: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    sound: dict[int, np.ndarray]


def lofo_static(data: StackSet, sound_ratio: float, tolerance: float, rounds: int) -> Lofo:
    """Every static combiner leave-one-fold-out: sound set and weights from the other folds, scored on the fold."""
    weights = {mode: np.empty(data.b.shape) for mode in STATIC_MODES}
    scores = {mode: np.empty(data.c.shape) for mode in STATIC_MODES}
    sound: dict[int, np.ndarray] = {}
    err = data.member_errors()
    for f in data.fold_ids:
        hold = np.flatnonzero(data.folds == f)
        fit = np.flatnonzero(data.folds != f)
        sound[f] = sound_mask(err[fit].mean(0), data.mask, sound_ratio)
        G, b, c = data.channel_moments(fit)
        for mode in STATIC_MODES:
            weights[mode][hold] = static_weights(G, b, c, mode, sound[f], tolerance, rounds)
        for mode in WEIGHTED_MODES:
            scores[mode][hold] = _scores(weights[mode][hold], data, hold)
        scores["median"][hold] = data.median_mse(hold, sound[f]) if data.forecasts is not None \
            else _scores(weights["median"][hold], data, hold)  # without forecasts: the median's members, averaged
    return Lofo(weights, scores, sound)


def lofo_learned(data: StackSet, mode: str, l2s: tuple[float, ...], sound: dict[int, np.ndarray],
                 cfg: RouterConfig, seed: int) -> list[np.ndarray]:
    """Leave-one-fold-out raw weights [N, Co, M] of a learned mode, one array per L2 of ``l2s``."""
    out = [np.empty(data.b.shape) for _ in l2s]
    for f in data.fold_ids:
        hold = np.flatnonzero(data.folds == f)
        fit = np.flatnonzero(data.folds != f)
        models, mean, std = _fit_mode(mode, data, fit, sound[f], l2s, cfg, seed)
        for k, model in enumerate(models):
            out[k][hold] = _apply(mode, model, mean, std, data, hold, sound[f])
    return out


def _by_fold(per_sample: np.ndarray, folds: np.ndarray) -> dict[int, float]:
    return {int(f): float(per_sample[folds == f].mean()) for f in np.unique(folds)}


def fold_gain_t(gain: np.ndarray) -> tuple[int, float]:
    """Folds won and the t-statistic of per-fold gains [K] (0 with one fold or none: no spread to judge by)."""
    wins = int((gain > 0).sum())
    if gain.size > 1:
        se = float(gain.std(ddof=1) / np.sqrt(gain.size))
        return wins, float(gain.mean() / se) if se > 0 else (np.inf if gain.mean() > 0 else 0.0)
    return wins, 0.0


def deployment_check(score: float, baseline: float, gain: np.ndarray, cfg: RouterConfig
                     ) -> tuple[bool, bool, int, float]:
    """Whether a combination beats its baseline (the module docstring's rule).

    Args:
        score: its pooled LOFO MSE; baseline: the pooled LOFO MSE it must beat.
        gain: per fold, the baseline's MSE minus the combination's.
        cfg: ``min_gain``, ``check`` and ``min_fold_wins`` / ``min_t``.

    Returns:
        passed, whether the pooled gain alone passes, the folds won and the
        t-statistic of the per-fold gains.
    """
    wins, t_stat = fold_gain_t(gain)
    pooled_ok = score < (1.0 - cfg.min_gain) * baseline
    if cfg.check in ("pooled", "shrinkage"):
        folds_ok = True
    elif cfg.check == "one_se":
        folds_ok = wins > cfg.min_fold_wins * len(gain) and t_stat >= cfg.min_t
    else:  # robust
        folds_ok = t_stat >= cfg.min_t
    return bool(pooled_ok and folds_ok), bool(pooled_ok), wins, t_stat


def decide(scores: dict[str, np.ndarray], folds: np.ndarray, cfg: RouterConfig, learned: tuple[str, ...] = ()
           ) -> tuple[str, dict[str, dict[str, Any]]]:
    """The combination a rule deploys, from LOFO scores per window and channel (name -> [N, Co]).

    ``check: robust``: the robust average unless another combination's gain over it passes
    :func:`deployment_check`; the lowest pooled MSE among those that pass. ``pooled`` / ``one_se``:
    the static combiner with the lowest pooled MSE, or a learned mode (``learned``) whose gain over the best
    of equal weights, the best single member and that static passes.

    Returns:
        The name chosen and, per candidate, its check (pooled MSE, per-fold gain, passed).
    """
    pooled = {n: float(s.mean()) for n, s in scores.items()}
    by_fold = {n: _by_fold(s, folds) for n, s in scores.items()}
    statics = [n for n in STATIC_MODES if n in scores]
    if cfg.check == "robust":
        base = cfg.robust
        rivals = {n: [base] for n in scores if n != base}
    else:
        base = min(statics, key=pooled.__getitem__)
        rivals = {n: list(dict.fromkeys(("equal", "best_single", base))) for n in learned}
    checks: dict[str, dict[str, Any]] = {}
    passed: list[str] = []
    for name, against in rivals.items():
        per = {f: min(by_fold[r][f] for r in against) for f in by_fold[name]}
        gain = np.array([per[f] - by_fold[name][f] for f in by_fold[name]])
        ok, pooled_ok, wins, t_stat = deployment_check(pooled[name], min(pooled[r] for r in against), gain, cfg)
        checks[name] = {"oof_mse": pooled[name], "against": against, "baseline_oof_mse": min(pooled[r] for r in against),
                        "passed": ok, "pooled_gain_ok": pooled_ok, "folds_won": wins, "gain_t": t_stat}
        if ok:
            passed.append(name)
    if cfg.check == "shrinkage" and "vote" in learned:
        chosen = "vote"  # its shrinkage toward the best static combiner, chosen out of fold, is its check
    else:
        chosen = min(passed, key=pooled.__getitem__) if passed else base
    return chosen, checks


def fit_router(data: StackSet, members: list[str], names: list[str], backtest_members: list[str],
               periods: tuple[int, ...], horizon: int, context_length: int, steps: int, cfg: RouterConfig,
               seed: int = 0, tolerance: float = 0.05) -> tuple[Router, dict[str, np.ndarray]]:
    """Fit every mode on the OOF windows, choose its settings and decide the deployment by LOFO.

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
        out-of-fold forecasts of every combination, for its error bands (the
        median's are its members' equal weights: ``deployment`` rebuilds its forecasts).
    """
    if len(members) < 2:
        raise ValueError(f"the router needs at least two members; got {members}.")
    if len(data.fold_ids) < 2:
        raise ValueError("the router needs out-of-fold windows from at least two folds.")
    folds = data.folds
    n_folds = len(data.fold_ids)
    lofo_s = lofo_static(data, cfg.sound_ratio, tolerance, cfg.greedy_rounds)
    weights: dict[str, np.ndarray] = dict(lofo_s.weights)
    scores: dict[str, np.ndarray] = dict(lofo_s.scores)
    static_pooled = {mode: float(v.mean()) for mode, v in scores.items()}
    shrink_to = min(WEIGHTED_MODES, key=static_pooled.__getitem__)

    settings: dict[str, dict[str, Any]] = {}
    for mode in ROUTER_MODES:
        if mode == "rules":
            settings[mode] = {}
            weights[mode] = lofo_learned(data, mode, (0.0,), lofo_s.sound, cfg, seed)[0]
            scores[mode] = _scores(weights[mode], data, slice(None))
            continue
        best_score, chosen = np.inf, {}
        grid = tuple(cfg.shrinkage) if mode == "vote" else (0.0,)
        # the configured mode searches the whole L2 grid; the others (reported beside it) take its middle value
        l2s = tuple(cfg.l2) if mode == cfg.mode else (sorted(cfg.l2)[len(cfg.l2) // 2],)
        for l2, raw in zip(l2s, lofo_learned(data, mode, l2s, lofo_s.sound, cfg, seed), strict=True):
            for lam in grid:
                w = (1.0 - lam) * raw + lam * lofo_s.weights[shrink_to]
                per = _scores(w, data, slice(None))
                if per.mean() < best_score:
                    best_score, chosen = float(per.mean()), {"l2": float(l2), "shrink": float(lam)}
                    scores[mode], weights[mode] = per, w
        settings[mode] = chosen

    check: dict[str, dict[str, Any]] = {}
    fallbacks: dict[str, str | None] = {}
    static_scores = {m: scores[m] for m in STATIC_MODES}
    fallback, static_checks = decide(static_scores, folds, cfg)
    by_fold = {m: _by_fold(v, folds) for m, v in scores.items()}
    for mode in ROUTER_MODES:
        chosen, checks = decide({**static_scores, mode: scores[mode]}, folds, cfg, learned=(mode,))
        c = checks[mode]
        passed = chosen == mode
        check[mode] = {
            **c,
            "passed": passed,
            "oof_mse_equal": static_pooled["equal"],
            "oof_mse_best_single": static_pooled["best_single"],
            "oof_mse_fallback": static_pooled[fallback],
            "folds": n_folds,
            "by_fold": {str(f): v for f, v in by_fold[mode].items()},
            "by_fold_equal": {str(f): v for f, v in by_fold["equal"].items()},
            "by_fold_best_single": {str(f): v for f, v in by_fold["best_single"].items()},
            "min_gain": cfg.min_gain,
            "check": cfg.check,
            "min_t": cfg.min_t,
            "min_fold_wins": cfg.min_fold_wins,
            "settings": settings[mode],
            "fallback": None if passed else fallback,
            "beaten_by": None if passed or chosen == fallback else chosen,
        }
        fallbacks[mode] = None if passed else fallback
        if not passed:
            logger.warning(
                "router %s at H=%d: out of fold %.4g against %.4g for %s (check %s: gain %s, %.2f standard errors); "
                "using %s", mode, horizon, c["oof_mse"], c["baseline_oof_mse"], "/".join(c["against"]), cfg.check,
                "enough" if c["pooled_gain_ok"] else "too small", c["gain_t"], fallback)
    check["static"] = {"oof_mse": static_pooled, "fallback": fallback, "shrink_to": shrink_to,
                       "checks": static_checks,
                       "by_fold": {m: {str(f): x for f, x in by_fold[m].items()} for m in STATIC_MODES},
                       "fold_windows": {str(int(f)): int((folds == f).sum()) for f in np.unique(folds)}}

    all_rows = np.arange(len(folds))
    sound = sound_mask(data.channel_errors(), data.mask, cfg.sound_ratio)
    models: dict[str, Any] = {}
    mean = std = None
    for mode in ROUTER_MODES:
        fitted, mean, std = _fit_mode(mode, data, all_rows, sound, (settings[mode].get("l2", 0.0),), cfg, seed)
        models[mode] = fitted[0]
    G, b, c = data.channel_moments()
    static = {mode: static_weights(G, b, c, mode, sound, tolerance, cfg.greedy_rounds) for mode in STATIC_MODES}
    assert mean is not None and std is not None
    router = Router(members=list(members), periods=tuple(periods), horizon=horizon, context_length=context_length,
                    steps=steps, names=list(names), backtest_members=list(backtest_members), mask=sound,
                    mean_=mean, std_=std, models_=models,
                    shrink_={mode: s.get("shrink", 0.0) for mode, s in settings.items()}, static_=static,
                    check_=check, fallback_=fallbacks, shrink_to_=shrink_to, gate_=data.mask.copy())
    return router, weights
