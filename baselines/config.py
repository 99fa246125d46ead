"""Config sections of the classical members (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeasonalNaiveConfig:
    period: int | None = None  # None: the dominant period found on the training part


@dataclass(frozen=True)
class LinearConfig:
    """Ridge map from the last L values to the next H (shared across channels)."""

    normalization: str = "revin"  # revin (window mean/std) | last (NLinear: subtract last value) | none
    alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)  # chosen on validation


@dataclass(frozen=True)
class ArimaConfig:
    max_train_points: int = 2000  # auto_arima sees the last points of the training part


@dataclass(frozen=True)
class EtsConfig:
    max_train_points: int = 4000  # ETS is fitted on the last points of the training part
