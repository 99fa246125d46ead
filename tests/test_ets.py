"""ETS member: exact agreement with statsmodels (same params and initial states), fallback, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from baselines.ets import Ets, EtsChannel, forecast_windows
from hybrid.config import Config
from hybrid.members import make_member
from kernel.contract import TaskSpec
from kernel.protocol import windows
from tests._classical_data import PERIOD, seasonal_noise, snaive_mse

L, H = 96, 24
SMALL = dict(max_train_points=800, maxiter=100)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    y = seasonal_noise(1400)
    series = np.stack([y, np.full_like(y, -1.5)], axis=1)  # channel 1 is constant
    return {"train": series[:1000], "test": series[1000 - L :]}


@pytest.fixture(scope="module")
def fitted(data: dict[str, np.ndarray]) -> Ets:
    return Ets(**SMALL).fit(data["train"], None, TaskSpec(context_length=L, horizon=H, periods=(PERIOD,)))


def _error_against_statsmodels(model: EtsChannel, y: np.ndarray, ours: np.ndarray, horizon: int) -> float:
    """The largest relative error of ``ours`` against statsmodels' ETSModel with the same parameters and states."""
    level, trend, season = model.initial_states(y)
    worst = 0.0
    for i in range(len(y)):
        kwargs, params = model.to_statsmodels(level[i], trend[i], season[i])
        ref = ETSModel(y[i].astype(np.float64), **kwargs).smooth(params).forecast(horizon)
        worst = max(worst, float(np.max(np.abs(ours[i] - ref)) / np.max(np.abs(ref))))
    return worst


def test_fitted_member_matches_statsmodels(fitted: Ets, data: dict[str, np.ndarray]) -> None:
    model = fitted.models_[0]
    assert model is not None and model.period == PERIOD  # the season is clearly there
    context, _ = windows(data["test"], L, H)
    pick = [0, 101, len(context) - 1]
    ours = fitted.predict(context[pick])[:, 0].astype(np.float64)
    assert _error_against_statsmodels(model, context[pick, 0].astype(np.float64), ours, H) < 1e-6


@pytest.mark.parametrize(
    "model",
    [
        EtsChannel(0.5, 0.1, 0.2, 0.9, "add_damped", PERIOD, 24, 0),
        EtsChannel(0.3, 0.05, 0.0, 1.0, "add", 0, 24, 3),
        EtsChannel(0.7, 0.0, 0.1, 1.0, "none", PERIOD, 24, 2),
        EtsChannel(0.2, 0.0, 0.0, 1.0, "none", 0, 10, 0),
    ],
    ids=lambda m: m.label,
)
def test_recursion_matches_statsmodels(model: EtsChannel) -> None:
    rng = np.random.default_rng(5)
    y = np.cumsum(rng.normal(size=(3, L)), axis=1) * 0.3 + np.sin(2 * np.pi * np.arange(L) / PERIOD)
    assert _error_against_statsmodels(model, y, forecast_windows(model, y, 2 * H), 2 * H) < 1e-6


def test_shapes_status_and_constant_fallback(fitted: Ets, data: dict[str, np.ndarray]) -> None:
    context, _ = windows(data["test"], L, H)
    forecast = fitted.predict(context)
    assert forecast.shape == (len(context), 2, H) and forecast.dtype == np.float32
    ok, const = fitted.channel_status_
    assert ok["status"] == "ok" and ok["order"].startswith("ETS(A,")
    assert const["status"] == "fallback" and "constant" in const["reason"]
    np.testing.assert_array_equal(forecast[:, 1], -1.5)
    assert fitted.fit_seconds_ > 0


def test_horizon_agnostic_truncation(data: dict[str, np.ndarray]) -> None:
    assert Ets.horizon_agnostic
    train = data["train"][:, :1]
    short = Ets(**SMALL).fit(train, None, TaskSpec(L, H, periods=(PERIOD,)))
    long = Ets(**SMALL).fit(train, None, TaskSpec(L, 5 * H, periods=(PERIOD,)))
    context, _ = windows(data["test"][:, :1], L, 5 * H)
    np.testing.assert_allclose(long.predict(context)[..., :H], short.predict(context), rtol=1e-6, atol=1e-6)


def test_beats_seasonal_naive(fitted: Ets, data: dict[str, np.ndarray]) -> None:
    """Seasonal naive carries one cycle's noise; ETS averages it out."""
    context, target = windows(data["test"], L, H)
    ours = float(np.mean((fitted.predict(context)[:, 0] - target[:, 0]) ** 2))
    naive = snaive_mse(context[:, 0], target[:, 0])
    assert ours < 0.8 * naive, (ours, naive)


def test_period_expert_from_registry(data: dict[str, np.ndarray]) -> None:
    member = make_member(f"ets@{PERIOD}", Config())
    assert member.name == f"ets@{PERIOD}" and member.period == PERIOD
    member.max_train_points = 400
    member.fit(data["train"][:, :1], None, TaskSpec(L, H, periods=()))  # no detected period: the expert's own
    assert member.models_[0].period == PERIOD


def test_period_too_long_for_context_is_recorded(data: dict[str, np.ndarray]) -> None:
    member = Ets(period=L, **SMALL).fit(data["train"][:, :1], None, TaskSpec(L, H))
    assert member.models_[0].period == 0
    assert "does not fit twice" in member.channel_status_[0]["reason"]


def test_refit_of_a_fixed_form_needs_points_per_parameter_not_the_search_minimum() -> None:
    """A fold fit of a short quarterly series keeps its chosen seasonal form (before: 4 x season + 20 points)."""
    rng = np.random.default_rng(0)
    t = np.arange(60)
    y = (np.sin(2 * np.pi * t / 4) + 0.02 * t + 0.2 * rng.normal(size=60))[:, None]
    spec = TaskSpec(context_length=16, horizon=4, periods=(4,))
    selection = Ets(trends=("none",), maxiter=50).fit(y, None, spec)
    assert selection.channel_status_[0]["order"] == "ETS(A,N,A@4)"
    fold = selection.frozen().fit(y[:30], None, spec).channel_status_[0]  # alpha, gamma, level, 4 seasons: 7 x 3
    assert fold["status"] == "ok" and fold["order"] == "ETS(A,N,A@4)", fold["reason"]
    short = selection.frozen().fit(y[:17], None, spec).channel_status_[0]
    assert short["status"] == "fallback" and "need 21" in short["reason"]
