"""The Time-LLM core's training budget: ``core.budget: auto`` (the ladder) and ``fixed``.

Tiny synthetic series, ``core.backbone: none`` (a tiny random BERT where a
second backbone variant is needed), a few seconds per test. References come
from a drift member, which forecasts a straight line exactly and misses any
season.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from baselines.naive import Drift  # noqa: E402
from kernel.contract import Segment, TaskSpec  # noqa: E402
from kernel.errors import HybridInputError  # noqa: E402
from kernel.protocol import windows  # noqa: E402
from kernel.references import PredictedReferences  # noqa: E402
from llm_core.config import CoreConfig  # noqa: E402
from llm_core.member import TimeLLM, _Candidate  # noqa: E402

L, H, C, T, TRAIN_END = 32, 8, 2, 400, 250
REFS = ("drift",)
SPEC = TaskSpec(context_length=L, horizon=H, freq="h", periods=(12,), seed=0, description="a test series")


def _trend() -> np.ndarray:
    """Straight lines: the drift reference forecasts every window exactly."""
    t = np.arange(T, dtype=np.float32)[:, None]
    return (np.array([0.5, -1.0], np.float32) + np.array([0.01, -0.004], np.float32) * t).astype(np.float32)


def _seasonal(seed: int = 0) -> np.ndarray:
    """A season of 12 steps with noise: drift misses it, so training the core helps."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None]
    return (np.sin(2 * np.pi * t / 12 + np.arange(C)) + 0.1 * rng.standard_normal((T, C))).astype(np.float32)


def _core(**kw: object) -> CoreConfig:
    base = dict(
        backbone="none", patch_len=8, stride=4, d_model=8, n_heads=2, d_keys=4, d_ff=16, dropout=0.0, attn_dropout=0.0,
        epochs=3, patience=2, batch_size=16, max_train_windows=128, max_val_windows=48, progress=False, cpu_bf16=False,
        lr=0.01, reference_members=REFS, references=True, classical_text=False, ladder_samples=32,
        ladder_variants=("none",),
    )  # fmt: skip
    base.update(kw)
    return CoreConfig(**base)  # type: ignore[arg-type]


def _spec(x: np.ndarray) -> TaskSpec:
    return dataclasses.replace(SPEC, references=PredictedReferences(REFS, x, L, [{"drift": Drift().fit(None, None, SPEC)}]))


def _fit(cfg: CoreConfig, x: np.ndarray, period: int | None = None) -> TimeLLM:
    """The selection fit: train on rows [0, TRAIN_END), validation from TRAIN_END - L."""
    val = Segment(x[TRAIN_END - L :], TRAIN_END - L)
    return TimeLLM(cfg, period=period).fit([Segment(x[:TRAIN_END], 0)], val, _spec(x))


def _fold_fit(member: TimeLLM, x: np.ndarray) -> TimeLLM:
    """A frozen copy fitted as a fold fit is: on segments of the history, without validation."""
    return member.frozen().fit([Segment(x[:120], 0), Segment(x[200:300], 200)], None, _spec(x))


def _windows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Some validation windows and their drift references [N, C, 1, H]."""
    ctx, _ = windows(x[TRAIN_END - L :], L, H)
    ctx = np.ascontiguousarray(ctx[:12])
    return ctx, Drift().fit(None, None, SPEC).predict(ctx)[:, :, None, :H]


def test_references_already_perfect_stop_at_rung_0_and_the_fold_fits_train_nothing(
        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    x = _trend()
    with caplog.at_level(logging.INFO, logger="llm_core.member"):
        member = _fit(_core(), x)
    assert [r["rung"] for r in member.ladder_] == [0]  # one variant (none), rung 0 only
    assert member.ladder_[0]["samples_per_epoch"] == 32 and member.ladder_[0]["epochs"] == 1
    assert member.ladder_winner_["rung"] == 0 and member.ladder_winner_["best_epoch"] == 0
    assert "untrained start" in member.ladder_winner_["why"]
    assert member.best_epoch_ == 0 and [h["epoch"] for h in member.history_] == [0]
    assert member.net_.head_is_zero()
    assert sum("the fold fits and the refit train nothing" in r.getMessage() for r in caplog.records) == 1
    assert member.steps_ > 0  # rung 0 did train (and was not kept)

    fold = _fold_fit(member, x)
    assert fold.fixed_epochs == 0 and fold.steps_ == 0 and fold.history_ == []
    assert fold.net_.head_is_zero()  # the head is still the zero it starts from: no step changed it
    ctx, refs = _windows(x)
    np.testing.assert_allclose(fold.predict(ctx, refs), refs[:, :, 0], rtol=1e-5, atol=1e-5)


def test_training_helps_the_ladder_climbs_past_rung_0_with_growing_samples() -> None:
    x = _seasonal()
    member = _fit(_core(), x)
    rungs = [r["rung"] for r in member.ladder_]
    samples = [r["samples_per_epoch"] for r in member.ladder_]
    assert rungs == list(range(len(rungs))) and len(rungs) >= 2
    assert samples[:2] == [32, 128]  # rung 0: max(ladder_samples, 128 // 4); rung 1: max_train_windows
    assert all(a < b for a, b in zip(samples, samples[1:], strict=False))
    assert all(r["schedule_epochs"] == 3 for r in member.ladder_[1:])  # later rungs: core.epochs, early-stopped
    win = member.ladder_winner_
    assert win["rung"] >= 1 and member.best_epoch_ >= 1 and not member.net_.head_is_zero()
    kept = member.ladder_[:-1] if "not more than" in win["why"] else member.ladder_  # a last rung within tol: not kept
    assert win["best_val_loss"] == min(r["best_val_loss"] for r in kept)
    assert win["best_val_loss"] < member.history_[0]["val_loss"] * (1 - member.config.ladder_tol)  # beat the start
    # the frozen copies train the winner's budget: its samples per epoch, schedule and epoch count
    assert member.config_.budget == "fixed" and member.config_.max_train_windows == win["samples_per_epoch"]
    assert member.config_.epochs == win["schedule_epochs"]
    fold = _fold_fit(member, x)
    assert fold.config == member.config_ and fold.fixed_epochs == member.best_epoch_
    assert len(fold.history_) == member.best_epoch_ and fold.steps_ > 0


def test_a_last_rung_that_gains_no_more_than_the_tolerance_is_not_kept() -> None:
    member = _fit(_core(ladder_growth=2, ladder_tol=0.1), _seasonal())
    later = [r for r in member.ladder_ if r["rung"] > 0]
    assert [r["samples_per_epoch"] for r in later] == [128, 256, 422]
    last, kept = later[-1], later[-2]
    assert last["best_val_loss"] < kept["best_val_loss"] * (1 - 1e-6)  # the last rung was a little better ...
    assert last["best_val_loss"] > kept["best_val_loss"] * (1 - 0.1)  # ... by less than the tolerance
    win = member.ladder_winner_  # so the cheaper rung is the budget every later fit trains
    assert (win["rung"], win["samples_per_epoch"], win["best_val_loss"]) == (kept["rung"], 256, kept["best_val_loss"])
    assert member.config_.max_train_windows == 256 and "not more than 10.00%" in win["why"]
    assert member.best_epoch_ == kept["best_epoch"]


def test_the_ladder_stops_at_max_minutes() -> None:
    member = _fit(_core(max_minutes=1e-6), _seasonal())
    assert [r["rung"] for r in member.ladder_] == [0]  # no later rung starts
    assert "rung 1 (about" in member.ladder_winner_["why"]
    assert "would end after core.max_minutes" in member.ladder_winner_["why"]


def test_max_minutes_counts_the_fold_fits_and_refits_that_would_train_the_budget() -> None:
    member = _fit(_core(), _seasonal())
    c = _Candidate("none", member, None, None, {}, samples=100, epochs=2)  # type: ignore[arg-type]
    c.last_seconds, c.last_epochs = 10.0, 1  # 10 s an epoch of 100 samples: a rung of 2 x 400 takes 80 s
    started = time.perf_counter()
    deadline = started + 200.0
    member.later_fits_ = 0
    assert member._too_long(c, 400, 2, deadline, started) == ""  # 80 s alone fits
    member.later_fits_ = 1
    assert member._too_long(c, 400, 2, deadline, started) == ""  # 160 s fits
    member.later_fits_ = 2
    why = member._too_long(c, 400, 2, deadline, started)  # 240 s does not
    assert why.startswith("(about 80.0 s") and "each of the 2 fold fits and refits" in why
    member.later_fits_ = 50
    assert member._too_long(c, 400, 2, None, started) == ""  # no limit (a GPU by default)


# The validation losses per epoch (epoch 0: the untrained start) of the fit below by the code before core.budget
# existed (llm_core of commit 4a25b7e, the same config without the new keys), torch 2.13 on CPU, fp32.
BEFORE = [0.4861580431461334, 0.0318131186068058, 0.017758425325155258, 0.013754423707723618]


def test_fixed_budget_trains_exactly_as_before() -> None:
    x = _seasonal()
    member = _fit(_core(budget="fixed", epochs=3, patience=3, max_train_windows=256), x)
    assert not hasattr(member, "ladder_") and not hasattr(member, "ladder_winner_")
    assert [h["epoch"] for h in member.history_] == [0, 1, 2, 3]
    np.testing.assert_allclose([h["val_loss"] for h in member.history_], BEFORE, rtol=1e-5)
    assert member.config_ is member.config and member.steps_ == 3 * 16  # 256 samples, batches of 16
    # budget auto with a budget no larger than rung 0's trains as fixed too
    small = _fit(_core(epochs=3, patience=3, max_train_windows=32), x)
    again = _fit(_core(budget="fixed", epochs=3, patience=3, max_train_windows=32), x)
    assert not hasattr(small, "ladder_") and _same(small.history_, again.history_)


def _same(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    """Histories equal but for the seconds."""
    drop = [{k: v for k, v in h.items() if k != "seconds"} for h in a]
    return drop == [{k: v for k, v in h.items() if k != "seconds"} for h in b]


def test_save_load_round_trip_of_a_ladder_fitted_member(tmp_path: Path) -> None:
    x = _seasonal()
    member = _fit(_core(), x, period=16)
    assert member.ladder_winner_["rung"] >= 1
    member.save(tmp_path / "m")
    again = TimeLLM.load(tmp_path / "m")
    ctx, refs = _windows(x)
    assert np.array_equal(again.predict(ctx, refs), member.predict(ctx, refs))
    assert again.ladder_ == member.ladder_ and again.ladder_winner_ == member.ladder_winner_
    assert again.config_ == member.config_ and again.config == member.config and again.period == 16
    assert again.frozen().config == member.frozen().config
    same_seed = _fit(_core(), x, period=16)  # the ladder is seeded: the same fit again gives the same core
    assert _same(same_seed.ladder_, member.ladder_)
    assert np.array_equal(same_seed.predict(ctx, refs), member.predict(ctx, refs))


def test_a_backbone_none_winner_rebuilds_as_none_and_variants_compete_at_rung_0(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from test_core import save_tiny_bert

    bert = save_tiny_bert(tmp_path / "bert", max_positions=256)
    x = _seasonal()
    # only `none` is a candidate: the configured BERT core is fitted as backbone none
    member = _fit(_core(backbone=bert, ladder_variants=("none",)), x)
    assert {r["variant"] for r in member.ladder_} == {"none"} and member.ladder_winner_["variant"] == "none"
    assert member.net_.backbone is None and member.encoder_ is None and member.n_frozen_ == 0
    assert member.config.backbone == bert and member.config_.backbone == "none"
    member.save(tmp_path / "m")
    again = TimeLLM.load(tmp_path / "m")
    assert again.net_.backbone is None and again.config_.backbone == "none" and again.config.backbone == bert
    ctx, refs = _windows(x)
    assert np.array_equal(again.predict(ctx, refs), member.predict(ctx, refs))
    assert _fold_fit(again, x).net_.backbone is None  # the fold fits and the refit build the winner too

    # both variants train at rung 0; the lower validation loss wins
    both = _fit(_core(backbone=bert, ladder_variants=("configured", "none")), x)
    first = [r for r in both.ladder_ if r["rung"] == 0]
    assert [r["variant"] for r in first] == [bert, "none"]
    best = min(first, key=lambda r: r["best_val_loss"])["variant"]
    assert both.ladder_winner_["variant"] == best and {r["variant"] for r in both.ladder_[2:]} == {best}
    assert (both.net_.backbone is None) == (best == "none")


def test_a_plain_variant_trains_the_schedule_at_rung_0_and_a_plain_winner_is_rebuilt_plain(tmp_path: Path) -> None:
    x = _seasonal()
    member = _fit(_core(ladder_variants=("none", "none:plain")), x)
    first = {r["variant"]: r for r in member.ladder_ if r["rung"] == 0}
    assert set(first) == {"none", "none:plain"}
    assert (first["none"]["samples_per_epoch"], first["none"]["schedule_epochs"]) == (32, 1)  # a few steps off the start
    assert (first["none:plain"]["samples_per_epoch"], first["none:plain"]["schedule_epochs"]) == (128, 3)  # the schedule
    best = min(first.values(), key=lambda r: r["best_val_loss"])["variant"]
    assert member.ladder_winner_["variant"] == best and {r["variant"] for r in member.ladder_[2:]} == {best}

    plain = _fit(_core(ladder_variants=("none:plain",)), x)  # the only variant: no start to keep, it trains
    assert plain.ladder_winner_["variant"] == "none:plain" and plain.best_epoch_ >= 1
    assert [r["samples_per_epoch"] for r in plain.ladder_][:2] == [128, 422]  # then x 4, capped at every sample
    assert "used every training sample" in plain.ladder_winner_["why"]
    assert plain.reference_names_ == () and not plain.config_.references and not plain.config_.classical_text
    ctx, refs = _windows(x)
    assert np.array_equal(plain.predict(ctx, refs), plain.predict(ctx))  # it reads no reference
    fold = _fold_fit(plain, x)
    assert not fold.config.references and fold.reference_names_ == () and fold.steps_ > 0
    plain.save(tmp_path / "m")
    again = TimeLLM.load(tmp_path / "m")
    assert again.config_ == plain.config_ and np.array_equal(again.predict(ctx), plain.predict(ctx))


def test_a_strong_start_is_kept_even_when_a_plain_variant_trained(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llm_core.member"):
        member = _fit(_core(ladder_variants=("none", "none:plain", "none:plain:period")), _trend(), period=None)
    assert [r["variant"] for r in member.ladder_] == ["none"] + ["none:plain"] * 2 + ["none:plain:period"] * 2
    assert member.ladder_winner_["variant"] == "none" and member.best_epoch_ == 0 and member.net_.head_is_zero()
    periodic = [r["samples_per_epoch"] for r in member.ladder_ if r["variant"].endswith("period")]
    assert periodic == [128, 422]  # the schedule, then x 4 (capped at every sample) on its way to the start
    # a period expert ties every patch to its period: the period flag builds the same core, which trains once
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llm_core.member"):
        expert = _fit(_core(ladder_variants=("none:plain", "none:plain:period")), _trend(), period=16)
    assert [r["variant"] for r in expert.ladder_ if r["rung"] == 0] == ["none:plain"]
    assert any("builds the same core as none:plain" in r.getMessage() for r in caplog.records)


def test_a_plain_variant_climbs_at_rung_0_only_while_it_closes_its_gap_to_the_start() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(T)[:, None]
    cfg = _core(ladder_variants=("none", "none:plain"), max_train_windows=8, ladder_samples=2)
    # a random walk: the drift start is hard to catch; the second schedule closes too little of the gap, so it stops
    walk = _fit(cfg, (0.1 * np.cumsum(rng.standard_normal((T, C)), 0)).astype(np.float32))
    plain = [r for r in walk.ladder_ if r["variant"] == "none:plain"]
    assert [(r["rung"], r["samples_per_epoch"]) for r in plain] == [(0, 8), (0, 32)]
    start = walk.ladder_winner_["best_val_loss"]
    gap, step = plain[1]["best_val_loss"] - start, plain[0]["best_val_loss"] - plain[1]["best_val_loss"]
    assert step < gap and walk.ladder_winner_["variant"] == "none" and walk.best_epoch_ == 0
    # a noisy trend: each schedule closes more than the gap left, until the plain core beats the start and wins
    noisy = _fit(cfg, (0.01 * t + 0.3 * rng.standard_normal((T, C))).astype(np.float32))
    first = [r["samples_per_epoch"] for r in noisy.ladder_ if r["variant"] == "none:plain" and r["rung"] == 0]
    assert first == [8, 32, 128] and noisy.ladder_winner_["variant"] == "none:plain"
    assert noisy.ladder_winner_["best_val_loss"] < noisy.ladder_[0]["best_val_loss"] * (1 - cfg.ladder_tol)


def test_budget_settings_are_checked() -> None:
    with pytest.raises(HybridInputError, match="core.ladder_variants: 'none:fused'"):
        _fit(_core(ladder_variants=("none:fused",)), _trend())
    with pytest.raises(HybridInputError, match="core.budget"):
        _fit(_core(budget="sometimes"), _trend())
    with pytest.raises(HybridInputError, match="ladder_growth"):
        _fit(_core(ladder_growth=1), _trend())


def test_the_vote_report_shows_every_rung_and_why_the_winner_won() -> None:
    from hybrid.report import ladder_lines

    member = _fit(_core(), _seasonal())
    lines = ladder_lines({"timellm": {"ladder": member.ladder_, "winner": member.ladder_winner_}})
    text = "\n".join(lines)
    rows = [ln for ln in lines if ln.startswith("| none |")]
    assert len(rows) == len(member.ladder_) >= 2  # one row per rung, in order
    for row, rung in zip(rows, member.ladder_, strict=True):
        assert row.startswith(f"| none | {rung['rung']} | {rung['samples_per_epoch']} |")
    win = member.ladder_winner_
    assert f"at rung {win['rung']} ({win['samples_per_epoch']} samples an epoch" in text
    assert win["why"] in text and "stopped growing" in win["why"]
    assert ladder_lines({}) == []
