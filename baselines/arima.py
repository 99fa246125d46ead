"""ARIMA member: orders chosen once per channel, forecasts by an exact Kalman filter.

Fit (once, per channel, on the last ``max_train_points`` scaled training
points):

1. Seasonal differencing ``y_t - y_{t-s}`` at the dominant period ``s`` (when
   ``2 <= s <= context_length / 2``) is a candidate; whether to use it is
   decided on validation windows (``seasonal_differencing="auto"``), or by
   the OCSB test when there is no validation part.
2. Regular differencing ``d`` (0..``max_d``) by the KPSS test (``pmdarima.ndiffs``).
3. ``pmdarima.auto_arima`` (non-seasonal, stepwise) chooses ``(p, q)`` and
   whether a mean is kept, and estimates the parameters, on the differenced
   series. Seasonal ``auto_arima`` with ``m=24`` is far too slow for a laptop.

Forecast (any batch of windows ``[N, C, L]``, no refit): each window is
differenced, the ARMA part is run through the Kalman filter with the fixed
parameters, the stationary initialisation and the state space form that
statsmodels' ``SARIMAX`` uses (Harvey form), then projected ``H`` steps and
integrated back. The filter's covariances and gains do not depend on the data,
so they are computed once per channel and only the state mean is updated for
all N windows at once (a loop over time, never over windows). With diffuse
initial differencing states (statsmodels' default) this is exactly
statsmodels' ``ARIMA(window, order=(p, d, q), seasonal_order=(0, D, 0, s),
trend=...).filter(params).forecast(H)``; the tests check that to 1e-6.

A channel that cannot be fitted (constant, too short, every candidate model
failed) falls back to seasonal naive, logged and recorded in
``channel_status_``.

References:
    Hyndman & Khandakar, "Automatic time series forecasting: the forecast
    package for R", JSS 2008 (stepwise order search); Durbin & Koopman, "Time
    Series Analysis by State Space Methods", 2nd ed., 2012 (Kalman filter,
    sections 3.4 and 5.7); Harvey, "Forecasting, structural time series
    models and the Kalman filter", 1989 (ARMA state space form).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Self

import numpy as np

from baselines.per_channel import FALLBACK, ChannelFallback, PerChannelMember, guarded_fit, refit_points
from kernel.contract import Segment, TaskSpec, as_segments, as_values, gapped_values, longest_segment
from kernel.protocol import windows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArimaChannel:
    """The fitted model of one channel: (1-B)^d (1-B^s)^D y_t = mu + ARMA(p, q).

    Attributes:
        d: regular differences.
        seasonal_diff: seasonal differences D (0 or 1).
        period: s, the seasonal lag (0 when D = 0).
        mu: mean of the differenced series (0 when no mean is kept).
        has_mean: whether the model keeps a mean (only when d = D = 0).
        ar: AR coefficients phi_1..phi_p (y_t = phi_1 y_{t-1} + ... convention).
        ma: MA coefficients theta_1..theta_q.
        sigma2: innovation variance.
    """

    d: int
    seasonal_diff: int
    period: int
    mu: float
    has_mean: bool
    ar: np.ndarray = field(repr=False)
    ma: np.ndarray = field(repr=False)
    sigma2: float

    @property
    def order(self) -> str:
        text = f"({len(self.ar)},{self.d},{len(self.ma)})"
        if self.seasonal_diff:
            text += f"x(0,{self.seasonal_diff},0,{self.period})"
        return text + (" with mean" if self.has_mean else "")

    @property
    def n_lost(self) -> int:
        """Observations consumed by differencing."""
        return self.d + self.seasonal_diff * self.period

    def to_statsmodels(self) -> tuple[dict[str, Any], np.ndarray]:
        """The same model as ``statsmodels.tsa.arima.model.ARIMA`` keyword arguments and params."""
        kwargs = {
            "order": (len(self.ar), self.d, len(self.ma)),
            "seasonal_order": (0, self.seasonal_diff, 0, self.period) if self.seasonal_diff else (0, 0, 0, 0),
            "trend": "c" if self.has_mean else "n",
        }
        params = ([self.mu] if self.has_mean else []) + list(self.ar) + list(self.ma) + [self.sigma2]
        return kwargs, np.asarray(params, dtype=np.float64)


def difference_polynomial(d: int, seasonal_diff: int, period: int) -> np.ndarray:
    """Coefficients c_0..c_k of (1-B)^d (1-B^s)^D, c_0 = 1."""
    poly = np.array([1.0])
    for _ in range(d):
        poly = np.convolve(poly, [1.0, -1.0])
    for _ in range(seasonal_diff):
        seasonal = np.zeros(period + 1)
        seasonal[0], seasonal[period] = 1.0, -1.0
        poly = np.convolve(poly, seasonal)
    return poly


def _state_space(ar: np.ndarray, ma: np.ndarray, sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    """Harvey form of ARMA(p, q), as in SARIMAX: transition T [r, r], R R' sigma2 [r, r]."""
    r = max(len(ar), len(ma) + 1)
    transition = np.zeros((r, r))
    transition[: len(ar), 0] = ar
    transition[np.arange(r - 1), np.arange(1, r)] = 1.0
    selection = np.zeros(r)
    selection[0] = 1.0
    selection[1 : len(ma) + 1] = ma
    return transition, sigma2 * np.outer(selection, selection)


def kalman_gains(model: ArimaChannel, n_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Data-independent part of the Kalman filter of the ARMA part.

    Starts from the stationary state covariance (discrete Lyapunov equation),
    as statsmodels does for a stationary ARMA.

    Returns:
        transition T [r, r], gains K [n_steps, r] (K_t = T P_t Z' / F_t) and the
        prediction-error variances F [n_steps].
    """
    from scipy.linalg import solve_discrete_lyapunov

    transition, rqr = _state_space(model.ar, model.ma, model.sigma2)
    cov = solve_discrete_lyapunov(transition, rqr) if transition.any() else rqr.copy()
    r = transition.shape[0]
    gains = np.empty((n_steps, r))
    variances = np.empty(n_steps)
    for t in range(n_steps):
        variances[t] = cov[0, 0]
        gains[t] = transition @ cov[:, 0] / cov[0, 0]
        cov = transition @ cov @ transition.T - variances[t] * np.outer(gains[t], gains[t]) + rqr
    return transition, gains, variances


def forecast_windows(model: ArimaChannel, context: np.ndarray, horizon: int) -> np.ndarray:
    """Forecast every window with the fixed model: context [N, L] -> [N, H] (float64).

    Differencing, Kalman filter over the differenced window (vectorised over
    the N windows), H-step projection of the state, integration.
    """
    y = np.asarray(context, dtype=np.float64)
    n_windows, length = y.shape
    poly = difference_polynomial(model.d, model.seasonal_diff, model.period)
    lost = len(poly) - 1
    w = y[:, lost:].copy()  # [N, L - lost]: the differenced window
    for k in range(1, lost + 1):
        if poly[k] != 0.0:
            w += poly[k] * y[:, lost - k : length - k]
    w -= model.mu
    transition, gains, _ = kalman_gains(model, w.shape[1])
    state = np.zeros((n_windows, transition.shape[0]))  # predicted state a_t [N, r]
    for t in range(w.shape[1]):
        innovation = w[:, t] - state[:, 0]  # [N]
        state = state @ transition.T + innovation[:, None] * gains[t]
    diff_forecast = np.empty((n_windows, horizon))  # forecasts of the differenced series
    for h in range(horizon):
        diff_forecast[:, h] = state[:, 0] + model.mu
        state = state @ transition.T
    if lost == 0:
        return diff_forecast
    extended = np.concatenate([y, np.empty((n_windows, horizon))], axis=1)  # [N, L + H]
    for h in range(horizon):
        t = length + h
        value = diff_forecast[:, h].copy()
        for k in range(1, lost + 1):
            if poly[k] != 0.0:
                value -= poly[k] * extended[:, t - k]
        extended[:, t] = value
    return extended[:, length:]


# ----------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class _Settings:
    """Everything a worker needs to fit one channel (picklable)."""

    max_train_points: int
    max_p: int
    max_q: int
    max_d: int
    seasonal_differencing: str
    with_mean: bool
    information_criterion: str
    maxiter: int
    val_windows: int
    context_length: int
    horizon: int
    period: int  # 0: no seasonal candidate


def _fit_order(y: np.ndarray, seasonal_diff: int, s: _Settings) -> ArimaChannel:
    """Difference ``y`` and let auto_arima choose and fit the ARMA part."""
    import pmdarima as pm

    w = y[s.period :] - y[: -s.period] if seasonal_diff else y
    d = int(pm.arima.ndiffs(w, test="kpss", max_d=s.max_d)) if s.max_d > 0 else 0
    w = np.diff(w, n=d) if d else w
    keep_mean = s.with_mean and d == 0 and seasonal_diff == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = pm.auto_arima(
            w,
            d=0,
            seasonal=False,
            stepwise=True,
            start_p=min(2, s.max_p),
            start_q=min(2, s.max_q),
            max_p=s.max_p,
            max_q=s.max_q,
            with_intercept="auto" if keep_mean else False,
            information_criterion=s.information_criterion,
            maxiter=s.maxiter,
            suppress_warnings=True,
            error_action="ignore",
        )
    return _channel_from(fitted.arima_res_, d, seasonal_diff, s.period)


def _refit_order(y: np.ndarray, fixed: dict[str, Any], s: _Settings) -> ArimaChannel:
    """Re-estimate the parameters of the orders in ``fixed`` (a frozen copy's refit: no order search)."""
    import pmdarima as pm

    period = fixed["period"]
    w = y[period:] - y[:-period] if fixed["seasonal_diff"] else y
    w = np.diff(w, n=fixed["d"]) if fixed["d"] else w
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if np.isnan(w).any():  # holes between training segments: the Kalman filter skips missing rows exactly
            from statsmodels.tsa.statespace.sarimax import SARIMAX

            w = w[np.argmax(~np.isnan(w)):]
            result = SARIMAX(w, order=(fixed["p"], 0, fixed["q"]), trend="c" if fixed["has_mean"] else None
                             ).fit(method="lbfgs", maxiter=s.maxiter, disp=False)
            return _channel_from(result, fixed["d"], fixed["seasonal_diff"], period)
        fitted = pm.ARIMA(order=(fixed["p"], 0, fixed["q"]), with_intercept=fixed["has_mean"],
                          maxiter=s.maxiter, suppress_warnings=True).fit(w)
    return _channel_from(fitted.arima_res_, fixed["d"], fixed["seasonal_diff"], period)


def _channel_from(res: Any, d: int, seasonal_diff: int, period: int) -> ArimaChannel:
    """An :class:`ArimaChannel` from a fitted statsmodels SARIMAX result of the differenced series."""
    names = list(res.model.param_names)
    params = np.asarray(res.params, dtype=np.float64)
    ar = np.array([params[i] for i, n in enumerate(names) if n.startswith("ar.L")])
    ma = np.array([params[i] for i, n in enumerate(names) if n.startswith("ma.L")])
    intercept = float(params[names.index("intercept")]) if "intercept" in names else 0.0
    # SARIMAX's 'intercept' c enters as y_t = c + phi_1 y_{t-1} + ...; the mean is c / (1 - sum phi).
    mu = intercept / (1.0 - ar.sum()) if intercept else 0.0
    return ArimaChannel(
        d=d,
        seasonal_diff=seasonal_diff,
        period=period if seasonal_diff else 0,
        mu=float(mu),
        has_mean="intercept" in names,
        ar=ar,
        ma=ma,
        sigma2=float(params[names.index("sigma2")]),
    )


def _val_mse(model: ArimaChannel, val: np.ndarray, s: _Settings) -> float:
    context, target = windows(val[:, None], s.context_length, s.horizon)  # [N, 1, L], [N, 1, H]
    pick = np.unique(np.linspace(0, len(context) - 1, min(s.val_windows, len(context))).astype(int))
    forecast = forecast_windows(model, context[pick, 0], s.horizon)
    return float(np.mean((forecast - target[pick, 0]) ** 2))


def _fit_channel(task: tuple[int, np.ndarray, np.ndarray | None, Any], s: _Settings) -> dict[str, Any]:
    """Fit one channel; never raises: failures come back as a 'fallback' status."""
    j, y, val, fixed = task

    def fit(y: np.ndarray, status: dict[str, Any]) -> None:
        if fixed == FALLBACK:
            raise ChannelFallback("fell back in the fit this refit copies")
        observed = int(np.count_nonzero(~np.isnan(y)))
        need = 50 if fixed is None else refit_points(
            fixed["p"] + fixed["q"] + fixed["has_mean"] + 1, fixed["d"] + fixed["seasonal_diff"] * fixed["period"])
        if observed < need:
            raise ChannelFallback(f"too short ({observed} training points, need {need})")
        if fixed is not None:
            model = _refit_order(y, fixed, s)
            status.update(order=model.order, model=model, selected_by="fixed (refit of a chosen order)")
            return
        seasonal_ok = s.period >= 2 and 2 * s.period <= s.context_length and len(y) >= 4 * s.period + 50
        choices = {"never": [0], "always": [1], "auto": [0, 1]}[s.seasonal_differencing]
        if not seasonal_ok:
            choices = [0]
        models, errors = {}, {}
        for seasonal_diff in choices:
            try:
                models[seasonal_diff] = _fit_order(y, seasonal_diff, s)
            except Exception as exc:  # noqa: BLE001 - one failed candidate is not fatal
                errors[seasonal_diff] = f"{type(exc).__name__}: {exc}"
        if not models:
            raise ChannelFallback("every candidate failed (" + "; ".join(errors.values()) + ")")
        if len(models) > 1:
            val_ok = val is not None and len(val) >= s.context_length + s.horizon
            if val_ok:
                scores = {D: _val_mse(m, np.asarray(val, dtype=np.float64), s) for D, m in models.items()}
                status["val_mse"] = {f"D={D}": round(v, 6) for D, v in scores.items()}
                chosen = min(scores, key=scores.get)
                status["selected_by"] = "validation MSE"
            else:
                import pmdarima as pm

                chosen = min(1, int(pm.arima.nsdiffs(y, m=s.period, test="ocsb", max_D=1)))
                status["selected_by"] = "OCSB test"
        else:
            chosen = next(iter(models))
        model = models[chosen]
        if errors:
            status["reason"] = "; ".join(f"D={D} failed: {e}" for D, e in errors.items())
        status["order"] = model.order
        status["model"] = model

    return guarded_fit(j, y, s.max_train_points, fit, {"order": None}, gaps=fixed is not None)


# ----------------------------------------------------------------------------- member


class Arima(PerChannelMember):
    """Per-channel ARIMA, fitted once, forecasting windows with an exact Kalman filter.

    Args:
        max_train_points: auto_arima sees the last points of the training part.
        max_p: largest AR order searched.
        max_q: largest MA order searched.
        max_d: largest regular differencing order (KPSS test).
        seasonal_differencing: "auto" (validation decides; OCSB test without
            validation), "always" or "never" difference at the period.
        period: the seasonal lag; None takes the dominant detected period.
        with_mean: allow a mean when the series is not differenced.
        information_criterion: "aic", "aicc", "bic" or "hqic" for auto_arima.
        maxiter: optimiser iterations per candidate model.
        val_windows: validation windows (evenly spaced) that decide "auto".
        fallback_period: season of the seasonal-naive fallback (None: dominant).
    """

    name = "arima"
    horizon_agnostic = True

    def __init__(
        self,
        max_train_points: int = 2000,
        max_p: int = 2,
        max_q: int = 2,
        max_d: int = 1,
        seasonal_differencing: str = "auto",
        period: int | None = None,
        with_mean: bool = True,
        information_criterion: str = "aic",
        maxiter: int = 50,
        val_windows: int = 64,
        fallback_period: int | None = None,
    ) -> None:
        self.max_train_points = max_train_points
        self.max_p = max_p
        self.max_q = max_q
        self.max_d = max_d
        self.seasonal_differencing = seasonal_differencing
        self.period = period
        self.with_mean = with_mean
        self.information_criterion = information_criterion
        self.maxiter = maxiter
        self.val_windows = val_windows
        self.fallback_period = fallback_period

    def fit(self, train: np.ndarray | list[Segment], val: np.ndarray | Segment | None, spec: TaskSpec) -> Self:
        """Choose and fit one model per channel of ``train`` (scaled [T, C], or segments: the longest is used)."""
        if self.seasonal_differencing not in ("auto", "always", "never"):
            raise ValueError(
                "`seasonal_differencing` must be 'auto', 'always' or 'never'; "
                f"got {self.seasonal_differencing!r}."
            )
        segments = as_segments(train)
        series = np.asarray(longest_segment(segments).values, dtype=np.float64)
        if self.fixed_choices is not None and len(segments) > 1 and len(series) < self.max_train_points:
            # a fold fit: every training row at its true distance (docs/architecture.md, "Data flow"),
            # so that it sees nearly the data its refit will, not the longest stretch alone
            series = gapped_values(segments)
        if series.ndim != 2:
            raise ValueError(f"`train` must have shape [T, C]; got shape {series.shape}.")
        val = as_values(val)
        start = time.perf_counter()
        period = self.period or (spec.periods[0] if spec.periods else 0)
        settings = _Settings(
            max_train_points=self.max_train_points,
            max_p=self.max_p,
            max_q=self.max_q,
            max_d=self.max_d,
            seasonal_differencing=self.seasonal_differencing,
            with_mean=self.with_mean,
            information_criterion=self.information_criterion,
            maxiter=self.maxiter,
            val_windows=self.val_windows,
            context_length=spec.context_length,
            horizon=spec.horizon,
            period=int(period),
        )
        tasks = [(j, series[:, j], None if val is None else np.asarray(val)[:, j], self._fixed(j))
                 for j in range(series.shape[1])]
        self._fit_channels(partial(_fit_channel, s=settings), tasks, segments, spec, self.fallback_period)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _forecast_channel(self, model: ArimaChannel, context: np.ndarray) -> np.ndarray:
        return forecast_windows(model, context, self.horizon_)

    def _choice(self, model: ArimaChannel) -> dict[str, Any]:
        return {"d": model.d, "seasonal_diff": model.seasonal_diff, "period": model.period or 0,
                "p": len(model.ar), "q": len(model.ma), "has_mean": model.has_mean}
