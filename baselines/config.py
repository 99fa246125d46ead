"""Config sections of the classical members (no torch import here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Normalization = Literal["revin", "last", "none"]
DlinearNormalization = Literal["revin", "none", "last"]
SeasonalDifferencing = Literal["auto", "always", "never"]
InformationCriterion = Literal["aic", "aicc", "bic", "hqic"]
SelectionInit = Literal["heuristic", "estimated"]
FinalInit = Literal["estimated", "heuristic"]


@dataclass(frozen=True)
class SeasonalNaiveConfig:
    period: int | None = None  # season length; null: the dominant period found on the training part


@dataclass(frozen=True)
class LinearConfig:
    """Ridge map from the last L values to the next H (shared across channels)."""

    normalization: Normalization = "revin"  # member `linear`: revin (window mean/std) | last | none
    alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)  # per-sample ridge strengths, chosen on val
    moving_avg: int = 25  # member `dlinear`: odd kernel of the trend moving average
    dlinear_normalization: DlinearNormalization = "revin"  # `dlinear`: revin (follows level shifts) | none (paper) | last


@dataclass(frozen=True)
class ArimaConfig:
    """Per-channel ARIMA: orders by auto_arima once, windows forecast by a Kalman filter."""

    max_train_points: int = 2000  # auto_arima sees the last points of the training part
    max_p: int = 2  # largest AR order of the stepwise search (3 doubles the fit time on ETTh1 for no val gain)
    max_q: int = 2  # largest MA order of the stepwise search
    max_d: int = 1  # largest regular differencing order (KPSS test decides)
    seasonal_differencing: SeasonalDifferencing = "auto"  # auto (val MSE decides; OCSB test without val) | always | never
    period: int | None = None  # seasonal lag for differencing; None: the dominant period found on train
    with_mean: bool = True  # allow a mean when the series is not differenced
    information_criterion: InformationCriterion = "aic"  # aic | aicc | bic | hqic, for the order search
    maxiter: int = 50  # optimiser iterations per candidate model (bounds the fit time)
    val_windows: int = 64  # evenly spaced validation windows that decide seasonal_differencing=auto
    fallback_period: int | None = None  # season of the seasonal-naive fallback; None: the dominant period


@dataclass(frozen=True)
class EtsConfig:
    """Per-channel ETS (additive error): model by AIC once, windows smoothed with fixed parameters."""

    max_train_points: int = 4000  # ETS is fitted on the last points of the training part
    period: int | None = None  # season; None: the dominant period found on train ("ets@24" overrides)
    trends: tuple[str, ...] = ("none", "add_damped")  # trend candidates: none | add | add_damped
    selection_init: SelectionInit = "heuristic"  # initial states while comparing candidates by AIC (fast)
    final_init: FinalInit = "estimated"  # initial states of the chosen model's final fit: estimated | heuristic
    maxiter: int = 200  # optimiser iterations per fit
    init_block: int = 24  # block length of a window's initial level/trend when there is no season
    init_cycles: int = 0  # cycles (blocks) averaged for a window's initial states; 0: every complete cycle
    fallback_period: int | None = None  # season of the seasonal-naive fallback; None: the member's period
