"""Cross-fitting: folds never leak, out-of-fold errors are honest, the sanity gate sets broken members aside."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid import members as registry
from hybrid.cli import main
from hybrid.config import load_config
from hybrid.crossfit import fit_member_stages, oof_references
from hybrid.pipeline import prepare_data, task_spec
from kernel.contract import Member, Segment, TaskSpec, as_segments, check_context
from kernel.protocol import make_fold_plan, windows

L, H = 48, 12


class Memoriser(Member):
    """Returns the true target of every window it was fitted on (looked up by its context), the last value elsewhere.

    In sample it is perfect; out of sample it is plain naive. If any fold leaked
    a window's target into the fit that forecasts it, its out-of-fold error would
    fall below naive's.
    """

    name = "memo"
    horizon_agnostic = False

    def fit(self, train, val, spec: TaskSpec):  # noqa: ANN001, ANN201
        self.context_length_, self.horizon_ = spec.context_length, spec.horizon
        self.table_: dict[str, np.ndarray] = {}
        for seg in as_segments(train):
            if len(seg) < spec.context_length + spec.horizon:
                continue
            ctx, tgt = windows(seg.values, spec.context_length, spec.horizon)
            for i in range(ctx.shape[0]):
                for c in range(ctx.shape[1]):
                    self.table_[np.ascontiguousarray(ctx[i, c]).tobytes().hex()] = np.array(tgt[i, c])
        return self

    def frozen(self):  # noqa: ANN201
        return Memoriser()

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        context = check_context(context, self.context_length_)
        out = np.repeat(context[:, :, -1:], self.horizon_, axis=2)
        for i in range(context.shape[0]):
            for c in range(context.shape[1]):
                hit = self.table_.get(np.ascontiguousarray(context[i, c]).tobytes().hex())
                if hit is not None:
                    out[i, c] = hit
        return out


def allow_test_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let runs store this module's test members (a run loads only the project's own classes)."""
    import hybrid.state

    monkeypatch.setattr(hybrid.state, "ALLOWED_PACKAGES", (*hybrid.state.ALLOWED_PACKAGES, __name__.partition(".")[0]))


@pytest.fixture
def memo_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.REGISTRY, "memo", (lambda cfg, period: Memoriser(), False))
    allow_test_members(monkeypatch)


def noisy_walk(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = np.cumsum(rng.normal(size=(n, 2)), axis=0) + 2 * np.sin(2 * np.pi * t / 24)[:, None]
    return pd.DataFrame({"date": pd.date_range("2021-01-01", periods=n, freq="h"), "a": values[:, 0],
                         "b": values[:, 1]})


def test_fold_plan_excludes_every_target_and_a_purge_gap():
    plan = make_fold_plan(history_end=1000, context_length=L, max_horizon=H, n_folds=5)
    assert plan.purge == L + H and plan.borders[0] == L and plan.borders[-1] == 1000
    starts = plan.history_starts(H)
    assert starts[-1] + L + H == 1000  # every historical window, none reaching into the test part
    folds = plan.fold_of(starts)
    values = np.arange(1000, dtype=np.float32)[:, None]
    for k in range(plan.n_folds):
        mine = starts[folds == k]
        target_rows = {int(r) for s in mine for r in range(s + L, s + L + H)}
        lo, hi = plan.excluded(k)
        assert target_rows and (lo == 0 or min(target_rows) - lo >= plan.purge)
        assert hi == plan.history_end or hi - max(target_rows) > plan.purge
        for seg in plan.train_segments(k, values, L + H):
            rows = set(seg.values[:, 0].astype(int).tolist())
            assert not rows & target_rows and seg.values[0, 0] == seg.start
            assert min(abs(r - t) for r in rows for t in (min(target_rows), max(target_rows))) >= plan.purge


def test_fold_plan_refuses_folds_without_training_data_and_lowers_the_default_purge_for_short_series():
    with pytest.raises(ValueError, match="leaves no training window"):
        make_fold_plan(history_end=200, context_length=96, max_horizon=24, n_folds=5)
    with pytest.raises(ValueError, match="leaves no training window"):
        make_fold_plan(history_end=6071, context_length=512, max_horizon=720, n_folds=2, purge=1232)
    plan = make_fold_plan(history_end=6071, context_length=512, max_horizon=720, n_folds=2)  # exchange_rate at 720
    assert 0 <= plan.purge < 512 + 720
    for k in range(2):
        lo, hi = plan.excluded(k)
        assert max(lo, plan.history_end - hi) >= 512 + 720


def test_memorising_member_gets_its_unseen_error_out_of_fold_not_zero(tmp_path: Path, memo_registry: None):
    noisy_walk().to_csv(tmp_path / "walk.csv", index=False)
    cfg = load_config(None, None, {"task": {"context_length": L, "horizons": [H]}}, ["runtime.progress=false"])
    run = prepare_data(cfg, str(tmp_path / "walk.csv"), H)
    plan = make_fold_plan(run.history_end, L, H, 5)
    spec = task_spec(cfg, run, H)
    fits = fit_member_stages("memo", cfg, run, spec, [plan])
    starts = plan.history_starts(H)
    ctx, tgt = run.windows(starts, L, H)

    def mse(f: np.ndarray) -> float:
        return float(np.mean((f - tgt) ** 2))

    in_sample = fits.refit.predict(ctx)  # the train+val refit has seen every historical window
    naive = np.repeat(ctx[:, :, -1:], H, axis=2)
    oof = fits.oof(starts, ctx, H)
    assert mse(in_sample) < 1e-12  # it memorises
    assert mse(oof) == pytest.approx(mse(naive), rel=1e-6)  # and no fold fit ever saw its fold's targets
    assert mse(naive) > 0.01  # naive is far from perfect on a noisy walk


def test_memorising_member_is_not_trusted_by_the_combination(tmp_path: Path, memo_registry: None, capsys):
    noisy_walk().to_csv(tmp_path / "walk.csv", index=False)
    assert main(["fit", "--data", str(tmp_path / "walk.csv"), "--context-length", str(L), "--horizon", str(H),
                 "--members", "memo,seasonal_naive,mean", "--router", "inverse_error",
                 "--set", "runtime.progress=false", "--run-dir", "run"]) == 0
    entry = json.loads(Path("run/manifest.json").read_text())["results"][str(H)]
    memo = entry["metrics"]["memo"]
    assert memo["oof"]["mse"] > 0.01  # an in-sample score would be 0 and win every weight
    weights = entry["combiner"]["static"]["inverse_error"]["a"]
    assert weights["memo"] < 0.9


def test_core_references_come_from_fold_fits_that_left_the_window_out(tmp_path: Path):
    noisy_walk().to_csv(tmp_path / "walk.csv", index=False)
    cfg = load_config(None, None, {"task": {"context_length": L, "horizons": [H]}}, ["runtime.progress=false"])
    run = prepare_data(cfg, str(tmp_path / "walk.csv"), H)
    plan = make_fold_plan(run.history_end, L, H, 5)
    spec = task_spec(cfg, run, H)
    fits = {"linear": fit_member_stages("linear", cfg, run, spec, [plan])}
    source = oof_references(fits, ("linear",), run.scaled, L)
    starts = plan.history_starts(H)[::97]
    refs = source.forecasts(starts, H)  # [n, C, 1, H]
    ctx, _ = run.windows(starts, L, H)
    for i, s in enumerate(starts):
        k = int(plan.fold_of(np.array([s]))[0])
        np.testing.assert_allclose(refs[i, :, 0], fits["linear"].folds[k].predict(ctx[i : i + 1])[0], rtol=1e-6)
        assert not np.allclose(refs[i, :, 0], fits["linear"].refit.predict(ctx[i : i + 1])[0])


class Exploder(Member):
    """A broken member: right shape, off by a factor of a thousand on channel b."""

    name = "exploder"
    horizon_agnostic = True

    def fit(self, train, val, spec):  # noqa: ANN001, ANN201
        self.context_length_, self.horizon_ = spec.context_length, spec.horizon
        return self

    def frozen(self):  # noqa: ANN201
        return Exploder()

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        out = np.repeat(check_context(context, self.context_length_)[:, :, -1:], self.horizon_, axis=2)
        out[:, 1] *= 1000.0
        return out


def test_sanity_gate_sets_an_exploding_member_aside_on_its_channel(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(registry.REGISTRY, "exploder", (lambda cfg, period: Exploder(), False))
    allow_test_members(monkeypatch)
    noisy_walk().to_csv(tmp_path / "walk.csv", index=False)
    assert main(["fit", "--data", str(tmp_path / "walk.csv"), "--context-length", str(L), "--horizon", str(H),
                 "--members", "exploder,seasonal_naive,linear", "--router", "equal", "--set", "runtime.progress=false",
                 "--run-dir", "run"]) == 0
    err = capsys.readouterr().err
    assert "sanity gate: exploder set aside on b" in err
    entry = json.loads(Path("run/manifest.json").read_text())["results"][str(H)]
    assert entry["gate"]["gated"] == {"exploder": ["b"]}
    equal = entry["combiner"]["static"]["equal"]
    assert equal["b"]["exploder"] == 0.0 and equal["a"]["exploder"] == pytest.approx(1 / 3)
    m = entry["metrics"]
    assert m["equal"]["test"]["per_channel"]["b"]["mse"] < m["seasonal_naive"]["test"]["per_channel"]["b"]["mse"] * 1.5
    assert m["exploder"]["test"]["per_channel"]["b"]["mse"] > 1000
    assert main(["forecast", "--run-dir", "run"]) == 0
    md = Path("run/report.md").read_text()
    assert "**Set aside.** exploder set aside on b" in md and "exploder (set aside)" in md
    capsys.readouterr()
    assert main(["evaluate", "--run-dir", "run", "--per-channel"]) == 0
    out = capsys.readouterr().out
    assert "note: exploder is set aside on b" in out and "test mse per channel" in out


def test_refit_train_only_keeps_the_selection_fit(tmp_path: Path):
    noisy_walk().to_csv(tmp_path / "walk.csv", index=False)
    assert main(["fit", "--data", str(tmp_path / "walk.csv"), "--context-length", str(L), "--horizon", str(H),
                 "--members", "seasonal_naive,linear", "--set", "runtime.progress=false", "--set", "task.refit=train",
                 "--run-dir", "run"]) == 0
    m = json.loads(Path("run/manifest.json").read_text())["results"][str(H)]["metrics"]
    assert m["linear"]["test"]["mse"] == m["linear"]["test_train_only"]["mse"]
    assert main(["fit", "--data", str(tmp_path / "walk.csv"), "--context-length", str(L), "--horizon", str(H),
                 "--members", "seasonal_naive,linear", "--set", "runtime.progress=false", "--run-dir", "run2"]) == 0
    m2 = json.loads(Path("run2/manifest.json").read_text())["results"][str(H)]["metrics"]
    assert m2["linear"]["test"]["mse"] != m2["linear"]["test_train_only"]["mse"]  # train+val refit by default
    assert m2["linear"]["test_train_only"]["mse"] == pytest.approx(m["linear"]["test"]["mse"])


def _reference_rlinear(x: np.ndarray, starts: list[int], alpha: float) -> np.ndarray:
    """The RLinear ridge map [L, H] fitted on the windows of x [T, 1] starting at ``starts``, written out plainly:
    each window minus its context mean, over its context std; rows weighted by the squared std; no intercept;
    penalty alpha x the total weight."""
    ctx = np.stack([x[s : s + L, 0] for s in starts]).astype(np.float64)
    tgt = np.stack([x[s + L : s + L + H, 0] for s in starts]).astype(np.float64)
    mean, std = ctx.mean(1, keepdims=True), ctx.std(1, keepdims=True)
    z, y, w = (ctx - mean) / std, (tgt - mean) / std, std[:, 0] ** 2
    return np.linalg.solve(z.T @ (w[:, None] * z) + alpha * w.sum() * np.eye(L), z.T @ (w[:, None] * y))


def test_segments_are_never_spanned_by_a_training_window():
    from baselines.linear import RidgeLinear

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 1)).astype(np.float32)
    spec = TaskSpec(L, H)
    whole = RidgeLinear(alphas=(1.0,)).fit(x, None, spec)
    split = RidgeLinear(alphas=(1.0,)).fit([Segment(x[:200], 0), Segment(x[200:], 200)], None, spec)
    # one array: every window of the 400 rows; two segments: only those inside rows 0-199 or rows 200-399
    every = list(range(400 - L - H + 1))
    inside = [s for s in every if s + L + H <= 200 or s >= 200]
    assert len(inside) == len(every) - (L + H - 1)
    np.testing.assert_allclose(whole.weights_, _reference_rlinear(x, every, 1.0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(split.weights_, _reference_rlinear(x, inside, 1.0), rtol=1e-6, atol=1e-9)
    assert not np.allclose(split.weights_, whole.weights_)  # the windows across row 200 do count
    with pytest.raises(ValueError, match="no training window"):
        RidgeLinear().fit([Segment(x[:30], 0)], None, spec)


@pytest.mark.parametrize(("normalization", "decomposition"), [("revin", 0), ("last", 0), ("none", 25), ("revin", 25)])
def test_linear_fit_many_equals_one_fit_per_stage(normalization: str, decomposition: int):
    """The one-pass fit of every stage gives exactly what a selection fit and frozen refits give."""
    from baselines.linear import RidgeLinear

    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(600, 2)), axis=0).astype(np.float32)
    spec = TaskSpec(L, H)
    trains = [[Segment(x[:300], 0)], [Segment(x[:100], 0), Segment(x[250:], 250)], [Segment(x[:450], 0)], [Segment(x, 0)]]
    val = Segment(x[300 - L : 450], 300 - L)
    many = RidgeLinear(normalization, decomposition=decomposition).fit_many(trains, val, spec)
    first = RidgeLinear(normalization, decomposition=decomposition).fit(trains[0], val, spec)
    one_by_one = [first] + [first.frozen().fit(t, None, spec) for t in trains[1:]]
    assert many[0].alpha_ == first.alpha_ and all(m.alphas == (first.alpha_,) for m in many[1:])
    for a, b in zip(many, one_by_one, strict=True):
        np.testing.assert_allclose(a.weights_, b.weights_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(a.bias_, b.bias_, rtol=1e-9, atol=1e-12)


def test_the_cores_time_limit_counts_the_fold_fits_and_the_refit_of_its_budget(tmp_path: Path):
    pytest.importorskip("torch")
    noisy_walk().to_csv(tmp_path / "walk.csv", index=False)
    core = ["core.backbone=none", "core.max_train_windows=64", "core.max_val_windows=32", "core.d_model=8",
            "core.n_heads=2", "core.d_ff=16", "core.epochs=2", "core.ladder_samples=16", "core.ladder_variants=[none]",
            "core.reference_members=[linear]", "core.device=cpu"]  # fmt: skip
    cfg = load_config(None, None, {"task": {"context_length": L, "horizons": [H]}}, ["runtime.progress=false", *core])
    run = prepare_data(cfg, str(tmp_path / "walk.csv"), H)
    plan = make_fold_plan(run.history_end, L, H, 3)
    spec = task_spec(cfg, run, H)
    refs = oof_references({"linear": fit_member_stages("linear", cfg, run, spec, [plan])}, ("linear",), run.scaled, L)
    fits = fit_member_stages("timellm", cfg, run, spec, [plan], refs)
    assert fits.selection.ladder_winner_["later_fits"] == 3 + 1  # three fold fits and the refit on train + val
    assert len(fits.folds) == 3 and fits.production is fits.refit  # the core's production fit is its refit
