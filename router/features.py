"""Window features for the router: what a window looks like, from its context only.

Every feature is computed per window and channel, vectorised over ``[N, C, L]``
arrays, and is scale-free: the context is z-scored by its own mean and
standard deviation first (``log_std`` is the only exception; members see data
scaled on the training part, so it reads "how volatile is this window compared
to training").

Member-based features use forecasts only, never the window's target:

- ``spread``: how far the members disagree (std across members, in units of
  the context's std, averaged over the horizon, log).
- ``dev:<member>``: each member's mean forecast minus the members' median,
  in context std units (who is the outlier, and in which direction).
- ``backtest:<member>``: the member's in-context backtest error, log of the
  relative MSE. The member forecasts the last ``H'`` points of the context
  from the points before them. Members need exactly ``L`` inputs, so the
  earlier context is the window shifted back by ``H'`` and left-padded with
  its first value repeated ``H'`` times (:func:`shift_context`). This one
  rule is used for every validation, test and production window, so the
  router sees the same feature at training and at forecast time (re-using
  the stored forecast of window ``i - H'`` would be exact for most
  validation windows but unavailable in production, where only the last L
  rows are at hand). The padding touches only the oldest ``H'`` of the L
  inputs; ``H' = min(H, L // 4)`` by default.

References:
    Montero-Manso, Athanasopoulos, Hyndman & Talagala, "FFORMA: Feature-based
    forecast model averaging", IJF 2020 (features -> combination weights);
    Wang, Smith & Hyndman, "Characteristic-based clustering for time series
    data", 2006 (trend / seasonal strength, spectral entropy).
"""

from __future__ import annotations

import numpy as np

from kernel.periods import autocorrelation

EPS = 1e-8
CHUNK = 256  # windows per block in window_features


def backtest_steps(horizon: int, context_length: int, configured: int = 0) -> int:
    """H', the number of context points each member backtests on."""
    steps = configured if configured > 0 else min(horizon, context_length // 4)
    return int(max(1, min(steps, context_length - 1)))


def shift_context(context: np.ndarray, steps: int) -> np.ndarray:
    """The window ``steps`` points earlier: context [N, C, L] -> [N, C, L].

    The first ``steps`` positions (before the window starts) are filled with
    the window's first value.
    """
    pad = np.repeat(context[:, :, :1], steps, axis=2)
    return np.concatenate([pad, context[:, :, :-steps]], axis=2)


def context_feature_names(periods: tuple[int, ...]) -> list[str]:
    names = ["log_std", "skew", "kurtosis", "min_rel", "max_rel", "median_rel", "last_rel",
             "trend_slope", "trend_strength", "spectral_entropy", "level_shift", "recent_shift",
             "volatility_ratio"]
    for p in periods:
        names += [f"seasonal_strength@{p}", f"acf@{p}"]
    return names


def context_features(context: np.ndarray, periods: tuple[int, ...]) -> np.ndarray:
    """Statistics of each window's context.

    Args:
        context: [N, C, L] scaled values.
        periods: detected periods (each gets a seasonal strength and an ACF).

    Returns:
        [N, C, K] float64, K = ``len(context_feature_names(periods))``.
    """
    x = np.asarray(context, dtype=np.float64)
    L = x.shape[-1]
    mu = x.mean(-1, keepdims=True)
    sd = x.std(-1, keepdims=True)
    z = (x - mu) / (sd + EPS)  # [N, C, L], zero mean, unit std
    feats = [
        np.log(sd[..., 0] + 1e-6),
        (z**3).mean(-1),
        (z**4).mean(-1) - 3.0,
        z.min(-1),
        z.max(-1),
        np.median(z, axis=-1),
        z[..., -1],
    ]
    # linear trend over the window: slope in std units per window, strength = R^2
    t = np.linspace(-0.5, 0.5, L)
    slope = (z @ t) / float(t @ t)  # [N, C]
    resid = z - slope[..., None] * t
    r2 = 1.0 - (resid**2).mean(-1)  # var(z) == 1
    feats += [slope, np.clip(r2, 0.0, 1.0)]
    # spectral entropy of the detrended window, normalised to [0, 1]
    power = np.abs(np.fft.rfft(resid, axis=-1))[..., 1:] ** 2
    prob = power / (power.sum(-1, keepdims=True) + EPS)
    entropy = -(prob * np.log(prob + 1e-12)).sum(-1) / np.log(max(prob.shape[-1], 2))
    feats.append(entropy)
    # level shifts: the largest jump between consecutive block means, and the
    # last block against the rest
    block = max(L // 8, 2)
    n_blocks = L // block
    means = z[..., L - n_blocks * block:].reshape(*z.shape[:-1], n_blocks, block).mean(-1)
    feats.append(np.abs(np.diff(means, axis=-1)).max(-1) if n_blocks > 1 else np.zeros(z.shape[:-1]))
    feats.append(z[..., -block:].mean(-1) - z[..., :-block].mean(-1))
    # volatility of the recent steps against the whole window
    d = np.diff(z, axis=-1)
    q = max(d.shape[-1] // 4, 1)
    feats.append(np.log((d[..., -q:].std(-1) + 1e-6) / (d.std(-1) + 1e-6)))
    fits = [p for p in periods if 2 <= p <= L // 2]
    acf = autocorrelation(resid, max(fits), eps=EPS) if fits else None  # [N, C, max + 1]
    for p in periods:
        if 2 <= p <= L // 2:
            k = L // p
            seg = resid[..., L - k * p:].reshape(*resid.shape[:-1], k, p)
            profile = seg.mean(-2, keepdims=True)
            raw = 1.0 - ((seg - profile) ** 2).mean((-1, -2)) / (seg.var((-1, -2)) + EPS)
            strength = (raw - 1.0 / k) / (1.0 - 1.0 / k)  # white noise scores 1/k before this correction
            acf_p = acf[..., p]
        else:  # the period does not fit twice in the window
            strength = acf_p = np.zeros(z.shape[:-1])
        feats += [np.clip(strength, 0.0, 1.0), acf_p]
    return np.stack(feats, axis=-1)


def member_feature_names(members: list[str]) -> list[str]:
    return ["spread", *[f"dev:{m}" for m in members], *[f"backtest:{m}" for m in members]]


def member_features(
    context: np.ndarray,
    forecasts: dict[str, np.ndarray],
    backtests: dict[str, np.ndarray],
    members: list[str],
    steps: int,
) -> np.ndarray:
    """Disagreement between members and each member's in-context backtest error.

    Args:
        context: [N, C, L] scaled values.
        forecasts: member -> forecast [N, C, H] for the window.
        backtests: member -> forecast [N, C, >= steps] made from
            ``shift_context(context, steps)``; a member without one (the
            core, whose backtest would cost a second inference pass) gets 0.
        members: member order.
        steps: H', the backtested points (the last ``steps`` of the context).

    Returns:
        [N, C, 1 + 2 M] float64.
    """
    x = np.asarray(context, dtype=np.float64)
    sd = x.std(-1) + 1e-6  # [N, C]
    stack = np.stack([np.asarray(forecasts[m], dtype=np.float64) for m in members], axis=2)  # [N, C, M, H]
    spread = np.log(stack.std(2).mean(-1) / sd + 1e-3)
    median = np.median(stack, axis=2, keepdims=True)
    dev = (stack - median).mean(-1) / sd[..., None]  # [N, C, M]
    actual = x[..., -steps:]
    bt = np.stack(
        [((np.asarray(backtests[m][..., :steps], dtype=np.float64) - actual) ** 2).mean(-1) / sd**2
         if m in backtests else np.full(sd.shape, np.nan) for m in members],
        axis=-1,
    )  # [N, C, M]; NaN: no backtest for that member (the feature is 0 for it)
    bt = np.nan_to_num(np.log(bt + 1e-4), nan=0.0)
    return np.concatenate([spread[..., None], dev, bt], axis=-1)


def feature_names(periods: tuple[int, ...], members: list[str]) -> list[str]:
    return context_feature_names(periods) + member_feature_names(members)


def window_features(
    context: np.ndarray,
    forecasts: dict[str, np.ndarray],
    backtests: dict[str, np.ndarray],
    members: list[str],
    periods: tuple[int, ...],
    steps: int,
) -> np.ndarray:
    """All router features: [N, C, F] float64 (names: :func:`feature_names`).

    Windows are processed in chunks of ``CHUNK`` to bound memory.
    """
    out = []
    for i in range(0, context.shape[0], CHUNK):
        part = slice(i, i + CHUNK)
        fc = {m: forecasts[m][part] for m in members}
        bt = {m: backtests[m][part] for m in members if m in backtests}
        out.append(np.concatenate(
            [context_features(context[part], periods), member_features(context[part], fc, bt, members, steps)],
            axis=-1,
        ))
    return np.concatenate(out, axis=0)
