"""ARIMA member: exact agreement with statsmodels, fallback, horizon truncation, accuracy."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from statsmodels.tsa.arima.model import ARIMA

from baselines.arima import Arima, ArimaChannel, forecast_windows
from kernel.contract import TaskSpec
from kernel.protocol import windows
from tests._classical_data import PERIOD, sarima_like, snaive_mse

L, H = 96, 24
SMALL = dict(max_train_points=300, max_p=2, max_q=1, max_d=0, maxiter=30, val_windows=16)


def _rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    y = sarima_like(1400)
    series = np.stack([y, np.full_like(y, 3.0)], axis=1)  # channel 1 is constant
    return {"train": series[:800], "val": series[800 - L : 1000], "test": series[1000 - L :]}


@pytest.fixture(scope="module")
def fitted(data: dict[str, np.ndarray]) -> Arima:
    spec = TaskSpec(context_length=L, horizon=H, periods=(PERIOD,))
    return Arima(**SMALL).fit(data["train"], data["val"], spec)


def test_fitted_member_matches_statsmodels(fitted: Arima, data: dict[str, np.ndarray]) -> None:
    model = fitted.models_[0]
    assert model is not None
    context, _ = windows(data["test"], L, H)
    pick = [0, 37, len(context) - 1]
    ours = fitted.predict(context[pick])[:, 0]  # [3, H] float32
    kwargs, params = model.to_statsmodels()
    for row, i in enumerate(pick):
        window = context[i, 0].astype(np.float64)
        ref = ARIMA(window, **kwargs).filter(params).forecast(H)
        assert _rel_err(ours[row].astype(np.float64), ref) < 1e-6, model.order


@pytest.mark.parametrize(
    "model",
    [
        ArimaChannel(0, 0, 0, 0.3, True, np.array([0.6, -0.2]), np.array([0.4]), 0.5),
        ArimaChannel(1, 0, 0, 0.0, False, np.array([0.5]), np.array([0.3, 0.1]), 1.0),
        ArimaChannel(0, 1, 12, 0.0, False, np.array([0.7, -0.1]), np.array([-0.3]), 1.0),
        ArimaChannel(1, 1, 12, 0.0, False, np.array([]), np.array([-0.5]), 1.0),
    ],
    ids=lambda m: m.order,
)
def test_kalman_forecast_matches_statsmodels(model: ArimaChannel) -> None:
    """Differencing (regular and seasonal) is integrated back exactly as statsmodels does it."""
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(size=(3, L)), axis=1) + np.sin(2 * np.pi * np.arange(L) / PERIOD)
    ours = forecast_windows(model, y, 3 * H)
    kwargs, params = model.to_statsmodels()
    for i in range(3):
        ref = ARIMA(y[i], **kwargs).filter(params).forecast(3 * H)
        assert _rel_err(ours[i], ref) < 1e-6


def test_shapes_status_and_constant_fallback(fitted: Arima, data: dict[str, np.ndarray], caplog) -> None:
    context, _ = windows(data["test"], L, H)
    forecast = fitted.predict(context)
    assert forecast.shape == (len(context), 2, H) and forecast.dtype == np.float32
    assert np.isfinite(forecast).all()
    ok, const = fitted.channel_status_
    assert ok["status"] == "ok" and ok["order"]
    assert const["status"] == "fallback" and "constant" in const["reason"]
    np.testing.assert_array_equal(forecast[:, 1], 3.0)  # seasonal naive of a constant channel
    assert fitted.fit_seconds_ > 0


def test_fallback_is_logged(data: dict[str, np.ndarray], caplog) -> None:
    spec = TaskSpec(context_length=L, horizon=H, periods=(PERIOD,))
    with caplog.at_level(logging.WARNING, logger="baselines.arima"):
        Arima(**SMALL).fit(data["train"][:, [1]], None, spec)
    assert any("falls back to seasonal naive" in r.getMessage() for r in caplog.records)


def test_horizon_agnostic_truncation(data: dict[str, np.ndarray]) -> None:
    """With the seasonal choice fixed, a fit at a long horizon truncates to the short one."""
    assert Arima.horizon_agnostic
    train = data["train"][:, :1]
    short = Arima(**SMALL, seasonal_differencing="always").fit(train, None, TaskSpec(L, H, periods=(PERIOD,)))
    long = Arima(**SMALL, seasonal_differencing="always").fit(train, None, TaskSpec(L, 4 * H, periods=(PERIOD,)))
    context, _ = windows(data["test"][:, :1], L, 4 * H)
    np.testing.assert_allclose(long.predict(context)[..., :H], short.predict(context), rtol=1e-6, atol=1e-6)


def test_beats_seasonal_naive_on_seasonal_ar2(fitted: Arima, data: dict[str, np.ndarray]) -> None:
    """The true model is (2,0,0)x(0,1,0,12): over one cycle ahead the AR part must clearly help."""
    context, target = windows(data["test"], L, H)
    ours = float(np.mean((fitted.predict(context)[:, 0, :PERIOD] - target[:, 0, :PERIOD]) ** 2))
    naive = snaive_mse(context[:, 0], target[:, 0, :PERIOD])
    assert fitted.channel_status_[0]["order"].endswith(f"x(0,1,0,{PERIOD})")  # validation chose D=1
    assert ours < 0.8 * naive, (ours, naive)


def test_rejects_bad_context(fitted: Arima) -> None:
    with pytest.raises(ValueError, match="context"):
        fitted.predict(np.zeros((2, 2, L + 1), dtype=np.float32))


def _ar1(n: int, phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.zeros(n)
    for t in range(1, n):
        y[t] = phi * y[t - 1] + rng.normal()
    return y


def test_fold_fit_uses_both_sides_of_its_hole_and_keeps_the_chosen_order() -> None:
    """A fold fit of a short series: each side of the hole is under the search's 50 points, together they are not.

    Before, the fold fit took the longest side alone and fell back to seasonal naive while the refit (more data)
    fitted the real ARIMA; the out-of-fold forecasts then described a member the deployment never meets.
    """
    from kernel.contract import Segment

    y = _ar1(150, 0.8, seed=3)[:, None]
    spec = TaskSpec(context_length=12, horizon=4)
    selection = Arima(max_p=1, max_q=0, max_d=0, maxiter=50).fit(y, None, spec)
    assert selection.channel_status_[0]["status"] == "ok" and selection.channel_status_[0]["order"].startswith("(1,0,0)")
    fold = selection.frozen().fit([Segment(y[:40], 0), Segment(y[75:115], 75)], None, spec)
    status = fold.channel_status_[0]
    assert status["status"] == "ok", status["reason"]
    assert status["order"] == selection.channel_status_[0]["order"]
    # the filter skipped the hole: the AR coefficient is the one of the data, and equals statsmodels' fit of the
    # same rows with the hole marked missing
    gapped = y[:115, 0].copy()
    gapped[40:75] = np.nan
    ref = ARIMA(gapped, order=(1, 0, 0), trend="c" if fold.models_[0].has_mean else "n").fit()
    assert abs(fold.models_[0].ar[0] - ref.params[list(ref.model.param_names).index("ar.L1")]) < 0.02
    assert 0.6 < fold.models_[0].ar[0] < 0.95


def test_refit_of_a_fixed_order_needs_points_per_parameter_not_the_search_minimum() -> None:
    y = _ar1(150, 0.8, seed=4)[:, None]
    spec = TaskSpec(context_length=12, horizon=4)
    selection = Arima(max_p=1, max_q=0, max_d=0, maxiter=50).fit(y, None, spec)
    assert selection.frozen().fit(y[:30], None, spec).channel_status_[0]["status"] == "ok"  # AR(1), sigma2: 20 at least
    too_short = selection.frozen().fit(y[:19], None, spec).channel_status_[0]
    assert too_short["status"] == "fallback" and "need 20" in too_short["reason"]
    # a search (no order chosen yet) still needs 50
    assert Arima(max_p=1, max_q=0, max_d=0).fit(y[:45], None, spec).channel_status_[0]["status"] == "fallback"
