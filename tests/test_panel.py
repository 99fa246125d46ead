"""Many series in long format as many series (hybrid.panel): per-series splits and scaling, global and local members."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.cli import main
from tests.conftest import make_frame

FAST = ["--context-length", "48", "--horizon", "12", "--set", "runtime.progress=false", "--set", "runtime.n_jobs=1"]


def _long(series: dict[str, tuple[str, np.ndarray]], freq: str = "h") -> pd.DataFrame:
    """uid -> (first timestamp, values) as a long frame, hourly (or at ``freq``)."""
    return pd.concat([pd.DataFrame({"unique_id": uid, "ds": pd.date_range(start, periods=len(y), freq=freq), "y": y})
                      for uid, (start, y) in series.items()], ignore_index=True)


def _test_scores(run: Path, horizon: str = "12") -> dict[str, float]:
    metrics = json.loads((run / "manifest.json").read_text())["results"][horizon]["metrics"]
    return {n: s["test"]["mse"] for n, s in metrics.items()}


def test_a_panel_of_rescaled_copies_scores_as_the_series_alone(tmp_path):
    """Per-series scaling and a global fit: two copies of one series (one x8, later in time) give every member the
    same test scores as the series fitted alone (the same split, folds and windows). x8 is exact in floating point;
    other factors move the float32 values a little, and ETS's optimiser with them."""
    y = make_frame(n=600, channels=1)["c0"].to_numpy()
    wide = tmp_path / "one.csv"
    pd.DataFrame({"date": pd.date_range("2021-01-01", periods=600, freq="h"), "a": y}).to_csv(wide, index=False)
    panel = tmp_path / "two.csv"
    _long({"a": ("2021-01-01", y), "b": ("2021-03-01", 8 * y)}).to_csv(panel, index=False)
    args = [*FAST, "--members", "linear,nlinear,ets", "--overwrite"]
    assert main(["fit", "--data", str(wide), "--run-dir", "one", *args]) == 0
    assert main(["fit", "--data", str(panel), "--run-dir", "two", *args]) == 0
    manifest = json.loads(Path("two/manifest.json").read_text())
    assert manifest["layout"] == "panel" and manifest["n_series"] == 2
    alone, pooled = _test_scores(Path("one")), _test_scores(Path("two"))
    for name in ("linear", "nlinear", "ets"):
        assert pooled[name] == pytest.approx(alone[name], rel=1e-4), name
    series = pd.read_csv("two/series_scores.csv")
    assert series.set_index("unique_id").loc["b", "linear"] == pytest.approx(alone["linear"], rel=1e-4)


def _keys(entry: dict, *path: str) -> set[str]:
    for key in path:
        entry = entry[key]
    return set(entry)


def test_a_panel_run_records_each_horizon_as_a_wide_run_does(tmp_path):
    """One manifest writer (hybrid.records.horizon_entry): the router's check, the bands, passed_check, the sound
    members and the gate of a many-series run have the keys of a one-series run's."""
    rng = np.random.default_rng(5)
    t = np.arange(400)
    y = 10 + 3 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.5, 400)
    wide = tmp_path / "one.csv"
    pd.DataFrame({"date": pd.date_range("2021-01-01", periods=400, freq="h"), "y": y}).to_csv(wide, index=False)
    panel = tmp_path / "two.csv"
    _long({"a": ("2021-01-01", y), "b": ("2021-02-01", 2 + y[::-1])}).to_csv(panel, index=False)
    args = [*FAST, "--members", "seasonal_naive,linear,ets", "--overwrite"]
    assert main(["fit", "--data", str(wide), "--run-dir", "one", *args]) == 0
    assert main(["fit", "--data", str(panel), "--run-dir", "two", *args]) == 0
    one = json.loads(Path("one/manifest.json").read_text())["results"]["12"]
    two = json.loads(Path("two/manifest.json").read_text())["results"]["12"]
    assert set(two) == set(one) and {"router", "bands", "test_windows"} <= set(two)
    for path in [("combiner",), ("combiner", "sound"), ("router",), ("router", "check"), ("bands",), ("gate",),
                 ("metrics",)]:
        assert _keys(two, *path) == _keys(one, *path), path
    for name in one["metrics"]:
        assert _keys(two, "metrics", name) == _keys(one, "metrics", name), name
    for name in ("vote", "select", "rules"):
        assert two["metrics"][f"router_{name}"]["passed_check"] is two["router"]["check"][name]["passed"]
    for name in ("seasonal_naive", "linear"):  # a member fitted across series also says so
        assert _keys(one, "members", name) | {"fit"} == _keys(two, "members", name), name
    # a local member's choices are made series by series, in tasks that return forecasts only
    assert _keys(two, "members", "ets") == {"seconds", "folds", "fit"}
    assert one["test_windows"] == int(0.2 * 400) - 12 + 1 and two["test_windows"] == 2 * one["test_windows"]
    assert two["bands"]["hybrid"]["levels"] == one["bands"]["hybrid"]["levels"] == [80, 95]


def test_fit_forecast_evaluate_on_series_of_different_lengths(capsys, tmp_path):
    rng = np.random.default_rng(1)
    lengths = {"north": 300, "south": 420, "east": 360}
    starts = {"north": "2022-01-01", "south": "2022-02-10 05:00", "east": "2021-12-20"}
    series = {}
    for uid, n in lengths.items():
        t = np.arange(n)
        series[uid] = (starts[uid], 50 + rng.uniform(1, 20) * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, n))
    path = tmp_path / "stores.csv"
    _long(series).sample(frac=1, random_state=0).to_csv(path, index=False)  # rows in any order
    assert main(["fit", "--data", str(path), *FAST, "--members", "seasonal_naive,linear,ets"]) == 0
    out = capsys.readouterr().out
    assert "3 series" in out and "hybrid" in out
    manifest = json.loads(Path("runs/latest/manifest.json").read_text())
    entry = manifest["results"]["12"]
    # every test window of every series, from each series' own 70/10/20 split: int(0.2 T) - H + 1 each
    assert entry["test_windows"] == sum(int(n * 0.2) - 12 + 1 for n in lengths.values())
    assert entry["members"]["ets"]["fit"].startswith("fitted per series (3 tasks)")
    assert "of 15 fold fits" in entry["members"]["ets"]["fit"]  # 3 series x 5 folds, fallbacks counted
    assert entry["members"]["linear"]["fit"] == "one fit per stage across 3 series"
    assert entry["metrics"]["hybrid"]["test"]["mse"] <= entry["metrics"]["seasonal_naive"]["test"]["mse"]

    assert main(["forecast", "--horizon", "6"]) == 0
    fc = pd.read_csv("runs/latest/forecast-h6.csv", parse_dates=["ds"])
    assert len(fc) == 3 * 6 and set(fc["unique_id"]) == set(lengths)
    for uid, n in lengths.items():
        rows = fc[fc["unique_id"] == uid]
        assert rows["ds"].iloc[0] == pd.Timestamp(starts[uid]) + pd.Timedelta(hours=n)  # after its own end
        assert rows["hybrid"].between(20, 80).all()  # at the series' level, in its own units
        assert (rows["hybrid-lo-80"] <= rows["hybrid"]).all() and (rows["hybrid"] <= rows["hybrid-hi-80"]).all()
    weights = fc.filter(like="weight:")
    assert np.allclose(weights.sum(axis=1), 1.0)
    report = Path("runs/latest/report.md").read_text()  # the many-series vote report, and plots of a few series
    assert "3 series" in report and "## Members" in report and "| **hybrid** |" in report
    plots = sorted(p.name for p in Path("runs/latest").glob("plot-*.png"))
    assert 1 <= len(plots) <= 3 and all(f"({p})" in report for p in plots)
    assert set(plots) <= {f"plot-{uid}.png" for uid in lengths}
    capsys.readouterr()
    assert main(["evaluate", "--json"]) == 0
    assert "hybrid" in json.loads(capsys.readouterr().out)["horizons"]["12"]


def test_forecast_from_new_data_by_the_stored_fits_of_every_series(capsys, tmp_path):
    """forecast --data on a many-series run: each series' last window of the new file, scaled as at fit time,
    forecast by the stored production members (ETS: one fit per series) and the stored combination. The fitted
    file gives back the forecasts made at fit time; a longer file forecasts from its own ends."""
    ends = {"north": ("2022-01-01", 300), "south": ("2022-02-10 05:00", 420)}
    full = {uid: (start, _seasonal(n + 24, k)) for k, (uid, (start, n)) in enumerate(ends.items())}
    fitted = tmp_path / "fitted.csv"
    _long({uid: (start, y[: ends[uid][1]]) for uid, (start, y) in full.items()}).to_csv(fitted, index=False)
    assert main(["fit", "--data", str(fitted), *FAST, "--members", "seasonal_naive,linear,ets"]) == 0
    assert main(["forecast"]) == 0
    at_fit = pd.read_csv("runs/latest/forecast-h12.csv")
    assert main(["forecast", "--data", str(fitted), "--output", "again.csv"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv("again.csv"), at_fit, rtol=1e-9)

    longer = tmp_path / "longer.csv"
    _long({"south": full["south"]}).to_csv(longer, index=False)  # 24 rows more, and one series of the two
    assert main(["forecast", "--data", str(longer), "--output", "later.csv"]) == 0
    later = pd.read_csv("later.csv", parse_dates=["ds"])
    assert set(later["unique_id"]) == {"south"} and len(later) == 12
    assert later["ds"].iloc[0] == pd.Timestamp("2022-02-10 05:00") + pd.Timedelta(hours=420 + 24)
    before = at_fit[at_fit["unique_id"] == "south"]
    for column in ("hybrid", "ets", "linear"):
        assert not np.allclose(later[column], before[column]), column
    assert later["hybrid"].between(0, 20).all()  # in the series' own units (about 10 +- 3)

    capsys.readouterr()
    stranger = tmp_path / "stranger.csv"
    _long({"west": ("2022-01-01", _seasonal(200, 9))}).to_csv(stranger, index=False)
    assert main(["forecast", "--data", str(stranger)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unique_id west was not in the fit" in err and len(err.splitlines()) == 1


def test_every_fold_keeps_out_of_fold_windows_when_series_outnumber_the_window_budget(tmp_path):
    """stack.max_windows shared out over many series leaves each at least one window per fold."""
    rng = np.random.default_rng(3)
    series = {f"s{i}": (f"2021-01-{1 + i:02d}", rng.normal(size=260 + 10 * i)) for i in range(4)}
    path = tmp_path / "many.csv"
    _long(series).to_csv(path, index=False)
    assert main(["fit", "--data", str(path), *FAST, "--members", "linear,nlinear", "--set", "stack.max_windows=4"]) == 0
    entry = json.loads(Path("runs/latest/manifest.json").read_text())["results"]["12"]
    assert entry["oof_windows"] == 4 * 5
    assert sorted(entry["metrics"]["linear"]["oof"]["by_fold"]) == ["0", "1", "2", "3", "4"]


def test_the_core_reads_references_per_series_on_many_series(tmp_path, capsys):
    """The fused core on many series: its reference tokens are the out-of-fold forecasts of the members fitted
    across series, looked up by each window's row in its own series; a member fitted series by series (ETS)
    keeps its fold fits in its tasks and is left out as a reference with one warning."""
    pytest.importorskip("torch")
    series = {f"s{i}": (f"2021-01-0{1 + i}", _seasonal(n, i)) for i, n in enumerate((300, 340))}
    path = tmp_path / "core.csv"
    _long(series).to_csv(path, index=False)
    core = ["--set", "core.backbone=none", "--set", "core.epochs=1", "--set", "core.max_train_windows=64",
            "--set", "core.max_val_windows=32", "--set", "core.d_model=8", "--set", "core.patch_len=8",
            "--set", "core.stride=4", "--set", "stack.folds=2", "--set", "core.reference_members=[linear,ets]"]
    assert main(["fit", "--data", str(path), *FAST, "--members", "linear,ets,timellm", *core]) == 0
    said = [ln for ln in capsys.readouterr().err.splitlines() if "is not used" in ln]
    assert len(said) == 1 and "reference member ets is not used: it is fitted series by series" in said[0]
    manifest = json.loads(Path("runs/latest/manifest.json").read_text())
    entry = manifest["results"]["12"]
    assert manifest["config"]["core"]["references"] is True
    assert entry["members"]["timellm"]["references"] == ["linear"]
    assert np.isfinite(entry["metrics"]["timellm"]["test"]["mse"])
    assert main(["forecast"]) == 0
    at_fit = pd.read_csv("runs/latest/forecast-h12.csv")
    # the stored core, given the stored linear member's forecasts as references, makes the forecasts of fit time again
    assert main(["forecast", "--data", str(path), "--output", "again.csv"]) == 0
    again = pd.read_csv("again.csv")
    assert np.isfinite(again["timellm"]).all() and len(again) == 2 * 12
    pd.testing.assert_frame_equal(again, at_fit, rtol=1e-6)


def test_the_core_alone_is_a_global_model_across_series(tmp_path):
    """The core without references (no language model here) trains across every series and is judged with the other
    members by the sanity gate."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    series = {}
    for i, n in enumerate((300, 340, 380)):
        t = np.arange(n)
        series[f"s{i}"] = (f"2021-01-{1 + 3 * i:02d}", 5 + 2 * np.sin(2 * np.pi * t / 24 + i) + rng.normal(0, 0.3, n))
    path = tmp_path / "core.csv"
    _long(series).to_csv(path, index=False)
    core = ["--set", "core.backbone=none", "--set", "core.references=false", "--set", "core.classical_text=false",
            "--set", "core.epochs=2", "--set", "core.max_train_windows=256", "--set", "core.max_val_windows=128",
            "--set", "core.d_model=8", "--set", "core.patch_len=8", "--set", "core.stride=4", "--set", "stack.folds=2"]
    assert main(["fit", "--data", str(path), *FAST, "--members", "linear,timellm", *core]) == 0
    entry = json.loads(Path("runs/latest/manifest.json").read_text())["results"]["12"]
    assert entry["members"]["timellm"]["fit"] == "one fit per stage across 3 series"
    scores = entry["metrics"]["timellm"]
    assert np.isfinite(scores["test"]["mse"]) and sorted(scores["oof"]["by_fold"]) == ["0", "1"]
    # two folds of two epochs: the core's out-of-fold error is far over twice the floor's (the better of seasonal
    # naive and the window mean), so the sanity gate sets it aside and every combination is the linear member alone
    floor = entry["gate"]["baseline_oof_mse"]["y"]
    assert scores["oof"]["mse"] > 2 * floor > entry["metrics"]["linear"]["oof"]["mse"]
    assert entry["gate"]["gated"] == {"timellm": ["y"]}
    assert entry["combiner"]["used"] == "vote" and entry["combiner"]["static"]["equal"]["y"] == {"linear": 1.0,
                                                                                              "timellm": 0.0}
    for combined in ("hybrid", "equal"):
        assert entry["metrics"][combined]["test"]["mse"] == pytest.approx(entry["metrics"]["linear"]["test"]["mse"],
                                                                          rel=1e-9)
    assert scores["test"]["mse"] > 1.2 * entry["metrics"]["linear"]["test"]["mse"]  # so that mixing it in would show


def _seasonal(n: int, seed: int, period: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 10 + 3 * np.sin(2 * np.pi * t / period) + rng.normal(0, 0.5, n)


def test_data_split_chooses_each_series_split(tmp_path):
    """data.split: ett gives every series the 12/4/4-month split of its own rows (daily: 360/120/120), as it gives
    a wide series; the default ratio split would give 113 + 129 test windows here."""
    path = tmp_path / "daily.csv"
    _long({"a": ("2020-01-01", _seasonal(620, 0, 7)), "b": ("2020-03-01", _seasonal(700, 1, 7))}, "D").to_csv(
        path, index=False)
    assert main(["fit", "--data", str(path), *FAST, "--members", "linear", "--set", "data.split=ett"]) == 0
    manifest = json.loads(Path("runs/latest/manifest.json").read_text())
    assert manifest["split"]["kind"] == "ett, per series"
    assert manifest["results"]["12"]["test_windows"] == 2 * (120 - 12 + 1)  # each test window of 120 rows


def test_stack_train_only_none_scores_no_train_only_fit(tmp_path):
    """stack.train_only: none skips the train-only fits' test scores (they are the deployed fits' then), as on one
    series; by default (classical) the train-only fit of a refitted member scores differently."""
    path = tmp_path / "two.csv"
    _long({"a": ("2021-01-01", _seasonal(320, 2)), "b": ("2021-02-01", _seasonal(360, 3))}).to_csv(path, index=False)
    args = ["fit", "--data", str(path), *FAST, "--members", "seasonal_naive,linear", "--overwrite"]
    assert main([*args, "--run-dir", "classical"]) == 0
    assert main([*args, "--run-dir", "none", "--set", "stack.train_only=none"]) == 0
    scored = json.loads(Path("classical/manifest.json").read_text())["results"]["12"]["metrics"]["linear"]
    skipped = json.loads(Path("none/manifest.json").read_text())["results"]["12"]["metrics"]["linear"]
    assert scored["test_train_only"]["mse"] != pytest.approx(scored["test"]["mse"], rel=1e-6)
    assert skipped["test_train_only"] == skipped["test"] == scored["test"]


def test_stack_core_folds_sets_the_cores_folds_on_many_series(tmp_path):
    """stack.core_folds: the core is cross-fitted with its own (fewer) folds per series, as on one series."""
    pytest.importorskip("torch")
    path = tmp_path / "core.csv"
    _long({f"s{i}": (f"2021-01-{1 + 3 * i:02d}", _seasonal(n, i)) for i, n in enumerate((300, 340))}).to_csv(
        path, index=False)
    core = ["--set", "core.backbone=none", "--set", "core.references=false", "--set", "core.classical_text=false",
            "--set", "core.epochs=1", "--set", "core.max_train_windows=64", "--set", "core.max_val_windows=32",
            "--set", "core.d_model=8", "--set", "core.patch_len=8", "--set", "core.stride=4", "--set", "stack.folds=3",
            "--set", "stack.core_folds=2"]
    assert main(["fit", "--data", str(path), *FAST, "--members", "linear,timellm", *core]) == 0
    manifest = json.loads(Path("runs/latest/manifest.json").read_text())
    members = manifest["results"]["12"]["members"]
    assert (members["linear"]["folds"], members["timellm"]["folds"], manifest["cross_fit"]["core"]["folds"]) == (3, 2, 2)
    assert np.isfinite(manifest["results"]["12"]["metrics"]["timellm"]["oof"]["mse"])


def test_aligned_long_file_is_one_multichannel_series(tmp_path):
    y = make_frame(n=400, channels=1)["c0"].to_numpy()
    path = tmp_path / "aligned.csv"
    _long({"a": ("2021-01-01", y), "b": ("2021-01-01", y[::-1].copy())}).to_csv(path, index=False)
    assert main(["fit", "--data", str(path), *FAST, "--members", "linear"]) == 0
    manifest = json.loads(Path("runs/latest/manifest.json").read_text())
    assert "layout" not in manifest and manifest["columns"] == ["a", "b"]


@pytest.mark.parametrize(("bad", "extra", "needle"), [
    ("short", [], "unique_id short"),
    ("constant", [], "unique_id flat is constant"),
    ("nan", [], "unique_id holes"),
    ("ok", ["--set", "data.layout=columns"], "data.layout must be"),
])
def test_bad_panels_exit_2_naming_the_series(capsys, tmp_path, bad, extra, needle):
    rng = np.random.default_rng(2)
    series = {"a": ("2021-01-01", rng.normal(size=300)), "b": ("2021-02-01", rng.normal(size=360))}
    if bad == "short":
        series["short"] = ("2021-01-05", rng.normal(size=40))
    if bad == "constant":
        series["flat"] = ("2021-01-05", np.full(300, 3.0))
    if bad == "nan":
        y = rng.normal(size=300)
        y[100] = np.nan
        series["holes"] = ("2021-01-05", y)
    path = tmp_path / "bad.csv"
    _long(series).to_csv(path, index=False)
    args = ["fit", "--data", str(path), *FAST, *(extra or ["--members", "linear"])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not Path("runs").exists() or not any(Path("runs").iterdir())  # nothing written half-way


def test_one_fold_count_for_every_series_moves_as_on_one_series(tmp_path, capsys):
    """A short series whose history 2 folds cannot cut (180 rows: 4 or 5 fit) moves the panel's count, with one
    warning naming the key, as a wide series does; before, the fit stopped on that series."""
    rng = np.random.default_rng(6)
    path = tmp_path / "two.csv"
    _long({"long": ("2021-01-01", rng.normal(size=300)), "short": ("2021-02-01", rng.normal(size=180))}).to_csv(
        path, index=False)
    assert main(["fit", "--data", str(path), *FAST, "--members", "linear", "--set", "stack.folds=2"]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "stack.folds: 2 folds leave a fold" in ln]
    assert len(warned) == 1 and warned[0].endswith("using 4.")
    entry = json.loads(Path("runs/latest/manifest.json").read_text())["results"]["12"]
    assert sorted(entry["metrics"]["linear"]["oof"]["by_fold"]) == ["0", "1", "2", "3"]


def test_many_series_forecast_preview_is_readable(tmp_path, capsys):
    """The terminal shows the combined forecast and its bands for the start of a few series, in the data's units
    without scientific notation; members and weights stay in the CSV (before: every column, wrapped, 1.5e-16)."""
    rng = np.random.default_rng(7)
    path = tmp_path / "p.csv"
    _long({f"s{i}": (f"2021-01-0{1 + i}", 1000 + rng.normal(size=300 + 20 * i).cumsum()) for i in range(3)}).to_csv(
        path, index=False)  # different ends: many series, not channels of one
    assert main(["fit", "--data", str(path), *FAST, "--members", "linear,nlinear,seasonal_naive"]) == 0
    capsys.readouterr()
    assert main(["forecast"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["unique_id", "ds", "hybrid"])
    table = lines[header:header + 7]
    assert table[0].split() == ["unique_id", "ds", "hybrid", "hybrid-lo-80", "hybrid-hi-80", "hybrid-lo-95",
                                "hybrid-hi-95"]
    assert [ln.split()[0] for ln in table[1:]] == ["s0", "s0", "s1", "s1", "s2", "s2"]
    assert all(len(ln) <= 110 for ln in lines[: header + 7]) and not any("e-" in ln or "e+" in ln for ln in table)


def test_several_horizons_on_many_series_fit_each_horizon_series_by_series(tmp_path):
    """ARIMA and ETS keep no fits on many series (their tasks return one horizon's forecasts), so every horizon runs
    their tasks again: H 6 and 12 together give the ETS test scores of H 12 alone (the same folds: both end at 12)."""
    series = {f"s{i}": (f"2021-01-0{1 + i}", _seasonal(n, i)) for i, n in enumerate((300, 340))}
    path = tmp_path / "two.csv"
    _long(series).to_csv(path, index=False)
    common = ["--context-length", "48", "--set", "runtime.progress=false", "--set", "runtime.n_jobs=1",
              "--members", "linear,ets", "--overwrite"]
    assert main(["fit", "--data", str(path), "--horizon", "6", "12", "--run-dir", "both", *common]) == 0
    assert main(["fit", "--data", str(path), "--horizon", "12", "--run-dir", "one", *common]) == 0
    both, one = json.loads(Path("both/manifest.json").read_text()), json.loads(Path("one/manifest.json").read_text())
    assert both["results"]["12"]["metrics"]["ets"]["test"] == one["results"]["12"]["metrics"]["ets"]["test"]
    six = both["results"]["6"]
    assert np.isfinite(six["metrics"]["ets"]["test"]["mse"]) and six["members"]["ets"]["seconds"]["all stages"] > 0
    frame = pd.read_csv("both/forecast.csv")
    assert frame.groupby("horizon").size().to_dict() == {6: 2 * 6, 12: 2 * 12}


def test_windows_of_many_series_are_aged_from_each_series_end(tmp_path):
    """The bands weight recent out-of-fold windows more: on many series a window's age is counted from its own
    series' history end, not from its row in the file (where later series would look newer)."""
    from hybrid.config import load_config
    from hybrid.dataset import from_long

    frame = _long({"a": ("2021-01-01", _seasonal(300, 1)), "b": ("2021-03-01", _seasonal(300, 2))})
    cfg = load_config(None, None, {"task": {"context_length": 48}})
    data = from_long(cfg, "two.csv", frame, 12)
    rows = np.arange(0, 200, 7)
    a, b = data.times(rows), data.times(rows + data.offsets[1])
    np.testing.assert_array_equal(a, b)  # the same row of two equally long series: the same time
    assert a[0] == -data.splits[0].val_end and (np.diff(a) == 7).all()
