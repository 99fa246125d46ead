"""benchmarks/deployment_rule.py: the replay decides as the router's check does, on the folds it is given."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "deployment_rule.py"
_SPEC = importlib.util.spec_from_file_location("_deployment_rule", _PATH)
rule = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = rule
_SPEC.loader.exec_module(rule)


def run(vote: list[float], best: list[float], equal: float = 9.0) -> dict:
    folds = [str(f) for f in range(len(vote))]
    static = {"equal": [equal] * len(vote), "inverse_error": [equal] * len(vote), "best_single": best,
              "top_k": [b + 0.01 for b in best]}
    return {"vote": {"by_fold": dict(zip(folds, vote, strict=True)), "min_gain": 0.001, "min_t": 1.0, "min_fold_wins": 0.5,
                     "passed": False},
            "static": {"by_fold": {m: dict(zip(folds, v, strict=True)) for m, v in static.items()},
                       "fold_windows": dict.fromkeys(folds, 10), "fallback": "best_single"}}


def test_a_vote_that_wins_pooled_but_on_few_folds_passes_only_the_pooled_check():
    r = run(vote=[0.5, 1.01, 1.01, 1.01, 0.5], best=[1.0] * 5)  # pooled far better, 2 of 5 folds
    folds = list(r["static"]["fold_windows"])
    assert rule.decide(r, folds, "pooled") == "vote"
    assert rule.decide(r, folds, "one_se") == "best_single"


def test_nested_scores_each_fold_with_the_decision_made_without_it():
    r = run(vote=[0.9, 0.9, 0.9, 0.9, 2.0], best=[1.0] * 5)
    score, decisions = rule.nested(r, "one_se")
    # folds 0-3 held out: fold 4's loss makes the vote worse pooled over the others -> best_single, scored 1.0;
    # fold 4 held out: the vote wins every other fold -> vote, scored on fold 4 at 2.0
    assert decisions == ["best_single"] * 4 + ["vote"]
    assert score == pytest.approx((4 * 1.0 + 2.0) / 5)
    assert rule.nested(r, "pooled") == (score, decisions)


def rec(model: str, mse: float, oof: float, **extra: object) -> dict:
    return {"version": rule.suite.VERSION, "dataset": "d", "horizon": 96, "seed": 0, "model": model, "mse": mse,
            "oof_mse": oof, **extra}


def test_rederive_takes_the_vote_or_the_fallback_from_the_recorded_scores():
    records = [rec("linear", 0.30, 0.50), rec("equal", 0.31, 0.52), rec("inverse_error", 0.305, 0.51),
               rec("best_single", 0.30, 0.50), rec("top_k", 0.30, 0.501), rec("router_vote", 0.29, 0.49),
               rec("hybrid", 0.30, 0.50, used="best_single")]
    (row,) = rule.rederive(records)
    assert (row["one_se"], row["pooled"], row["mse_one_se"], row["mse_pooled"]) == ("best_single", "vote", 0.30, 0.29)
    records[-2] = rec("router_vote", 0.29, 0.4999)  # within min_gain of the best static: the pooled check refuses
    assert rule.rederive(records)[0]["pooled"] == "best_single"


def test_rederive_skips_runs_that_already_used_the_pooled_check():
    records = [rec("equal", 0.31, 0.52), rec("inverse_error", 0.305, 0.51), rec("best_single", 0.30, 0.50),
               rec("top_k", 0.30, 0.501), rec("router_vote", 0.29, 0.49),
               rec("hybrid", 0.29, 0.49, used="vote", router_check="pooled")]
    assert rule.rederive(records) == []
