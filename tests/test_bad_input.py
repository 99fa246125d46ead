"""Every bad-input case: one clear line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.cli import main
from hybrid.config import config_from_dict
from kernel.data import Series, load_series
from tests.conftest import make_frame


def run_fit(capsys, data: Path | str, *extra: str) -> tuple[int, str]:
    rc = main(["fit", "--data", str(data), "--context-length", "96", "--horizon", "24",
               "--members", "seasonal_naive,linear", "--set", "runtime.progress=false", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    return rc, errors[0] if errors else ""


def assert_rejected(capsys, data, *patterns: str, extra: tuple[str, ...] = ()) -> None:
    rc, line = run_fit(capsys, data, *extra)
    assert rc == 2, line
    for pattern in patterns:
        assert pattern in line, line
    assert not Path("runs").exists(), "a rejected fit must write nothing"


def fitted_series(capsys, data: Path, *sets: str) -> Series:
    """Fit with ``--set`` options into ``run/``; the cleaned series that reached the run.

    The series is loaded again with the run's own data settings (from its manifest), and its fingerprint
    must be the one the run recorded, so the values checked are the values the members were fitted on.
    """
    rc, line = run_fit(capsys, data, "--run-dir", "run", *[a for s in sets for a in ("--set", s)])
    assert rc == 0, line
    manifest = json.loads(Path("run/manifest.json").read_text())
    series = load_series(str(data), config_from_dict(manifest["config"]).data)
    assert series.fingerprint() == manifest["fingerprint"] and series.n_rows == manifest["n_rows"]
    return series


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_missing_file(capsys, tmp_path):
    assert_rejected(capsys, tmp_path / "nope.csv", "data file not found", "--data")


def test_unreadable_file(capsys, tmp_path):
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(b"this is not gzip at all")
    assert_rejected(capsys, path, "cannot read", "CSV")


def test_no_time_column(capsys, tmp_path):
    frame = make_frame().drop(columns=["date"])
    assert_rejected(capsys, write(tmp_path, frame), "no time column", "data.time_column")


def test_non_numeric_columns_are_named(capsys, tmp_path):
    frame = make_frame()
    frame["label"] = "abc"
    frame["c1"] = frame["c1"].astype(object)
    frame.loc[5, "c1"] = "n/a?"
    assert_rejected(capsys, write(tmp_path, frame), "non-numeric columns", "c1", "label")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -9999.0])
def test_nan_inf_and_sentinels_name_column_and_row(capsys, tmp_path, bad):
    frame = make_frame()
    frame.loc[37, "c1"] = bad
    assert_rejected(capsys, write(tmp_path, frame), "'c1'", "row 37", "data.missing")


def frame_with_holes() -> pd.DataFrame:
    frame = make_frame()
    frame.loc[37, "c1"] = np.nan
    frame.loc[38, "c0"] = -9999  # a sentinel
    return frame


@pytest.mark.parametrize("how", ["interpolate", "ffill"])
def test_missing_values_are_filled(capsys, tmp_path, how):
    frame = frame_with_holes()
    series = fitted_series(capsys, write(tmp_path, frame), f"data.missing={how}")
    assert series.n_rows == len(frame)
    c0, c1 = frame["c0"].to_numpy(), frame["c1"].to_numpy()
    want = {"interpolate": ((c1[36] + c1[38]) / 2, (c0[37] + c0[39]) / 2), "ffill": (c1[36], c0[37])}[how]
    np.testing.assert_allclose([series.values[37, 1], series.values[38, 0]], want, rtol=1e-6)
    np.testing.assert_array_equal(series.values[:37], frame[["c0", "c1"]].to_numpy(np.float32)[:37])  # the rest as read


def test_rows_with_missing_values_can_be_dropped(capsys, tmp_path):
    frame = frame_with_holes()
    # the dropped rows leave a gap in the timestamps, which must be allowed
    series = fitted_series(capsys, write(tmp_path, frame), "data.missing=drop", "data.gaps=allow")
    assert series.n_rows == len(frame) - 2
    assert not series.timestamps.isin(pd.to_datetime(frame["date"].iloc[[37, 38]])).any()
    np.testing.assert_array_equal(series.values, frame[["c0", "c1"]].to_numpy(np.float32)[np.r_[0:37, 39:len(frame)]])


@pytest.mark.parametrize("how", ["first", "mean"])
def test_duplicate_timestamps(capsys, tmp_path, how):
    frame = make_frame()
    again = frame.iloc[[49]].assign(c0=frame["c0"].iloc[49] + 1.0, c1=frame["c1"].iloc[49] - 2.0)  # other values
    frame = pd.concat([frame.iloc[:50], again, frame.iloc[50:]], ignore_index=True)
    path = write(tmp_path, frame)
    assert_rejected(capsys, path, "duplicate timestamps", "data.duplicates")
    series = fitted_series(capsys, path, f"data.duplicates={how}")
    assert series.n_rows == len(frame) - 1
    first = frame[["c0", "c1"]].to_numpy()[49]
    want = first if how == "first" else first + np.array([0.5, -1.0])
    np.testing.assert_allclose(series.values[49], want, rtol=1e-6)
    np.testing.assert_allclose(series.values[50], frame[["c0", "c1"]].to_numpy()[51], rtol=1e-6)


def test_unsorted_timestamps_are_sorted_with_a_warning(capsys, tmp_path):
    frame = make_frame()
    frame = frame.iloc[np.r_[1, 0, 2 : len(frame)]]
    rc = main(["fit", "--data", str(write(tmp_path, frame)), "--context-length", "96", "--horizon", "24",
               "--members", "seasonal_naive,linear", "--set", "runtime.progress=false"])
    assert rc == 0
    assert "sorted" in capsys.readouterr().err


def test_irregular_gaps(capsys, tmp_path):
    full = make_frame()
    frame = full.drop(index=[100, 101, 102])
    path = write(tmp_path, frame)
    assert_rejected(capsys, path, "irregular timestamps", "data.gaps")
    series = fitted_series(capsys, path, "data.gaps=interpolate")
    assert series.n_rows == len(full) and (series.timestamps == pd.DatetimeIndex(full["date"])).all()
    before, after = full[["c0", "c1"]].to_numpy()[[99, 103]]
    want = before + np.arange(1, 4)[:, None] / 4 * (after - before)  # the straight line over the missing hours
    np.testing.assert_allclose(series.values[100:103], want, rtol=1e-6)


def test_too_short_for_context_and_horizon(capsys, tmp_path):
    path = write(tmp_path, make_frame(n=200))
    assert_rejected(capsys, path, "series too short", "needs at least", "--context-length")


def test_constant_channel_warns_and_scores_finite(capsys, tmp_path):
    frame = make_frame()
    frame["flat"] = 5.0
    rc = main(["fit", "--data", str(write(tmp_path, frame)), "--context-length", "96", "--horizon", "24",
               "--members", "seasonal_naive,linear", "--set", "runtime.progress=false", "--run-dir", "run"])
    assert rc == 0
    assert "constant" in capsys.readouterr().err
    import json

    metrics = json.loads(Path("run/manifest.json").read_text())["results"]["24"]["metrics"]
    assert all(np.isfinite(s["test"]["mse"]) for s in metrics.values())
    assert all(np.isfinite(s["oof"]["mse"]) for s in metrics.values())


def test_unknown_config_key_in_set_and_file(capsys, tmp_path, csv_path):
    assert_rejected(capsys, csv_path, "unknown config key core.nope", "valid keys", extra=("--set", "core.nope=1"))
    cfg = tmp_path / "extra.yaml"
    cfg.write_text("task:\n  horizon: 96\n")
    assert_rejected(capsys, csv_path, "unknown config key task.horizon", "horizons", extra=("--config", str(cfg)))
    cfg.write_text("tasks:\n  seed: 1\n")
    assert_rejected(capsys, csv_path, "unknown config section 'tasks'", extra=("--config", str(cfg)))


def test_wrong_type_in_config(capsys, csv_path):
    assert_rejected(capsys, csv_path, "task.context_length must be an integer or auto; got 'abc'",
                    extra=("--set", "task.context_length=abc"))


def test_unknown_deployment_check(capsys, csv_path):
    assert_rejected(capsys, csv_path, "router.check must be one of shrinkage, pooled, one_se, robust",
                    extra=("--set", "router.check=loose"))


def test_a_bad_choice_is_refused_before_any_member_fits(capsys, csv_path, monkeypatch):
    """Issue 33: config values are checked when the config loads, not after the classical members fitted."""
    import hybrid.pipeline

    def no_fit(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a member was fitted before the bad config value was refused")

    monkeypatch.setattr(hybrid.pipeline, "fit_member_stages", no_fit)
    assert_rejected(capsys, csv_path, "core.schedule must be one of onecycle, cosine, constant; got 'bogus'",
                    extra=("--members", "arima,ets,linear", "--set", "core.schedule=bogus"))


def test_unknown_member(capsys, csv_path):
    assert_rejected(capsys, csv_path, "unknown member 'prophet'", extra=("--members", "linear,prophet"))


def test_unknown_target(capsys, csv_path):
    assert_rejected(capsys, csv_path, "target 'OT' is not a column", extra=("--target", "OT"))


def test_horizon_not_fitted(capsys, csv_path):
    rc, line = run_fit(capsys, csv_path)
    assert rc == 0, line
    assert main(["forecast", "--horizon", "48"]) == 2
    err = capsys.readouterr().err
    assert "horizon 48 is longer than any fitted horizon (24)" in err


def test_forecast_without_a_run(capsys):
    assert main(["forecast"]) == 2
    assert "no run found" in capsys.readouterr().err


def test_gzip_and_long_layouts_load(capsys, tmp_path):
    frame = make_frame()
    gz = tmp_path / "series.csv.gz"
    with gzip.open(gz, "wt") as fh:
        frame.to_csv(fh, index=False)
    rc, line = run_fit(capsys, gz)
    assert rc == 0, line
    long = frame.melt(id_vars="date", var_name="unique_id", value_name="y").rename(columns={"date": "ds"})
    rc, line = run_fit(capsys, write(tmp_path, long, "long.csv"), "--run-dir", "long-run")
    assert rc == 0, line
    import json

    assert json.loads(Path("long-run/manifest.json").read_text())["columns"] == ["c0", "c1"]
