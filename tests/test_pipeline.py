"""End to end through the CLI and the Python API on a synthetic series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid import artifacts
from hybrid.api import HybridForecaster
from hybrid.cli import main


def test_fit_forecast_evaluate(capsys, csv_path, fit_args):
    assert main(["fit", "--data", str(csv_path), *fit_args, "--horizon", "12", "24"]) == 0
    latest = Path("runs/latest")
    assert latest.is_symlink() and (latest / "manifest.json").is_file()
    manifest = json.loads((latest / "manifest.json").read_text())
    assert manifest["complete"] and manifest["horizons"] == [12, 24]
    assert manifest["periods"]["dominant"][0] == 24
    assert manifest["windows"]["24"]["test"] == manifest["split"]["test_end"] - manifest["split"]["test_start"] - 96 - 24 + 1
    for key in ("config", "versions", "fingerprint", "split", "members", "results", "cross_fit", "refit"):
        assert key in manifest
    assert set(manifest["members"]["linear"]["fit_seconds"]) == {"12", "24"}
    assert set(manifest["members"]["seasonal_naive"]["fit_seconds"]["24"]) == {"selection", "folds", "refit",
                                                                                "production"}
    assert set(manifest["members"]["linear"]["fit_seconds"]["24"]) == {"all stages"}  # fit_many: one pass
    assert manifest["cross_fit"]["classical"]["folds"] == 5
    capsys.readouterr()

    assert main(["forecast", "--horizon", "20"]) == 0
    out = pd.read_csv(latest / "forecast.csv", parse_dates=["timestamp"])
    bands = [f"{c}-{side}-{lv}" for c in ("c0", "c1") for lv in ("80", "95") for side in ("lo", "hi")]
    assert sorted(out.columns) == sorted(["timestamp", "c0", "c1", *bands]) and len(out) == 20
    for c in ("c0", "c1"):  # nested bands around the forecast
        assert (out[f"{c}-lo-95"] <= out[f"{c}-lo-80"]).all() and (out[f"{c}-lo-80"] <= out[c]).all()
        assert (out[c] <= out[f"{c}-hi-80"]).all() and (out[f"{c}-hi-80"] <= out[f"{c}-hi-95"]).all()
    last = pd.Timestamp(manifest["last_timestamp"])
    assert out["timestamp"].iloc[0] == last + pd.Timedelta(hours=1)
    assert (out["timestamp"].diff().dropna() == pd.Timedelta(hours=1)).all()
    # the forecast continues the seasonal pattern at the right level
    assert out["c0"].between(0, 25).all()
    capsys.readouterr()

    assert main(["evaluate", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["context_length"] == 96
    assert report["horizons"]["24"]["linear"]["mse"] < report["horizons"]["24"]["seasonal_naive"]["mse"]
    assert {"equal", "inverse_error", "best_single", "top_k", "hybrid"} <= set(report["horizons"]["12"])
    assert report["horizons"]["12"]["linear"]["oof_mse"] > 0
    assert set(report["horizons"]["12"]["hybrid"]["intervals"]) == {"80", "95"}


def test_forecast_with_newer_data_and_reload_is_exact(capsys, tmp_path, fit_args):
    from tests.conftest import make_frame

    frame = make_frame(n=900)
    frame.iloc[:800].to_csv(tmp_path / "old.csv", index=False)
    frame.to_csv(tmp_path / "new.csv", index=False)
    model = HybridForecaster(context_length=96, horizons=(24,), members=("seasonal_naive", "linear"),
                             sets=["runtime.progress=false"])
    model.fit(str(tmp_path / "old.csv"), run_dir=tmp_path / "run")
    first = model.forecast_result(24).frame
    again = HybridForecaster.load(tmp_path / "run").forecast_result(24).frame
    pd.testing.assert_frame_equal(first, again)
    newer = model.forecast_result(24, data=str(tmp_path / "new.csv")).frame
    assert newer["timestamp"].iloc[0] == frame["date"].iloc[-1] + pd.Timedelta(hours=1)
    assert not np.allclose(newer["c0"], first["c0"])
    bad = frame.rename(columns={"c1": "other"})
    bad.to_csv(tmp_path / "bad.csv", index=False)
    capsys.readouterr()
    assert main(["forecast", "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "bad.csv")]) == 2
    assert "same columns" in capsys.readouterr().err


def test_interrupted_fit_leaves_no_loadable_run(monkeypatch, csv_path, fit_args):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "save_member", boom)
    assert main(["fit", "--data", str(csv_path), *fit_args]) == 130
    runs = Path("runs")
    leftovers = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    assert leftovers == [], "an interrupted fit must leave neither a run, a staging folder nor runs/latest"


def test_features_ms_scores_target_only(csv_path, fit_args, tmp_path):
    assert main(["fit", "--data", str(csv_path), *fit_args, "--features", "MS", "--target", "c0",
                 "--run-dir", "ms"]) == 0
    assert main(["fit", "--data", str(csv_path), *fit_args, "--features", "S", "--target", "c0",
                 "--run-dir", "s"]) == 0
    ms = json.loads(Path("ms/manifest.json").read_text())
    s = json.loads(Path("s/manifest.json").read_text())
    assert ms["output_columns"] == ["c0"] and ms["columns"] == ["c0", "c1"]
    assert s["columns"] == ["c0"]
    # channel-independent members see the same target channel either way
    assert ms["results"]["24"]["metrics"]["seasonal_naive"]["test"]["mse"] == pytest.approx(
        s["results"]["24"]["metrics"]["seasonal_naive"]["test"]["mse"])
    assert list(ms["results"]["24"]["metrics"]["linear"]["test"]["per_channel"]) == ["c0"]
    assert main(["forecast", "--run-dir", "ms"]) == 0
    assert list(pd.read_csv("ms/forecast.csv").columns) == ["timestamp", "c0", "c0-lo-80", "c0-hi-80", "c0-lo-95",
                                                           "c0-hi-95"]


def test_set_overrides_reach_the_members(csv_path, fit_args):
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "a",
                 "--set", "seasonal_naive.period=12", "--set", "linear.alphas=[10.0]"]) == 0
    members = json.loads(Path("a/manifest.json").read_text())["results"]["24"]["members"]
    assert members["seasonal_naive"]["selection"]["period"] == 12
    assert members["linear"]["selection"]["alpha"] == 10.0 and members["linear"]["refit"]["alpha"] == 10.0


def test_default_dataset_builtin(capsys):
    assert main(["fit", "--horizon", "48", "--members", "seasonal_naive,linear", "--set", "runtime.progress=false"]) == 0
    manifest = json.loads(Path("runs/latest/manifest.json").read_text())
    assert manifest["dataset"] == "taylor" and manifest["n_rows"] == 4032
    assert manifest["periods"]["dominant"][0] == 48


def test_period_experts_join_for_each_detected_period(csv_path, fit_args, capsys):
    from hybrid.members import expand_period_experts

    assert expand_period_experts(("linear",), ("seasonal_naive", "ets"), (24, 168, 400), 512) == (
        "linear", "seasonal_naive@24", "seasonal_naive@168", "ets@24", "ets@168")
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "pe",
                 "--set", "task.period_experts=[seasonal_naive]"]) == 0
    manifest = json.loads(Path("pe/manifest.json").read_text())
    assert "seasonal_naive@24" in manifest["results"]["24"]["metrics"]
    assert manifest["results"]["24"]["members"]["seasonal_naive@24"]["selection"]["period"] == 24
    capsys.readouterr()
    assert main(["fit", "--data", str(csv_path), *fit_args, "--set", "task.period_experts=[linear]"]) == 2
    assert "takes no period" in capsys.readouterr().err
