"""Prediction intervals: conformal bands from out-of-fold errors, scaled per window, weighted toward recent windows.

For every out-of-fold window the combined forecast's absolute error, divided
by a local spread sigma of that window (normalised conformal scores), gives
one score per output channel and horizon step. The band of a new window at
level 1 - a is ``forecast +- q * sigma``, q the (finite-sample corrected)
1 - a quantile of the scores of that channel and step. A calm window gets a
narrow band and a volatile one a wide band.

The spread is chosen on the folds (leave-one-fold-out: quantiles from the
other folds, coverage and interval score on the left-out one; the lowest mean
interval score wins: it rewards coverage and penalises width) among:

- ``none``: sigma = 1 (plain split conformal);
- ``window_std``: the standard deviation of the window's context;
- ``spread``: how much the members disagree about this window (standard
  deviation of their forecasts, per step), plus a floor;
- ``std_spread``: the root of the sum of both squares;
- ``level``: the window's recent level in the data's own units (its last
  quarter's mean, as a multiple of the training standard deviation), for
  series whose errors grow with their level (multiplicative seasonality).

Errors drift: a trend carries the level (and the errors) away from the old
folds, and a calm test period needs narrower bands. So the scores are weighted
by age, ``w = 0.5 ** (age / half_life)`` (weighted conformal prediction), the
half-life a share of the history (``HALF_LIVES``; ``inf``: no weighting) chosen
forward in time: the scores of the folds before fold k, aged from fold k's first
window, make the bands of fold k, for k = 1 .. K-1, and the lowest mean interval
score wins. The same forward check on the last fold alone is recorded as
``last_fold`` (coverage the report warns about when it misses). Nothing here
sees the test set.

References:
    Lei, G'Sell, Rinaldo, Tibshirani & Wasserman, "Distribution-free
    predictive inference for regression", JASA 2018 (split and normalised
    conformal); Barber, Candes, Ramdas & Tibshirani, "Conformal prediction
    beyond exchangeability", Annals of Statistics 2023 (weighted quantiles
    under drift); Gneiting & Raftery, "Strictly proper scoring rules,
    prediction, and estimation", JASA 2007 (interval score).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernel.errors import HybridInputError

NORMALISERS = ("none", "window_std", "spread", "std_spread", "level")
FLOOR = 1e-3  # smallest spread, in training standard deviations
HALF_LIVES = (np.inf, 0.5, 0.2, 0.1)  # candidate half-lives of the scores' weights, as shares of the history's span


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


def spread_of(name: str, context: np.ndarray, spread: np.ndarray | None, horizon: int,
              offset: np.ndarray | None = None) -> np.ndarray:
    """sigma of each window, channel and step: context [n, Co, L], members' spread [n, Co, H] -> [n, Co, H].

    ``offset`` [Co]: each channel's training mean over its training standard deviation, so that
    ``context + offset`` is the level in the data's own units (divided by that standard deviation); ``level``
    needs it (without it the level is taken in the scaled units).
    """
    n, co = context.shape[:2]
    if name == "none":
        return np.ones((n, co, horizon))
    if name == "level":
        tail = context[..., -max(1, context.shape[-1] // 4):].astype(np.float64).mean(-1)  # [n, Co]
        shift = 0.0 if offset is None else np.asarray(offset, np.float64)[None, :]
        return np.broadcast_to(np.maximum(np.abs(tail + shift), FLOOR)[..., None], (n, co, horizon)).copy()
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


def weighted_quantile(scores: np.ndarray, weights: np.ndarray, level: float) -> np.ndarray:
    """The weighted conformal ``level`` % quantile over axis 0: scores [n, ...], weights [n] -> [...].

    The new point carries weight 1 (the weights are relative to it, each <= 1) and its mass sits at
    +infinity (Barber et al. 2023); where the other weights never reach the level, the largest score is
    returned (a finite band). With every weight 1 this is :func:`conformal_quantile`.
    """
    weights = np.asarray(weights, np.float64)
    if np.all(weights == 1.0):
        return conformal_quantile(scores, level)
    order = np.argsort(scores, axis=0)
    ranked = np.take_along_axis(scores, order, axis=0)
    cum = np.cumsum(weights[order], axis=0) / (weights.sum() + 1.0)
    k = np.minimum((cum < level / 100.0).sum(axis=0), scores.shape[0] - 1)  # first index reaching the level
    return np.take_along_axis(ranked, k[None], axis=0)[0].copy()


def age_weights(starts: np.ndarray, origin: float, span: float, half_life: float) -> np.ndarray:
    """w = 0.5 ** (age / (half_life x span)) of windows starting at ``starts``, aged from ``origin`` (rows)."""
    if not np.isfinite(half_life):
        return np.ones(len(starts))
    age = np.maximum(origin - np.asarray(starts, np.float64), 0.0)
    return 0.5 ** (age / max(half_life * span, 1.0))


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
        half_life: the scores' weights' half-life as a share of the history (inf: unweighted).
        last_fold: level -> coverage, width and interval score on the last fold, from the earlier folds alone.
        offset: [Co] the ``level`` spread's shift to the data's own level (see :func:`spread_of`).
    """

    levels: tuple[float, ...]
    normaliser: str
    quantiles: dict[float, np.ndarray]
    oof: dict[float, dict[str, float]] = field(default_factory=dict)
    half_life: float = np.inf
    last_fold: dict[float, dict[str, float]] = field(default_factory=dict)
    offset: np.ndarray | None = None

    def sigma(self, context: np.ndarray, spread: np.ndarray | None, horizon: int) -> np.ndarray:
        """The spread sigma [n, Co, H] of windows context [n, Co, L] (``spread``: the members' disagreement)."""
        return spread_of(self.normaliser, context, spread, horizon, self.offset)

    def band(self, forecast: np.ndarray, sigma: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """forecast [n, Co, H] and sigma [n, Co, H] -> (lo, hi) at ``level``."""
        half = self.quantiles[level][None, :, : forecast.shape[-1]] * sigma[..., : forecast.shape[-1]]
        return forecast - half, forecast + half

    def to_dict(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "normaliser": self.normaliser,
                "half_life": self.half_life if np.isfinite(self.half_life) else None,
                "oof": {str(k): v for k, v in self.oof.items()},
                "last_fold": {str(k): v for k, v in self.last_fold.items()}}


def _fit(scores: np.ndarray, levels: tuple[float, ...], weights: np.ndarray | None = None) -> dict[float, np.ndarray]:
    if weights is None:
        return {lv: conformal_quantile(scores, lv) for lv in levels}
    return {lv: weighted_quantile(scores, weights, lv) for lv in levels}


def _tally(q: dict[float, np.ndarray], sigma: np.ndarray, forecast: np.ndarray, target: np.ndarray,
           sums: dict[float, np.ndarray]) -> int:
    """Add coverage, width and interval score of bands q x sigma around ``forecast`` to ``sums``; returns the count."""
    for lv, qv in q.items():
        half = qv[None] * sigma
        lo, hi = forecast - half, forecast + half
        sums[lv] += [((target >= lo) & (target <= hi)).sum(), (hi - lo).sum(), interval_score(target, lo, hi, lv).sum()]
    return int(target.size)


def _means(sums: dict[float, np.ndarray], count: int) -> dict[float, dict[str, float]]:
    n = max(count, 1)
    return {lv: {"coverage": float(s[0] / n), "width": float(s[1] / n), "interval_score": float(s[2] / n)}
            for lv, s in sums.items()}


def _lofo(err: np.ndarray, sigma: np.ndarray, forecast: np.ndarray, target: np.ndarray, folds: np.ndarray,
          levels: tuple[float, ...]) -> dict[float, dict[str, float]]:
    """Leave-one-fold-out coverage, width and interval score of normalised bands."""
    sums = {lv: np.zeros(3) for lv in levels}
    count = 0
    scores = err / sigma
    for f in np.unique(folds):
        hold = folds == f
        count += _tally(_fit(scores[~hold], levels), sigma[hold], forecast[hold], target[hold], sums)
    return _means(sums, count)


def _forward(scores: np.ndarray, sigma: np.ndarray, forecast: np.ndarray, target: np.ndarray, folds: np.ndarray,
             starts: np.ndarray, span: float, half_life: float, levels: tuple[float, ...], only_last: bool = False
             ) -> dict[float, dict[str, float]]:
    """Forward check: the folds before k (weighted by age from fold k's first window) make fold k's bands."""
    sums = {lv: np.zeros(3) for lv in levels}
    count = 0
    ids = np.unique(folds)
    for f in ids[-1:] if only_last else ids[1:]:
        past, hold = folds < f, folds == f
        w = age_weights(starts[past], float(starts[hold].min()), span, half_life)
        count += _tally(_fit(scores[past], levels, w), sigma[hold], forecast[hold], target[hold], sums)
    return _means(sums, count)


def fit_bands(forecast: np.ndarray, target: np.ndarray, context: np.ndarray, members: np.ndarray | None,
              folds: np.ndarray, levels: tuple[float, ...], normaliser: str | None = None,
              starts: np.ndarray | None = None, offset: np.ndarray | None = None,
              half_life: float | None = None) -> Bands:
    """Conformal bands from out-of-fold forecasts.

    Args:
        forecast: out-of-fold forecasts [n, Co, H] (the combination's, or a member's).
        target: [n, Co, H].
        context: the windows' contexts [n, Co, L] (output channels).
        members: the members' disagreement about each window [n, Co, H] (:func:`member_spread`), or None.
        folds: fold of each window [n] (folds in time order).
        levels: nominal levels in percent.
        normaliser: fixed spread; None chooses it leave-one-fold-out (lowest mean interval score).
        starts: each window's start row [n] (None: the window's index); the scores' ages.
        offset: [Co] the ``level`` spread's shift (see :func:`spread_of`); without it ``level`` is no candidate.
        half_life: fixed half-life; None chooses it forward in time among :data:`HALF_LIVES`.

    Returns:
        The fitted :class:`Bands`.
    """
    H = target.shape[-1]
    err = np.abs(forecast - target).astype(np.float32)  # float32 throughout: [n, Co, H] arrays are large
    forecast, target = forecast.astype(np.float32, copy=False), target.astype(np.float32, copy=False)
    starts = np.arange(len(folds), dtype=np.float64) if starts is None else np.asarray(starts, np.float64)
    span = float(starts.max() - starts.min() + 1) if len(starts) else 1.0
    several = len(np.unique(folds)) > 1
    candidates = (normaliser,) if normaliser else tuple(n for n in NORMALISERS if offset is not None or n != "level")
    best: tuple[float, str, dict[float, dict[str, float]]] | None = None
    for name in candidates:
        sigma = spread_of(name, context, members, H, offset).astype(np.float32)
        oof = _lofo(err, sigma, forecast, target, folds, levels) if several else {}
        score = float(np.mean([v["interval_score"] for v in oof.values()])) if oof else 0.0
        if best is None or score < best[0]:
            best = (score, name, oof)
    assert best is not None
    _, name, oof = best
    sigma = spread_of(name, context, members, H, offset).astype(np.float32)
    scores = err / sigma
    chosen = half_life
    if chosen is None:
        chosen = np.inf
        if len(np.unique(folds)) > 2:
            trial = {hl: _forward(scores, sigma, forecast, target, folds, starts, span, hl, levels)
                     for hl in HALF_LIVES}
            chosen = min(HALF_LIVES, key=lambda hl: np.mean([v["interval_score"] for v in trial[hl].values()]))
    last = _forward(scores, sigma, forecast, target, folds, starts, span, chosen, levels, only_last=True) \
        if several else {}
    weights = age_weights(starts, float(starts.max()) + 1.0, span, chosen)
    quantiles = {lv: q.astype(np.float64) for lv, q in _fit(scores, levels, weights).items()}
    return Bands(levels, name, quantiles, oof, float(chosen), last,
                 None if offset is None else np.asarray(offset, np.float64))
