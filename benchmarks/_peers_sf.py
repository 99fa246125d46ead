"""statsforecast work per channel, in a module of its own so that joblib's workers can import it by name."""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np


def warm() -> None:
    """Import the library in a worker (so that no timed task pays for it)."""
    import statsforecast.models  # noqa: F401


def fit_one(name: str, season: int, y: np.ndarray) -> tuple[Any, float]:
    """``statsforecast.models.<name>(season_length=season)`` fitted on one channel's training values [T].

    Returns:
        The fitted model and its fit seconds.
    """
    import statsforecast.models as sfm  # the peer library: only in the peers environment

    model = getattr(sfm, name)(season_length=season)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(y.astype(np.float64))
    return model, time.perf_counter() - t0


def forward_one(model: Any, contexts: np.ndarray, horizon: int) -> np.ndarray:
    """One channel: the fitted model applied to each window's context [n, L] with ``forward`` (no refit) -> [n, H]."""
    out = np.empty((contexts.shape[0], horizon), dtype=np.float64)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for i, y in enumerate(contexts.astype(np.float64)):
            out[i] = model.forward(y=y, h=horizon)["mean"]
    return out


def describe(model: Any) -> str:
    """The model a fit settled on (``ETS(A,Ad,N)``, ``ARIMA(2,1,1)(0,1,0)[24]``), else the class name."""
    fitted = getattr(model, "model_", None)
    if isinstance(fitted, dict):
        if "method" in fitted:
            return str(fitted["method"])
        if "arma" in fitted:  # (p, q, P, Q, s, d, D)
            p, q, P, Q, s, d, D = list(fitted["arma"])[:7]
            return f"ARIMA({p},{d},{q})" + (f"({P},{D},{Q})[{s}]" if P or D or Q else "")
    return type(model).__name__
