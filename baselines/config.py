"""Config sections of the classical members (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeasonalNaiveConfig:
    period: int | None = None  # None: the dominant period found on the training part


@dataclass(frozen=True)
class LinearConfig:
    """Ridge map from the last L values to the next H (shared across channels)."""

    normalization: str = "revin"  # member `linear`: revin (window mean/std) | last | none
    alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)  # per-sample ridge strengths, chosen on val
    moving_avg: int = 25  # member `dlinear`: odd kernel of the trend moving average


@dataclass(frozen=True)
class ArimaConfig:
    max_train_points: int = 2000  # auto_arima sees the last points of the training part


@dataclass(frozen=True)
class EtsConfig:
    max_train_points: int = 4000  # ETS is fitted on the last points of the training part
