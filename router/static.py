"""Static combiners: the same weights for every window, from out-of-fold errors.

They are the baselines a learned router must beat, and the fall-back when it
does not. Each maps the members' out-of-fold MSE per output channel to one
weight per member and channel; members a channel's sanity gate blocked get
no weight there:

- ``equal``: the allowed members, equally weighted;
- ``inverse_error``: weights proportional to 1 / OOF MSE;
- ``best_single``: the member with the lowest OOF MSE alone;
- ``top_k``: the members within ``tolerance`` (relative) of the best OOF MSE,
  equally weighted (the forecast-combination puzzle: a plain mean of the few
  good members is hard to beat).

References:
    Claeskens, Magnus, Vasnev & Wang, "The forecast combination puzzle: a
    simple theoretical explanation", IJF 2016.
"""

from __future__ import annotations

import numpy as np

STATIC_MODES = ("equal", "inverse_error", "best_single", "top_k")
TOP_K_TOLERANCE = 0.05


def static_weights(err: np.ndarray, mode: str, mask: np.ndarray | None = None,
                   tolerance: float = TOP_K_TOLERANCE) -> np.ndarray:
    """Weights per channel and member from out-of-fold errors.

    Args:
        err: OOF MSE [Co, M] (scaled units), per output channel and member.
        mode: one of :data:`STATIC_MODES`.
        mask: [Co, M] bool, the members each channel may use (None: all).
        tolerance: ``top_k``'s relative margin over the best error.

    Returns:
        [Co, M] non-negative weights, each row summing to one.
    """
    err = np.asarray(err, dtype=np.float64)
    if err.ndim != 2 or err.shape[1] == 0:
        raise ValueError(f"`err` must be [channels, members] with at least one member; got shape {err.shape}.")
    allowed = np.ones(err.shape, bool) if mask is None else np.asarray(mask, bool)
    if not allowed.any(axis=1).all():
        raise ValueError("every channel needs at least one allowed member.")
    masked = np.where(allowed, err, np.inf)
    best = masked.min(axis=1, keepdims=True)
    if mode == "equal":
        w = allowed.astype(np.float64)
    elif mode == "inverse_error":
        w = np.where(allowed, 1.0 / np.maximum(err, 1e-12), 0.0)
    elif mode == "best_single":
        w = np.zeros(err.shape)
        w[np.arange(err.shape[0]), np.argmin(masked, axis=1)] = 1.0
    elif mode == "top_k":
        w = (allowed & (masked <= best * (1.0 + tolerance))).astype(np.float64)
    else:
        raise ValueError(f"`mode` must be one of {', '.join(STATIC_MODES)}; got {mode!r}.")
    return w / w.sum(axis=1, keepdims=True)


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
