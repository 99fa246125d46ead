"""Synthetic series shared by the ARIMA / ETS / parallel tests (no files, seeded)."""

from __future__ import annotations

import numpy as np

PERIOD = 12


def _ar2_noise(n: int, seed: int, burn_in: int = 100) -> np.ndarray:
    """AR(2) noise u (phi = 0.6, 0.25, innovations N(0, 0.5^2)), [burn_in + n]; the first burn_in values warm it up."""
    rng = np.random.default_rng(seed)
    eps = rng.normal(scale=0.5, size=n + burn_in)
    u = np.zeros(n + burn_in)
    for t in range(2, n + burn_in):
        u[t] = 0.6 * u[t - 1] + 0.25 * u[t - 2] + eps[t]
    return u


def ar2_seasonal(n: int, seed: int = 0) -> np.ndarray:
    """AR(2) noise (phi = 0.6, 0.25) plus a fixed period-12 cycle, [n] float64."""
    return _ar2_noise(n, seed)[100:] + 2.0 * np.sin(2 * np.pi * np.arange(n) / PERIOD)


def sarima_like(n: int, seed: int = 0) -> np.ndarray:
    """y_t = y_{t-12} + u_t, u AR(2) (phi = 0.6, 0.25): seasonal differencing plus AR(2) is the true model."""
    u = _ar2_noise(n, seed)
    y = 2.0 * np.sin(2 * np.pi * np.arange(n) / PERIOD) + u[100:]
    for t in range(PERIOD, n):
        y[t] = y[t - PERIOD] + u[100 + t]
    return y


def seasonal_noise(n: int, seed: int = 1) -> np.ndarray:
    """A slowly wandering level, a period-12 cycle and white noise, [n] float64."""
    rng = np.random.default_rng(seed)
    level = np.cumsum(rng.normal(scale=0.05, size=n))
    return level + 2.0 * np.sin(2 * np.pi * np.arange(n) / PERIOD) + rng.normal(scale=0.5, size=n)


def snaive_mse(context: np.ndarray, target: np.ndarray, period: int = PERIOD) -> float:
    """MSE of seasonal naive on windows context [N, L], target [N, H]."""
    h = target.shape[1]
    forecast = context[:, -period:][:, np.arange(h) % period]
    return float(np.mean((forecast - target) ** 2))
