"""Short series in one command: the context length and the folds are sized to the series, members adapt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.cli import main
from hybrid.sizing import candidates, fit_fold_plan
from kernel.errors import HybridInputError
from kernel.protocol import make_fold_plan


def air_csv(path: Path) -> Path:
    """AirPassengers (144 monthly totals, 1949-1960), as it ships with pmdarima."""
    from pmdarima.datasets import load_airpassengers

    y = np.asarray(load_airpassengers(), dtype=float)
    pd.DataFrame({"date": pd.date_range("1949-01-01", periods=len(y), freq="MS"), "passengers": y}).to_csv(
        path, index=False)
    return path


def test_airpassengers_fits_in_one_command_as_typed(tmp_path: Path, capsys):
    """Issue 32: `hybrid fit --data air.csv --horizon 12` took seven attempts; now it is one, with every member."""
    data = air_csv(tmp_path / "air.csv")
    assert main(["fit", "--data", str(data), "--horizon", "12", "--set", "runtime.progress=false",
                 "--run-dir", "run"]) == 0
    manifest = json.loads(Path("run/manifest.json").read_text())
    auto = manifest["context_length_auto"]
    L = manifest["context_length"]
    assert L == auto["chosen"] and L in auto["candidates"]
    assert L >= 24  # two cycles of the yearly season fit, so seasonal members can use it
    scores = {int(k): v for k, v in auto["validation_mse"].items()}
    assert len(scores) >= 2 and L == min(scores, key=scores.__getitem__)  # chosen on validation
    assert manifest["members"]["timellm"]["status"] == "ok"  # the core adapted its patch instead of failing
    assert manifest["results"]["12"]["metrics"]["hybrid"]["test"]["mse"] > 0
    assert main(["forecast", "--run-dir", "run", "--horizon", "12"]) == 0
    assert len(pd.read_csv("run/forecast.csv")) == 12


def test_context_length_candidates_fit_the_split_and_keep_two_cycles():
    found = candidates(144, 12, (12,), "ratio", "MS", (0.7, 0.1, 0.2))
    assert found and all(L >= 24 for L in found)  # two yearly cycles fit in 144 months: shorter lengths are dropped
    assert 512 not in found and 96 not in found  # the split of 144 rows cannot hold them
    assert candidates(144, 12, (), "ratio", "MS", (0.7, 0.1, 0.2))[-1] < 24  # without a period, shorter ones stay


def test_a_horizon_too_long_names_the_longest_that_fits_and_that_one_works(tmp_path: Path, capsys):
    data = air_csv(tmp_path / "air.csv")
    args = ["fit", "--data", str(data), "--members", "seasonal_naive,linear", "--set", "runtime.progress=false"]
    assert main([*args, "--horizon", "40"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "use --horizon" in err[0]
    longest = int(err[0].split("use --horizon ")[1].split()[0])
    assert 12 <= longest < 40
    assert main([*args, "--horizon", str(longest), "--run-dir", "run"]) == 0


def test_fold_count_moves_to_one_that_leaves_every_fold_a_training_window(caplog):
    # 116 rows of history, L 24 + H 12: two folds leave the first fold 35 rows (< 36) on either side of its hole
    with pytest.raises(HybridInputError):
        make_fold_plan(116, 24, 12, 2)
    plan = fit_fold_plan(116, 24, 12, 2, None, "stack.core_folds")
    assert plan.n_folds == 3
    assert "stack.core_folds: 2 folds" in caplog.text
    with pytest.raises(HybridInputError, match="stack.core_folds must be at least 2"):
        fit_fold_plan(116, 24, 12, 1, None, "stack.core_folds")


def test_core_folds_below_two_names_its_own_key(tmp_path: Path, capsys):
    data = air_csv(tmp_path / "air.csv")
    rc = main(["fit", "--data", str(data), "--horizon", "12", "--members", "linear,timellm", "--set",
               "core.backbone=none", "--set", "stack.core_folds=1", "--set", "runtime.progress=false"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "stack.core_folds" in err and "stack.folds must" not in err


def test_core_patch_longer_than_a_short_context_adapts(caplog):
    from llm_core.config import CoreConfig
    from llm_core.member import TimeLLM

    core = TimeLLM(CoreConfig(backbone="none", patch_len=16, stride=8))
    assert core._resolve_patch((12,), 12) == (4, 2)
    assert "does not fit context_length 12" in caplog.text
    assert core._resolve_patch((12,), 512) == (16, 8)  # a context that holds it keeps the configured patch
