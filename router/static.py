"""Static combiners: the same weights for every window, from out-of-fold errors, over the sound members only.

They are the baselines a learned router must beat, and the fall-back when it
does not. A member takes part on an output channel only where it is
**sound** there: allowed by the sanity gate and with an out-of-fold MSE no more
than ``sound_ratio`` times the channel's best member's (:func:`sound_mask`).
Soft weight on a member far worse than the best is the trap robust combination
avoids: it may help in some out-of-fold regimes, but a calm test period, or
refitted members whose quality has shifted, punishes every bit of it.

- ``equal``: the sound members, equally weighted;
- ``inverse_error``: weights proportional to 1 / OOF MSE;
- ``best_single``: the member with the lowest OOF MSE alone;
- ``top_k``: the members within ``tolerance`` (relative) of the best OOF MSE,
  equally weighted (the forecast-combination puzzle: a plain mean of the few
  good members is hard to beat);
- ``greedy``: Caruana's ensemble selection with replacement: start from the
  best member, then ``rounds`` times add the member (again, if it helps most)
  whose addition to the running average lowers the OOF MSE most; the weights
  are the counts. Sparse, and never worse out of fold than the best member;
- ``median``: the elementwise median of the sound members' forecasts (robust to
  one member going astray; not a weighted mean: :func:`combine_static`).

References:
    Claeskens, Magnus, Vasnev & Wang, "The forecast combination puzzle: a
    simple theoretical explanation", IJF 2016; Caruana, Niculescu-Mizil,
    Crew & Ksikes, "Ensemble selection from libraries of models", ICML 2004
    (as AutoGluon's ensembles use it); Stock & Watson, "Combination forecasts
    of output growth in a seven-country data set", J. Forecasting 2004
    (median and trimmed-mean combinations).
"""

from __future__ import annotations

import numpy as np

STATIC_MODES = ("equal", "inverse_error", "best_single", "top_k", "greedy", "median")
WEIGHTED_MODES = STATIC_MODES[:-1]  # every static mode but the median is a weighted mean of the members
TOP_K_TOLERANCE = 0.05
GREEDY_ROUNDS = 25


def sound_mask(err: np.ndarray, allowed: np.ndarray | None, ratio: float) -> np.ndarray:
    """Members sound on each channel: allowed and within ``ratio`` x the channel's best out-of-fold MSE.

    Args:
        err: OOF MSE [Co, M].
        allowed: [Co, M] bool (the sanity gate), or None for every member.
        ratio: the soundness factor (>= 1); ``inf`` keeps every allowed member.

    Returns:
        [Co, M] bool; a channel always keeps its best allowed member.
    """
    err = np.asarray(err, dtype=np.float64)
    allowed = np.ones(err.shape, bool) if allowed is None else np.asarray(allowed, bool)
    masked = np.where(allowed & np.isfinite(err), err, np.inf)
    best = masked.min(axis=1, keepdims=True)
    out = masked <= best * ratio
    out[np.arange(err.shape[0]), np.argmin(masked, axis=1)] = True
    return out & allowed


def static_weights(G: np.ndarray, b: np.ndarray, c: np.ndarray, mode: str, mask: np.ndarray | None = None,
                   tolerance: float = TOP_K_TOLERANCE, rounds: int = GREEDY_ROUNDS) -> np.ndarray:
    """Weights per channel and member from the members' out-of-fold moments.

    Args:
        G, b, c: mean moments per output channel over the OOF windows: G [Co, M, M]
            (mean f_m f_k), b [Co, M] (mean f_m y), c [Co] (mean y^2); the MSE of
            weights w is ``w'Gw - 2 w'b + c`` (``router.models.moments``).
        mode: one of :data:`STATIC_MODES` (``median``: equal weights over its members,
            which is what the report shows; its forecast is the median, see :func:`combine_static`).
        mask: [Co, M] bool, the members each channel may use (None: all).
        tolerance: ``top_k``'s relative margin over the best error.
        rounds: ``greedy``'s selection rounds.

    Returns:
        [Co, M] non-negative weights, each row summing to one.
    """
    G, b, c = np.asarray(G, np.float64), np.asarray(b, np.float64), np.asarray(c, np.float64)
    if G.ndim != 3 or b.shape != G.shape[:2] or b.shape[1] == 0:
        raise ValueError(f"`G` must be [channels, members, members] and `b` [channels, members]; got {G.shape}, "
                         f"{b.shape}.")
    err = np.diagonal(G, axis1=1, axis2=2) - 2 * b + c[:, None]
    allowed = np.ones(err.shape, bool) if mask is None else np.asarray(mask, bool)
    if not allowed.any(axis=1).all():
        raise ValueError("every channel needs at least one allowed member.")
    masked = np.where(allowed, err, np.inf)
    best = masked.min(axis=1, keepdims=True)
    if mode in ("equal", "median"):
        w = allowed.astype(np.float64)
    elif mode == "inverse_error":
        w = np.where(allowed, 1.0 / np.maximum(err, 1e-12), 0.0)
    elif mode == "best_single":
        w = np.zeros(err.shape)
        w[np.arange(err.shape[0]), np.argmin(masked, axis=1)] = 1.0
    elif mode == "top_k":
        w = (allowed & (masked <= best * (1.0 + tolerance))).astype(np.float64)
    elif mode == "greedy":
        w = np.stack([_greedy(G[i], b[i], c[i], allowed[i], rounds) for i in range(err.shape[0])])
    else:
        raise ValueError(f"`mode` must be one of {', '.join(STATIC_MODES)}; got {mode!r}.")
    return w / w.sum(axis=1, keepdims=True)


def _greedy(G: np.ndarray, b: np.ndarray, c: float, allowed: np.ndarray, rounds: int) -> np.ndarray:
    """Caruana's selection with replacement on one channel: counts [M] (G [M, M], b [M])."""
    M = b.shape[0]
    counts = np.zeros(M)
    total = np.zeros(M)  # sum of the selected members' weight vectors (one-hot each)
    cand = np.flatnonzero(allowed)
    for r in range(max(1, rounds)):
        n = r + 1
        best_m, best_err = -1, np.inf
        for m in cand:
            w = total.copy()
            w[m] += 1.0
            w /= n
            e = float(w @ G @ w - 2.0 * w @ b + c)
            if e < best_err - 1e-15:
                best_m, best_err = m, e
        total[best_m] += 1.0
        counts[best_m] += 1.0
    return counts


def combine(forecasts: dict[str, np.ndarray], members: list[str], weights: np.ndarray) -> np.ndarray:
    """Weighted mean of member forecasts f_m [N, Co, H] with weights [Co, M] or [N, Co, M] -> [N, Co, H] float32."""
    out = np.zeros(forecasts[members[0]].shape, dtype=np.float32)
    w = np.asarray(weights, dtype=np.float32)
    for k, m in enumerate(members):
        wk = w[..., k]
        if not wk.any():
            continue
        out += wk[..., None] * forecasts[m].astype(np.float32, copy=False)
    return out


def median_forecast(forecasts: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Elementwise median over the members each channel may use: M arrays [N, Co, H], mask [Co, M] -> [N, Co, H]."""
    out = np.empty(forecasts[0].shape, dtype=np.float32)
    for ch in range(mask.shape[0]):
        picked = [forecasts[k][:, ch] for k in np.flatnonzero(mask[ch])]
        out[:, ch] = np.median(np.stack(picked), axis=0) if len(picked) > 1 else picked[0]
    return out


def combine_static(mode: str, forecasts: dict[str, np.ndarray], members: list[str], weights: np.ndarray
                   ) -> np.ndarray:
    """The forecast [N, Co, H] of a static mode with weights [Co, M] (the median takes the members they name)."""
    if mode == "median":
        return median_forecast([forecasts[m] for m in members], np.asarray(weights) > 0)
    return combine(forecasts, members, weights)
