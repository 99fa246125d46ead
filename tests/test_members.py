"""Each classical member's own maths (the contract every member obeys: tests/test_contract.py)."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.linear import RidgeLinear, moving_average
from baselines.naive import Drift, SeasonalNaive, WindowMean
from hybrid.config import load_config
from hybrid.members import make_member
from kernel.contract import TaskSpec
from kernel.protocol import windows


def seasonal_series(n: int = 700, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    return (np.sin(2 * np.pi * t / 24 + np.arange(channels)) + 0.1 * rng.normal(size=(n, channels))).astype(np.float32)


def test_seasonal_naive_repeats_the_last_cycle():
    ctx = np.arange(2 * 10, dtype=np.float32).reshape(1, 2, 10)
    m = SeasonalNaive(period=4).fit(None, None, TaskSpec(10, 9))
    np.testing.assert_array_equal(m.predict(ctx)[0, 0], [6, 7, 8, 9, 6, 7, 8, 9, 6])
    auto = SeasonalNaive().fit(None, None, TaskSpec(10, 3, periods=(3,)))
    np.testing.assert_array_equal(auto.predict(ctx)[0, 1], [17, 18, 19])
    too_long = SeasonalNaive(period=50).fit(None, None, TaskSpec(10, 2))
    assert too_long.period_ == 1


def test_drift_and_mean():
    ctx = np.array([[[1.0, 2.0, 3.0, 4.0]]], dtype=np.float32)
    spec = TaskSpec(4, 3)
    np.testing.assert_allclose(Drift().fit(None, None, spec).predict(ctx)[0, 0], [5, 6, 7])
    np.testing.assert_allclose(WindowMean().fit(None, None, spec).predict(ctx)[0, 0], [2.5] * 3)


def test_ridge_recovers_a_linear_process():
    """An AR(2) is exactly a linear map of the window: the ridge must find it."""
    rng = np.random.default_rng(1)
    n = 20000
    y = np.zeros(n)
    for t in range(2, n):
        y[t] = 1.2 * y[t - 1] - 0.5 * y[t - 2] + rng.normal()
    values = y[:, None].astype(np.float32)
    spec = TaskSpec(context_length=16, horizon=1)
    m = RidgeLinear(normalization="none", alphas=(1e-6,)).fit(values, None, spec)
    w = m.weights_[:, 0]
    assert w[-1] == pytest.approx(1.2, abs=0.05) and w[-2] == pytest.approx(-0.5, abs=0.05)
    assert np.abs(w[:-2]).max() < 0.04


def test_ridge_chooses_alpha_on_validation():
    values = seasonal_series(n=900, channels=1)
    spec = TaskSpec(context_length=48, horizon=12)
    alphas = (1e-4, 1.0, 1e4)
    m = RidgeLinear(alphas=alphas).fit(values[:600], values[552:], spec)
    # each candidate scored independently: a fit with that alpha alone, its forecasts of every validation window
    ctx, tgt = windows(values[552:], 48, 12)
    val = {a: float(np.mean((RidgeLinear(alphas=(a,)).fit(values[:600], None, spec).predict(ctx) - tgt) ** 2))
           for a in alphas}
    assert m.val_mse_by_alpha_ == pytest.approx(val, rel=1e-5)
    assert m.alpha_ == 1e-4 == min(val, key=val.get)  # not the middle candidate, the default without validation
    assert val[1.0] > 1.03 * val[1e-4] and val[1e4] > 10 * val[1e-4]
    np.testing.assert_allclose(m.predict(ctx), RidgeLinear(alphas=(1e-4,)).fit(values[:600], None, spec).predict(ctx),
                               rtol=1e-5, atol=1e-6)


def test_moving_average_keeps_constants_and_smooths():
    x = np.full((2, 30), 3.0)
    np.testing.assert_allclose(moving_average(x, 5), x)
    ramp = np.arange(30, dtype=float)[None]
    np.testing.assert_allclose(moving_average(ramp, 5)[0, 5:25], ramp[0, 5:25])


def test_runtime_progress_off_silences_the_core_bar_too():
    pytest.importorskip("torch")
    quiet = make_member("timellm", load_config(sets=["runtime.progress=false"]))
    assert quiet.config.progress is False
    assert make_member("timellm", load_config()).config.progress is True
