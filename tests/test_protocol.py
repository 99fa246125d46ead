import numpy as np
import pytest

from kernel.data import DataConfig, load_series
from kernel.errors import HybridInputError
from kernel.protocol import Scaler, make_split, mse_mae, windows
from tests.conftest import shared_file


def test_etth1_standard_window_counts():
    series = load_series(str(shared_file("ETTh1.csv")), DataConfig())
    split = make_split(series.n_rows, 512, 96, kind="ett", freq=series.freq)
    assert (split.train_end, split.val_end, split.test_end) == (8640, 11520, 14400)
    counts = [split.n_windows(p, 512, 96) for p in ("train", "val", "test")]
    assert counts == [8033, 2785, 2785]
    ctx, tgt = windows(split.part(series.values, "test"), 512, 96)
    assert ctx.shape == (2785, 7, 512) and tgt.shape == (2785, 7, 96)


def test_ettm1_split_is_four_times_hourly():
    split = make_split(69680, 512, 96, kind="ett", freq="15min")
    assert (split.train_end, split.val_end, split.test_end) == (34560, 46080, 57600)
    assert split.val_start == 34560 - 512


def test_ratio_split_matches_the_custom_loader_convention():
    n = 7588  # exchange_rate
    split = make_split(n, 96, 96, kind="ratio")
    n_train, n_test = int(n * 0.7), int(n * 0.2)
    assert split.train_end == n_train
    assert split.val_end == n - n_test
    assert split.test_start == n - n_test - 96


def test_windows_are_zero_copy_and_aligned():
    part = np.arange(40, dtype=np.float32).reshape(20, 2)
    ctx, tgt = windows(part, 5, 3)
    assert ctx.shape == (13, 2, 5) and tgt.shape == (13, 2, 3)
    assert np.shares_memory(ctx, part) and np.shares_memory(tgt, part)
    # window i: context rows i..i+4, target rows i+5..i+7
    np.testing.assert_array_equal(ctx[4, 1], part[4:9, 1])
    np.testing.assert_array_equal(tgt[4, 0], part[9:12, 0])


def test_scaler_uses_train_only_and_survives_constant_channels():
    train = np.stack([np.arange(10.0), np.full(10, 7.0)], axis=1)
    scaler = Scaler.fit(train)
    assert scaler.mean[0] == pytest.approx(4.5)
    assert scaler.scale[1] == 1.0
    scaled = scaler.transform(np.vstack([train, [[100.0, 7.0]]]))
    assert np.isfinite(scaled).all()
    np.testing.assert_allclose(scaler.inverse(scaled), np.vstack([train, [[100.0, 7.0]]]), atol=1e-4)


def test_too_short_names_the_needed_length():
    with pytest.raises(HybridInputError, match=r"needs at least (\d+) rows") as info:
        make_split(300, 96, 96, kind="ratio")
    needed = int(info.value.args[0].split("needs at least ")[1].split()[0])
    make_split(needed, 96, 96, kind="ratio")  # exactly enough works
    with pytest.raises(HybridInputError):
        make_split(needed - 1, 96, 96, kind="ratio")


def test_metrics_average_over_every_element():
    f = np.zeros((3, 2, 4), np.float32)
    t = np.ones((3, 2, 4), np.float32)
    t[0, 0, 0] = 3.0
    mse, mae = mse_mae(f, t)
    assert mse == pytest.approx((23 + 9) / 24)
    assert mae == pytest.approx((23 + 3) / 24)


def test_weather_file_refused_by_default_and_read_as_published_with_the_benchmark_config():
    from hybrid.config import load_config

    path = shared_file("weather.csv.gz")
    with pytest.raises(HybridInputError, match="duplicate timestamps"):
        load_series(str(path), load_config("weather").data)
    series = load_series(str(path), load_config("weather", "weather-benchmark").data)
    assert series.n_rows == 52696 and len(series.columns) == 21 and series.freq == "10min"
    assert (series.values == -9999.0).sum() == 81  # the sentinels stay in as numbers (1 + 30 + 50)
