"""The Python API on pandas DataFrames (issue 32): wide (a DatetimeIndex) and long (``unique_id, ds, y``) in,
a long forecast frame out, nothing written into the working directory, int horizon keys."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.api import HybridForecaster
from kernel.data import DataConfig, load_series
from tests.conftest import make_frame

H = 12
MEMBERS = ("seasonal_naive", "linear")
BANDS = ["hybrid-lo-80", "hybrid-hi-80", "hybrid-lo-95", "hybrid-hi-95"]
COLUMNS = ["unique_id", "ds", "hybrid", *BANDS, *MEMBERS]


def model(*sets: str) -> HybridForecaster:
    """Cheap settings: two fast members, a short context, one short horizon."""
    return HybridForecaster(context_length=48, horizons=(H,), members=MEMBERS,
                            sets=["runtime.progress=false", "runtime.n_jobs=1", *sets])


def wide_frame(n: int = 600) -> pd.DataFrame:
    """Two hourly channels c0, c1 on a DatetimeIndex named ``date``."""
    return make_frame(n=n).set_index("date")


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: whatever a fit writes there shows."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def assert_mixes_its_members(fc: pd.DataFrame, weights: dict[str, np.ndarray], channels: list[str]) -> None:
    """``hybrid`` is sum_m w_m member_m per channel, with weights >= 0 summing to 1, so it lies between the
    members' min and max."""
    w = np.stack([weights[m] for m in MEMBERS], axis=1)  # [C, M]
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    for c, channel in enumerate(channels):
        rows = fc[fc["unique_id"] == channel]
        mix = rows[list(MEMBERS)].to_numpy() @ w[c]
        np.testing.assert_allclose(rows["hybrid"].to_numpy(), mix, rtol=1e-5, atol=1e-5)
    low, high = fc[list(MEMBERS)].min(axis=1), fc[list(MEMBERS)].max(axis=1)
    assert ((fc["hybrid"] >= low - 1e-6) & (fc["hybrid"] <= high + 1e-6)).all()


def test_wide_frame_round_trip(empty_cwd):
    frame = wide_frame()
    before = frame.copy()
    fitted = model().fit(frame)

    fc = fitted.forecast(H)

    assert list(fc.columns) == COLUMNS
    assert len(fc) == 2 * H and list(fc["unique_id"].unique()) == ["c0", "c1"]
    future = pd.date_range(frame.index[-1], periods=H + 1, freq="h")[1:]
    for channel in ("c0", "c1"):
        assert (pd.DatetimeIndex(fc.loc[fc["unique_id"] == channel, "ds"]) == future).all()
    assert ((fc["hybrid-lo-95"] <= fc["hybrid-lo-80"]) & (fc["hybrid-lo-80"] <= fc["hybrid"])
            & (fc["hybrid"] <= fc["hybrid-hi-80"]) & (fc["hybrid-hi-80"] <= fc["hybrid-hi-95"])).all()
    assert_mixes_its_members(fc, fitted.forecast_result(H).channel_weights, ["c0", "c1"])
    # a shorter horizon is the head of each channel's forecast
    short = fitted.forecast(5)
    pd.testing.assert_frame_equal(short, fc.groupby("unique_id").head(5).reset_index(drop=True))

    report = fitted.evaluate()
    assert list(report["horizons"]) == [H] and report["dataset"] == "dataframe"
    assert report["horizons"][H]["linear"]["test"]["mse"] > 0
    assert fitted.manifest_["source"] == "dataframe" and fitted.manifest_["n_rows"] == len(frame)
    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is not touched
    assert not Path(fitted.run_dir_).is_relative_to(empty_cwd)
    assert list(empty_cwd.iterdir()) == []  # nothing written into the working directory


def test_the_private_run_goes_with_the_object(empty_cwd):
    fitted = model().fit(wide_frame())
    run_dir = Path(fitted.run_dir_)
    assert (run_dir / "manifest.json").is_file()
    del fitted
    gc.collect()
    assert not run_dir.exists()
    assert list(empty_cwd.iterdir()) == []


def test_an_explicit_run_dir_is_kept_and_reloads(empty_cwd, tmp_path):
    fitted = model().fit(wide_frame(), run_dir=tmp_path / "kept")
    again = HybridForecaster.load(tmp_path / "kept")
    pd.testing.assert_frame_equal(fitted.forecast(H), again.forecast(H))
    assert again.evaluate()["horizons"].keys() == {H}


def test_long_frame_on_one_time_axis_round_trip(empty_cwd):
    wide = wide_frame()
    long = (wide.rename_axis("ds").reset_index()
            .melt(id_vars="ds", var_name="unique_id", value_name="y")[["unique_id", "ds", "y"]])
    fitted = model("data.name=shops").fit(long)

    fc = fitted.forecast(H)

    assert list(fc.columns) == COLUMNS and sorted(fc["unique_id"].unique()) == ["c0", "c1"]
    assert fitted.manifest_["dataset"] == "shops"
    # the same series as the wide frame: the same fit, the same forecast
    pd.testing.assert_frame_equal(fc, model().fit(wide).forecast(H))
    assert_mixes_its_members(fc, fitted.forecast_result(H).channel_weights, ["c0", "c1"])
    assert list(empty_cwd.iterdir()) == []


def test_long_frame_of_series_of_different_lengths_is_a_panel(empty_cwd):
    rng = np.random.default_rng(1)
    spans = {"north": ("2022-01-01", 300), "south": ("2022-02-10 05:00", 420)}
    long = pd.concat([pd.DataFrame({"unique_id": uid, "ds": pd.date_range(start, periods=n, freq="h"),
                                    "y": 50 + 10 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 1, n)})
                      for uid, (start, n) in spans.items()], ignore_index=True)
    fitted = model().fit(long)

    fc = fitted.forecast(H)

    assert fitted.manifest_["layout"] == "panel" and fitted.manifest_["dataset"] == "dataframe"
    assert list(fc.columns) == COLUMNS and len(fc) == 2 * H
    for uid, (start, n) in spans.items():
        future = pd.date_range(start, periods=n + H, freq="h")[n:]  # after the series' own end
        assert (pd.DatetimeIndex(fc.loc[fc["unique_id"] == uid, "ds"]) == future).all()
    low, high = fc[list(MEMBERS)].min(axis=1), fc[list(MEMBERS)].max(axis=1)
    assert ((fc["hybrid"] >= low - 1e-6) & (fc["hybrid"] <= high + 1e-6)).all()
    assert list(fitted.evaluate()["horizons"]) == [H]
    assert list(empty_cwd.iterdir()) == []


def test_load_series_reads_a_frame_like_its_csv(tmp_path):
    frame = make_frame(n=300)
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    from_csv = load_series(str(path), DataConfig())
    for source in (frame, frame.set_index("date"), frame.set_index("date").rename_axis(None)):
        series = load_series(source, DataConfig())
        assert series.name == "dataframe" and series.columns == ("c0", "c1")
        assert series.fingerprint() == from_csv.fingerprint()
        assert (series.timestamps == from_csv.timestamps).all()
