"""Static combiners: equal weights, inverse validation error, best single.

They are the baselines a learned router must beat, and the fall-back when it
does not. Each maps validation errors to one weight per member (the same for
every window and channel).
"""

from __future__ import annotations

import numpy as np

STATIC_MODES = ("equal", "inverse_error", "best_single")


def static_weights(val_mse: dict[str, float], mode: str) -> dict[str, float]:
    """Weights over members from their validation MSE.

    Args:
        val_mse: member name -> validation MSE (scaled units).
        mode: "equal", "inverse_error" or "best_single".

    Returns:
        member name -> non-negative weight; the weights sum to one.
    """
    names = list(val_mse)
    if not names:
        raise ValueError("no members to combine")
    err = np.array([val_mse[n] for n in names], dtype=np.float64)
    if mode == "equal":
        w = np.full(len(names), 1.0 / len(names))
    elif mode == "inverse_error":
        inv = 1.0 / np.maximum(err, 1e-12)
        w = inv / inv.sum()
    elif mode == "best_single":
        w = np.zeros(len(names))
        w[int(np.argmin(err))] = 1.0
    else:
        raise ValueError(f"`mode` must be one of {', '.join(STATIC_MODES)}; got {mode!r}.")
    return {n: float(x) for n, x in zip(names, w, strict=True)}


def combine(forecasts: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted mean of member forecasts, each [N, C, H] -> [N, C, H]."""
    out = None
    for name, w in weights.items():
        if w == 0.0:
            continue
        term = forecasts[name].astype(np.float32) * np.float32(w)
        out = term if out is None else out + term
    assert out is not None, "every weight is zero"
    return out
