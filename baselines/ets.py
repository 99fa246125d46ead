"""ETS member: smoothing parameters learned once per channel, windows smoothed in batch.

Fit (once, per channel, on the last ``max_train_points`` scaled training
points): statsmodels ``ETSModel`` with additive error, trend none / additive
(damped by default) and season none / additive at the period, chosen by AIC.
Candidates are compared with the heuristic initialisation (fast), and the
chosen one is refitted with estimated initial states (``final_init``).
Errors and seasons are additive only: the members see standard-scaled values,
which are often negative, where multiplicative forms are undefined.

The season is the member's ``period`` (the period expert ``ets@24``) or the
dominant detected period, kept only when ``2 <= period <= context_length / 2``
(the window must hold at least two cycles to start the season).

Forecast (any batch of windows ``[N, C, L]``, no refit): the fitted
smoothing parameters (alpha, beta, gamma, phi) run the ETS(A, Ad, A)
recursion over each window, vectorised over the N windows, then the usual
H-step forecast. Initial states of each window come from the window itself
(our choice; the training states belong to another time). With block length
``m`` (the period, or ``init_block`` without a season) and ``K`` =
``init_cycles`` blocks at the start of the window (default: every complete
block of the window):

- level: mean of the first block;
- trend: (mean of block K - mean of block 1) / ((K - 1) m);
- season (chronological s_{-m} .. s_{-1}): the mean over the K blocks of each
  block minus its own mean.

These are statsmodels' ``_initialization_simple`` (Hyndman & Athanasopoulos,
FPP section 7.6) averaged over K cycles instead of two, which keeps the noise
of one cycle out of the season when gamma is small (on ETTh1, gamma is about
0.03: with two cycles the test MSE of channel HUFL was 40 % worse than a
per-window refit, with every cycle of the window 2 % worse). The recursion is exactly
statsmodels' ``ETSModel(window, ..., initialization_method="known",
initial_level=..., ...).smooth(params)``; the tests check it to 1e-6.

References:
    Hyndman, Koehler, Ord & Snyder, "Forecasting with Exponential Smoothing:
    The State Space Approach", Springer 2008 (ETS recursions, AIC selection).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Self

import numpy as np

from baselines.per_channel import FALLBACK, ChannelFallback, PerChannelMember, guarded_fit, refit_points
from kernel.contract import Segment, TaskSpec, as_segments, longest_segment

logger = logging.getLogger(__name__)

TREND_CHOICES = ("none", "add", "add_damped")


@dataclass(frozen=True)
class EtsChannel:
    """The fitted ETS(A, trend, season) model of one channel.

    Attributes:
        alpha, beta, gamma: smoothing of level, trend and season (error form:
            l_t = l_{t-1} + phi b_{t-1} + alpha e_t, b_t = phi b_{t-1} + beta e_t,
            s_t = s_{t-m} + gamma e_t).
        phi: damping (1 for an undamped trend).
        trend: "none", "add" or "add_damped".
        period: m, the season (0: no season).
        init_block: block length for the initial states without a season.
        init_cycles: K, blocks averaged for the initial states.
    """

    alpha: float
    beta: float
    gamma: float
    phi: float
    trend: str
    period: int
    init_block: int
    init_cycles: int

    @property
    def label(self) -> str:
        trend = {"none": "N", "add": "A", "add_damped": "Ad"}[self.trend]
        return f"ETS(A,{trend},{'A' if self.period else 'N'}{f'@{self.period}' if self.period else ''})"

    def initial_states(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Initial level [N], trend [N] and season [N, m] (chronological) of windows y [N, L]."""
        y = np.asarray(y, dtype=np.float64)
        m = self.period or self.init_block
        m = max(1, min(m, y.shape[1] // 2))
        k = y.shape[1] // m if self.init_cycles <= 0 else min(self.init_cycles, y.shape[1] // m)
        k = max(2, k)
        blocks = y[:, : k * m].reshape(y.shape[0], k, m)  # [N, K, m]
        means = blocks.mean(axis=2)  # [N, K]
        level = means[:, 0]
        trend = (means[:, -1] - means[:, 0]) / ((k - 1) * m) if self.trend != "none" else np.zeros(len(y))
        season = (blocks - means[:, :, None]).mean(axis=1) if self.period else np.zeros((len(y), 0))
        return level, trend, season

    def to_statsmodels(self, level: float, trend: float, season: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """``ETSModel`` keyword arguments (known initial states) and the smoothing params."""
        kwargs: dict[str, Any] = {
            "error": "add",
            "trend": None if self.trend == "none" else "add",
            "damped_trend": self.trend == "add_damped",
            "seasonal": "add" if self.period else None,
            "seasonal_periods": self.period or None,
            "initialization_method": "known",
            "initial_level": float(level),
        }
        params = [self.alpha]
        if self.trend != "none":
            kwargs["initial_trend"] = float(trend)
            params.append(self.beta)
        if self.period:
            kwargs["initial_seasonal"] = np.asarray(season, dtype=np.float64)
            params.append(self.gamma)
        if self.trend == "add_damped":
            params.append(self.phi)
        return kwargs, np.asarray(params, dtype=np.float64)


def forecast_windows(model: EtsChannel, context: np.ndarray, horizon: int) -> np.ndarray:
    """Smooth every window with the fixed model and forecast: context [N, L] -> [N, H] (float64)."""
    y = np.asarray(context, dtype=np.float64)
    n_windows, length = y.shape
    level, trend, season = model.initial_states(y)
    level, trend, season = level.copy(), trend.copy(), season.copy()  # season[:, k]: s at time k - m
    a, b, g, phi, m = model.alpha, model.beta, model.gamma, model.phi, model.period
    has_trend = model.trend != "none"
    for t in range(length):
        damped = phi * trend if has_trend else 0.0
        seasonal = season[:, t % m] if m else 0.0
        error = y[:, t] - (level + damped + seasonal)  # [N]
        level = level + damped + a * error
        if has_trend:
            trend = damped + b * error
        if m:
            season[:, t % m] = seasonal + g * error
    steps = np.arange(1, horizon + 1)
    forecast = np.repeat(level[:, None], horizon, axis=1)  # [N, H]
    if has_trend:
        weights = np.cumsum(phi**steps) if model.trend == "add_damped" else steps.astype(np.float64)
        forecast += trend[:, None] * weights
    if m:
        forecast += season[:, (length + steps - 1) % m]
    return forecast


# ----------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class _Settings:
    max_train_points: int
    trends: tuple[str, ...]
    period: int  # 0: no seasonal candidate
    force_season: bool  # period expert: the season is not optional
    selection_init: str
    final_init: str
    maxiter: int
    init_block: int
    init_cycles: int


def _fit_one(y: np.ndarray, trend: str, period: int, init: str, maxiter: int) -> Any:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    model = ETSModel(
        y,
        error="add",
        trend=None if trend == "none" else "add",
        damped_trend=trend == "add_damped",
        seasonal="add" if period else None,
        seasonal_periods=period or None,
        initialization_method=init,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(disp=False, maxiter=maxiter)


def _channel_model(result: Any, trend: str, period: int, s: _Settings) -> EtsChannel:
    p = dict(zip(result.model.param_names, np.asarray(result.params, dtype=np.float64), strict=True))
    return EtsChannel(
        alpha=float(p["smoothing_level"]),
        beta=float(p.get("smoothing_trend", 0.0)),
        gamma=float(p.get("smoothing_seasonal", 0.0)),
        phi=float(p.get("damping_trend", 1.0)),
        trend=trend,
        period=period,
        init_block=s.init_block,
        init_cycles=s.init_cycles,
    )


def _fit_channel(task: tuple[int, np.ndarray, Any], s: _Settings) -> dict[str, Any]:
    """Select and fit one channel by AIC; never raises (failures -> 'fallback')."""
    j, y, fixed = task

    def fit(y: np.ndarray, status: dict[str, Any]) -> None:
        if fixed == FALLBACK:
            raise ChannelFallback("fell back in the fit this refit copies")
        if fixed is not None:  # a frozen copy's refit: the chosen form, parameters estimated again
            trend, period = fixed
            smoothing = 1 + (trend != "none") + (trend == "add_damped") + (period > 0)
            need = refit_points(smoothing + 1 + (trend != "none") + period)  # ... and the initial states
            if len(y) < need:
                raise ChannelFallback(f"too short ({len(y)} training points for ETS {trend}@{period}, need {need})")
            model = _channel_model(_fit_one(y, trend, period, s.final_init, s.maxiter), trend, period, s)
            status.update(model=model, order=model.label)
            return
        seasons = [s.period] if s.force_season else [0] + ([s.period] if s.period else [])
        if len(y) < 4 * max(seasons) + 20:
            raise ChannelFallback(f"too short ({len(y)} training points for a season of {max(seasons)})")
        aic: dict[tuple[str, int], float] = {}
        failures = []
        for period in seasons:
            for trend in s.trends:
                try:
                    res = _fit_one(y, trend, period, s.selection_init, s.maxiter)
                    if np.isfinite(res.aic):
                        aic[(trend, period)] = float(res.aic)
                except Exception as exc:  # noqa: BLE001 - one failed candidate is not fatal
                    failures.append(f"{trend}/{period}: {type(exc).__name__}: {exc}")
        if not aic:
            raise ChannelFallback("every candidate failed (" + "; ".join(failures) + ")")
        trend, period = min(aic, key=aic.get)
        result = _fit_one(y, trend, period, s.final_init, s.maxiter)
        notes = []
        if s.final_init != s.selection_init and not result.mle_retvals.get("converged", True):
            notes.append(f"the {s.final_init} refit did not converge; kept the {s.selection_init} fit")
            result = _fit_one(y, trend, period, s.selection_init, s.maxiter)
        if not result.mle_retvals.get("converged", True):
            notes.append("optimiser did not converge (parameters used as found)")
        model = _channel_model(result, trend, period, s)
        status.update(model=model, order=model.label, aic={f"{t}@{p}": round(v, 2) for (t, p), v in aic.items()})
        status["reason"] = "; ".join(notes + failures)

    return guarded_fit(j, y, s.max_train_points, fit, {"model": None})


# ----------------------------------------------------------------------------- member


class Ets(PerChannelMember):
    """Per-channel ETS, fitted once, smoothing any batch of windows.

    Args:
        period: the season of a period expert ("ets@24"); None takes the
            dominant detected period as a candidate (AIC decides).
        max_train_points: ETS is fitted on the last points of the training part.
        trends: trend candidates among "none", "add", "add_damped".
        selection_init: initialisation while comparing candidates ("heuristic" is fast).
        final_init: initialisation of the chosen model's final fit.
        maxiter: optimiser iterations per fit.
        init_block: block length of a window's initial states without a season.
        init_cycles: blocks (cycles) averaged for a window's initial states; 0: every
            complete cycle of the window.
        fallback_period: season of the seasonal-naive fallback (None: dominant).
    """

    name = "ets"
    horizon_agnostic = True

    def __init__(
        self,
        period: int | None = None,
        max_train_points: int = 4000,
        trends: tuple[str, ...] = ("none", "add_damped"),
        selection_init: str = "heuristic",
        final_init: str = "estimated",
        maxiter: int = 200,
        init_block: int = 24,
        init_cycles: int = 0,
        fallback_period: int | None = None,
    ) -> None:
        self.period = period
        self.max_train_points = max_train_points
        self.trends = trends
        self.selection_init = selection_init
        self.final_init = final_init
        self.maxiter = maxiter
        self.init_block = init_block
        self.init_cycles = init_cycles
        self.fallback_period = fallback_period

    def fit(self, train: np.ndarray | list[Segment], val: object, spec: TaskSpec) -> Self:
        """Choose (by AIC) and fit one model per channel of ``train`` (scaled [T, C], or segments: the longest)."""
        bad = [t for t in self.trends if t not in TREND_CHOICES]
        if bad or not self.trends:
            raise ValueError(f"`trends` must be a non-empty subset of {TREND_CHOICES}; got {self.trends!r}.")
        for arg in ("selection_init", "final_init"):
            if getattr(self, arg) not in ("heuristic", "estimated"):
                raise ValueError(f"`{arg}` must be 'heuristic' or 'estimated'; got {getattr(self, arg)!r}.")
        segments = as_segments(train)
        series = np.asarray(longest_segment(segments).values, dtype=np.float64)
        if series.ndim != 2:
            raise ValueError(f"`train` must have shape [T, C]; got shape {series.shape}.")
        start = time.perf_counter()
        period = self.period or (spec.periods[0] if spec.periods else 0)
        self.period_note_ = ""
        if period and not 2 <= period <= spec.context_length // 2:
            self.period_note_ = (
                f"period {period} does not fit twice in context_length {spec.context_length}; no season"
            )
            logger.warning("%s: %s.", self.name, self.period_note_)
            period = 0
        settings = _Settings(
            max_train_points=self.max_train_points,
            trends=tuple(self.trends),
            period=int(period),
            force_season=self.period is not None and period > 0,
            selection_init=self.selection_init,
            final_init=self.final_init,
            maxiter=self.maxiter,
            init_block=self.init_block,
            init_cycles=self.init_cycles,
        )
        tasks = [(j, series[:, j], self._fixed(j)) for j in range(series.shape[1])]
        self._fit_channels(partial(_fit_channel, s=settings), tasks, segments, spec,
                           self.fallback_period or self.period, note=self.period_note_)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _forecast_channel(self, model: EtsChannel, context: np.ndarray) -> np.ndarray:
        return forecast_windows(model, context, self.horizon_)

    def _choice(self, model: EtsChannel) -> tuple[str, int]:
        return (model.trend, model.period)
