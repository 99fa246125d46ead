"""Prediction intervals: split-conformal bands from out-of-fold errors, scaled by each window's spread.

For every out-of-fold window the combined forecast's absolute error, divided
by a local spread sigma of that window (normalised conformal scores), gives
one score per output channel and horizon step. The band of a new window at
level 1 - a is ``forecast +- q * sigma``, q the (finite-sample corrected)
1 - a quantile of the scores of that channel and step. A calm window gets a
narrow band and a volatile one a wide band.

The spread is chosen on the folds (leave-one-fold-out: quantiles from the
other folds, coverage and interval score on the left-out one) among:

- ``none``: sigma = 1 (plain split conformal);
- ``window_std``: the standard deviation of the window's context;
- ``spread``: how much the members disagree about this window (standard
  deviation of their forecasts, per step), plus a floor;
- ``std_spread``: the root of the sum of both squares.

The one with the lowest mean interval score wins (it rewards coverage and
penalises width). Nothing here sees the test set.

References:
    Lei, G'Sell, Rinaldo, Tibshirani & Wasserman, "Distribution-free
    predictive inference for regression", JASA 2018 (split and normalised
    conformal); Gneiting & Raftery, "Strictly proper scoring rules,
    prediction, and estimation", JASA 2007 (interval score).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernel.errors import HybridInputError

NORMALISERS = ("none", "window_std", "spread", "std_spread")
FLOOR = 1e-3  # smallest spread, in training standard deviations


def check_levels(levels: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """Levels in percent, each strictly between 0 and 100, no duplicates; sorted."""
    levels = tuple(float(v) for v in levels)
    bad = [v for v in levels if not 0 < v < 100]
    if bad:
        raise HybridInputError(
            f"every value in task.levels (--level) must be between 0 and 100 (exclusive); got {list(levels)}.")
    if len(set(levels)) != len(levels):
        raise HybridInputError(f"task.levels (--level) lists a level twice: {list(levels)}.")
    return tuple(sorted(levels))


def member_spread(forecasts: list[np.ndarray]) -> np.ndarray | None:
    """Standard deviation across members of their forecasts, each [n, Co, H] -> [n, Co, H] (None for one member).

    Streamed over the members (no [n, Co, M, H] stack is built).
    """
    if len(forecasts) < 2:
        return None
    mean = np.zeros(forecasts[0].shape)
    sq = np.zeros(forecasts[0].shape)
    for f in forecasts:
        mean += f
        sq += np.square(f, dtype=np.float64)
    mean /= len(forecasts)
    return np.sqrt(np.maximum(sq / len(forecasts) - mean**2, 0.0))


def spread_of(name: str, context: np.ndarray, spread: np.ndarray | None, horizon: int) -> np.ndarray:
    """sigma of each window, channel and step: context [n, Co, L], members' spread [n, Co, H] -> [n, Co, H]."""
    n, co = context.shape[:2]
    if name == "none":
        return np.ones((n, co, horizon))
    std = np.maximum(context.astype(np.float64).std(axis=-1), FLOOR)[..., None]  # [n, Co, 1]
    if name == "window_std":
        return np.broadcast_to(std, (n, co, horizon)).copy()
    members = np.zeros((n, co, horizon)) if spread is None else spread[..., :horizon]
    if name == "spread":
        return np.maximum(members, FLOOR) + 0.1 * std  # a floor tied to the window's scale
    if name == "std_spread":
        return np.sqrt(std**2 + members**2)
    raise ValueError(f"unknown normaliser {name!r}; one of {NORMALISERS}.")


def conformal_quantile(scores: np.ndarray, level: float) -> np.ndarray:
    """The finite-sample corrected ``level`` % quantile over axis 0 of ``scores`` [n, ...] -> [...].

    The k-th smallest score, k = ceil((n + 1) level / 100) (capped at n): a
    new exchangeable score falls at or below it with probability >= level.
    """
    n = scores.shape[0]
    k = int(min(n, np.ceil((n + 1) * level / 100.0)))
    return np.partition(scores, k - 1, axis=0)[k - 1].copy()  # a copy: a view would keep the whole array alive


def interval_score(y: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: float) -> np.ndarray:
    """Winkler / Gneiting-Raftery interval score (lower is better), elementwise."""
    a = 1.0 - level / 100.0
    return (hi - lo) + (2.0 / a) * np.maximum(lo - y, 0.0) + (2.0 / a) * np.maximum(y - hi, 0.0)


@dataclass
class Bands:
    """Conformal quantiles of one forecast (the combination, or one member), per level.

    Attributes:
        levels: the nominal levels in percent.
        normaliser: the spread the scores were divided by.
        quantiles: level -> [Co, H] quantile of |error| / sigma.
        oof: level -> leave-one-fold-out coverage, mean width and interval score.
    """

    levels: tuple[float, ...]
    normaliser: str
    quantiles: dict[float, np.ndarray]
    oof: dict[float, dict[str, float]] = field(default_factory=dict)

    def band(self, forecast: np.ndarray, sigma: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """forecast [n, Co, H] and sigma [n, Co, H] -> (lo, hi) at ``level``."""
        half = self.quantiles[level][None, :, : forecast.shape[-1]] * sigma[..., : forecast.shape[-1]]
        return forecast - half, forecast + half

    def to_dict(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "normaliser": self.normaliser,
                "oof": {str(k): v for k, v in self.oof.items()}}


def _fit(scores: np.ndarray, levels: tuple[float, ...]) -> dict[float, np.ndarray]:
    return {lv: conformal_quantile(scores, lv) for lv in levels}


def _lofo(err: np.ndarray, sigma: np.ndarray, forecast: np.ndarray, target: np.ndarray, folds: np.ndarray,
          levels: tuple[float, ...]) -> dict[float, dict[str, float]]:
    """Leave-one-fold-out coverage, width and interval score of normalised bands."""
    sums = {lv: np.zeros(3) for lv in levels}
    count = 0
    scores = err / sigma
    for f in np.unique(folds):
        hold = folds == f
        q = _fit(scores[~hold], levels)
        for lv in levels:
            half = q[lv][None] * sigma[hold]
            lo, hi = forecast[hold] - half, forecast[hold] + half
            y = target[hold]
            sums[lv] += [((y >= lo) & (y <= hi)).sum(), (hi - lo).sum(), interval_score(y, lo, hi, lv).sum()]
        count += int(hold.sum()) * target.shape[1] * target.shape[2]
    return {lv: {"coverage": float(s[0] / count), "width": float(s[1] / count), "interval_score": float(s[2] / count)}
            for lv, s in sums.items()}


def fit_bands(forecast: np.ndarray, target: np.ndarray, context: np.ndarray, members: np.ndarray | None,
              folds: np.ndarray, levels: tuple[float, ...], normaliser: str | None = None) -> Bands:
    """Conformal bands from out-of-fold forecasts.

    Args:
        forecast: out-of-fold forecasts [n, Co, H] (the combination's, or a member's).
        target: [n, Co, H].
        context: the windows' contexts [n, Co, L] (output channels).
        members: the members' disagreement about each window [n, Co, H] (:func:`member_spread`), or None.
        folds: fold of each window [n].
        levels: nominal levels in percent.
        normaliser: fixed spread; None chooses it leave-one-fold-out (lowest mean interval score).

    Returns:
        The fitted :class:`Bands`.
    """
    H = target.shape[-1]
    err = np.abs(forecast - target).astype(np.float32)  # float32 throughout: [n, Co, H] arrays are large
    forecast, target = forecast.astype(np.float32, copy=False), target.astype(np.float32, copy=False)
    candidates = (normaliser,) if normaliser else NORMALISERS
    best: tuple[float, str, dict[float, dict[str, float]]] | None = None
    for name in candidates:
        sigma = spread_of(name, context, members, H).astype(np.float32)
        oof = _lofo(err, sigma, forecast, target, folds, levels) if len(np.unique(folds)) > 1 else {}
        score = float(np.mean([v["interval_score"] for v in oof.values()])) if oof else 0.0
        if best is None or score < best[0]:
            best = (score, name, oof)
    assert best is not None
    _, name, oof = best
    sigma = spread_of(name, context, members, H).astype(np.float32)
    return Bands(levels, name, {lv: q.astype(np.float64) for lv, q in _fit(err / sigma, levels).items()}, oof)
