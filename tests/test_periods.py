import numpy as np

from kernel.data import DataConfig, load_series
from kernel.periods import autocorrelation, detect_periods
from tests.conftest import shared_file


def test_finds_planted_periods_strongest_first():
    rng = np.random.default_rng(0)
    t = np.arange(3000)
    x = 2.0 * np.sin(2 * np.pi * t / 24) + 1.0 * np.sin(2 * np.pi * t / 168) + 0.3 * rng.normal(size=t.size)
    periods = detect_periods(np.stack([x, x[::-1].copy()], axis=1), k=3)
    assert periods.dominant[:2] == (24, 168)
    assert all(p[0] == 24 for p in periods.per_channel)
    assert periods.strength[0] > 0.5


def test_trend_and_noise_are_not_periods():
    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.normal(size=(2000, 1)), axis=0)
    assert detect_periods(walk, k=3).dominant == ()
    assert detect_periods(np.linspace(0, 1, 500)[:, None], k=3).dominant == ()


def test_etth1_daily_period_first():
    series = load_series(str(shared_file("ETTh1.csv")), DataConfig())
    periods = detect_periods(series.values[:8640], k=3)
    assert periods.dominant[0] == 24


def _direct_acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """sum_t x[t] x[t + k] / sum_t x[t]^2 for one series, by plain sums (the definition)."""
    return np.array([(x[: len(x) - k] * x[k:]).sum() for k in range(max_lag + 1)]) / (x @ x)


def test_autocorrelation_is_the_linear_acf_along_any_axis():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4, 50))  # [N, C, L]
    x -= x.mean(-1, keepdims=True)
    got = autocorrelation(x, 30)
    assert got.shape == (3, 4, 31)
    want = np.stack([[_direct_acf(x[i, j], 30) for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert not np.allclose(got[0, 0, 1:], np.real(np.fft.ifft(np.abs(np.fft.fft(x[0, 0])) ** 2))[1:31] / (x[0, 0] @ x[0, 0]))
    np.testing.assert_allclose(autocorrelation(np.moveaxis(x, -1, 0), 30, axis=0), np.moveaxis(want, -1, 0), atol=1e-12)
    assert np.array_equal(autocorrelation(np.zeros((2, 10)), 3), np.zeros((2, 4)))  # no 0 / 0
    past = autocorrelation(x[0, :, :5], 8)  # lags past the length are 0
    assert past.shape == (4, 9) and np.array_equal(past[:, 5:], np.zeros((4, 4)))
    eps = autocorrelation(x[0], 3, eps=1.0)
    np.testing.assert_allclose(eps, want[0, :, :4] * ((x[0] ** 2).sum(-1) / ((x[0] ** 2).sum(-1) + 1.0))[:, None])
