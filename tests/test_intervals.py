"""Conformal prediction intervals from out-of-fold errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.cli import main
from hybrid.intervals import check_levels, conformal_quantile, fit_bands, interval_score
from kernel.errors import HybridInputError


def ar1_csv(path: Path, n: int = 4000, phi: float = 0.7, seed: int = 0) -> Path:
    """Two independent AR(1) channels with unit Gaussian innovations."""
    rng = np.random.default_rng(seed)
    eps = rng.normal(size=(n + 200, 2))
    y = np.zeros_like(eps)
    for t in range(1, len(y)):
        y[t] = phi * y[t - 1] + eps[t]
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=n, freq="h"), "a": y[200:, 0], "b": y[200:, 1]})
    frame.to_csv(path, index=False)
    return path


def test_intervals_cover_close_to_nominal_on_unseen_windows(tmp_path: Path, capsys):
    data = ar1_csv(tmp_path / "ar1.csv")
    assert main(["fit", "--data", str(data), "--context-length", "48", "--horizon", "12", "--members",
                 "linear,mean", "--level", "80", "95", "--set", "runtime.progress=false", "--run-dir", "run"]) == 0
    entry = json.loads(Path("run/manifest.json").read_text())["results"]["12"]
    bands = entry["metrics"]["hybrid"]["test"]["intervals"]
    for level, nominal in (("80", 0.80), ("95", 0.95)):
        assert abs(bands[level]["coverage"] - nominal) < 0.04, (level, bands[level])
        # out of fold (leave one fold out) the bands were already close to nominal
        oof = entry["bands"]["hybrid"]["oof"][f"{float(level)}"]
        assert abs(oof["coverage"] - nominal) < 0.04
    assert bands["95"]["width"] > bands["80"]["width"] > 0
    # the best h-step forecast of an AR(1) errs with variance sum_{i<h} phi^(2i) (unit innovations): the ideal
    # 80 % band is 2 x 1.2816 of its std wide, in the training-scaled units the metrics use
    train_std = float(np.std(pd.read_csv(data)["a"][:2800]))
    ideal = np.mean([2 * 1.2816 * np.sqrt(sum(0.49**i for i in range(h))) for h in range(1, 13)]) / train_std
    assert bands["80"]["width"] == pytest.approx(ideal, rel=0.15)
    capsys.readouterr()
    assert main(["forecast", "--run-dir", "run"]) == 0
    frame = pd.read_csv("run/forecast.csv")
    assert {"a-lo-80", "a-hi-80", "a-lo-95", "a-hi-95"} <= set(frame.columns)
    assert (frame["a-hi-95"] - frame["a-lo-95"] > frame["a-hi-80"] - frame["a-lo-80"]).all()


OUT_OF_RANGE = "every value in task.levels (--level) must be between 0 and 100 (exclusive); got {}."
TWICE = "task.levels (--level) lists a level twice: {}."


@pytest.mark.parametrize(("levels", "message"), [
    (["0"], OUT_OF_RANGE.format([0.0])),
    (["100"], OUT_OF_RANGE.format([100.0])),
    (["80", "80"], TWICE.format([80.0, 80.0])),
    (["-5"], OUT_OF_RANGE.format([-5.0])),
    (["101"], OUT_OF_RANGE.format([101.0])),
    (["95", "0.5", "95"], TWICE.format([95.0, 0.5, 95.0])),  # in range, but one level twice
], ids=["0", "100", "80-80", "-5", "101", "95-0.5-95"])
def test_bad_levels_are_refused(tmp_path: Path, capsys, levels, message):
    data = ar1_csv(tmp_path / "ar1.csv", n=600)
    rc = main(["fit", "--data", str(data), "--context-length", "48", "--horizon", "12", "--members", "linear",
               "--level", *levels, "--set", "runtime.progress=false"])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not Path("runs").exists()


def test_no_levels_means_no_bands(tmp_path: Path):
    data = ar1_csv(tmp_path / "ar1.csv", n=1500)
    assert main(["fit", "--data", str(data), "--context-length", "48", "--horizon", "12", "--members", "linear,mean",
                 "--set", "task.levels=[]", "--set", "runtime.progress=false", "--run-dir", "run"]) == 0
    assert main(["forecast", "--run-dir", "run"]) == 0
    assert list(pd.read_csv("run/forecast.csv").columns) == ["timestamp", "a", "b"]


def test_normalised_scores_give_narrow_bands_to_calm_windows():
    """Windows of two volatilities: scaled by the window's spread, the band follows it and still covers."""
    rng = np.random.default_rng(1)
    n, H = 3000, 4
    scale = np.where(np.arange(n) % 2 == 0, 0.2, 2.0)
    context = rng.normal(size=(n, 1, 32)) * scale[:, None, None]
    target = rng.normal(size=(n, 1, H)) * scale[:, None, None]
    forecast = np.zeros_like(target)
    folds = np.arange(n) * 5 // n
    bands = fit_bands(forecast, target, context, None, folds, (80.0,))
    assert bands.normaliser != "none"  # every other candidate follows the window's spread here
    assert bands.oof[80.0]["coverage"] == pytest.approx(0.8, abs=0.03)
    plain = fit_bands(forecast, target, context, None, folds, (80.0,), normaliser="none")
    assert bands.oof[80.0]["interval_score"] < plain.oof[80.0]["interval_score"]


def test_conformal_quantile_and_interval_score():
    scores = np.arange(1, 101, dtype=float)[:, None]
    assert conformal_quantile(scores, 90.0)[0] == 91.0  # ceil((n + 1) 0.9) / n quantile: finite-sample corrected
    y = np.array([0.0, 2.0, -3.0])
    s = interval_score(y, np.full(3, -1.0), np.full(3, 1.0), 80.0)
    np.testing.assert_allclose(s, [2.0, 2.0 + 10.0 * 1.0, 2.0 + 10.0 * 2.0])
    assert check_levels([95, 80]) == (80.0, 95.0)
    with pytest.raises(HybridInputError):
        check_levels([50, 50])
