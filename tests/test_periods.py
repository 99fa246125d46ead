import numpy as np

from kernel.data import DataConfig, load_series
from kernel.periods import detect_periods
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
