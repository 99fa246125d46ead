"""The router: features, the learned modes, the held-back check and its fallback."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid.config import RouterConfig
from router.features import backtest_steps, context_feature_names, context_features, feature_names, shift_context
from router.learned import ROUTER_MODES, combine_per_window, combined_mse, fit_router, moments

L, H, C = 96, 12, 2


def regime_setup(n: int = 480, seed: int = 0, informative: bool = True):
    """Windows in alternating blocks of two regimes.

    Regime A: the context is a clean daily (24-step) cycle and member
    ``seasonal`` is accurate while ``trend`` is poor; regime B: the context
    is a noisy trend without a cycle and it is the other way round. With
    ``informative=False`` the contexts are white noise and both members are
    equally (and independently) wrong everywhere, so no feature can help.
    """
    rng = np.random.default_rng(seed)
    regime = (np.arange(n) // 20) % 2  # blocks of 20 windows: A, B, A, B, ...
    t = np.arange(L)
    ctx = np.empty((n, C, L), np.float32)
    for i in range(n):
        for c in range(C):
            if not informative:
                ctx[i, c] = rng.normal(size=L)
            elif regime[i] == 0:
                ctx[i, c] = np.sin(2 * np.pi * (t + i) / 24) + 0.05 * rng.normal(size=L)
            else:
                ctx[i, c] = 0.02 * t * (1 + c) + 0.3 * rng.normal(size=L)
    target = rng.normal(size=(n, C, H)).astype(np.float32)
    small, big = 0.2, 1.5
    a = regime[:, None, None] == 0
    if informative:
        seasonal = target + rng.normal(size=target.shape) * np.where(a, small, big)
        trend = target + rng.normal(size=target.shape) * np.where(a, big, small)
    else:
        seasonal = target + rng.normal(size=target.shape)
        trend = target + rng.normal(size=target.shape)
    forecasts = {"seasonal": seasonal.astype(np.float32), "trend": trend.astype(np.float32)}
    backtests = {m: rng.normal(size=target.shape).astype(np.float32) for m in forecasts}  # uninformative
    return ctx, forecasts, backtests, target, regime


def test_features_are_finite_scale_free_and_named():
    ctx, forecasts, backtests, _, _ = regime_setup(n=60)
    feats = context_features(ctx, (24, 12))
    assert feats.shape == (60, C, len(context_feature_names((24, 12))))
    assert np.isfinite(feats).all()
    # scale-free: multiplying and shifting the context changes only log_std
    again = context_features(ctx * 7.0 + 3.0, (24, 12))
    keep = [i for i, n in enumerate(context_feature_names((24, 12))) if n != "log_std"]
    np.testing.assert_allclose(feats[..., keep], again[..., keep], atol=1e-6)
    # a clean daily cycle has strong seasonality and ACF at 24, none at a trend window
    names = context_feature_names((24, 12))
    s24 = feats[..., names.index("seasonal_strength@24")]
    assert s24[:20].min() > 0.9 and s24[20:40].max() < 0.3
    assert feature_names((24,), ["a", "b"])[-2:] == ["backtest:a", "backtest:b"]


def test_shift_context_and_backtest_steps():
    ctx = np.arange(10, dtype=np.float32).reshape(1, 1, 10)
    np.testing.assert_array_equal(shift_context(ctx, 3)[0, 0], [0, 0, 0, 0, 1, 2, 3, 4, 5, 6])
    assert backtest_steps(96, 512) == 96 and backtest_steps(336, 512) == 128 and backtest_steps(5, 512, 7) == 7


def test_router_beats_equal_and_best_single_when_features_reveal_the_regime():
    ctx, forecasts, backtests, target, regime = regime_setup()
    router = fit_router(ctx, forecasts, backtests, target, [0, 1], (24,), RouterConfig(), seed=0)
    for mode in ROUTER_MODES:
        check = router.check_[mode]
        assert check["passed"], (mode, check)
        assert check["holdout_mse"] < 0.8 * min(check["holdout_mse_equal"], check["holdout_mse_best_single"])
        assert router.fallback_[mode] is None
    # on fresh windows of the same process
    ctx2, fc2, bt2, tgt2, regime2 = regime_setup(n=200, seed=1)
    X = router.features(ctx2, fc2, bt2)
    G, b, c = moments([fc2[m] for m in router.members], tgt2)
    equal = combined_mse(np.full(2, 0.5), G, b, c).mean()
    for mode in ROUTER_MODES:
        w = router.weights(mode, X)
        assert w.shape == (200, C, 2)
        assert (w >= 0).all() and np.allclose(w.sum(-1), 1.0)
        assert combined_mse(w, G, b, c).mean() < 0.8 * equal
        combined = combine_per_window(fc2, router.members, w)
        np.testing.assert_allclose(combined, w[..., :1] * fc2["seasonal"] + w[..., 1:] * fc2["trend"], atol=1e-5)
    vote = router.weights("vote", X)
    assert vote[regime2 == 0, :, 0].mean() > 0.8 and vote[regime2 == 1, :, 1].mean() > 0.8
    for mode in ("select", "rules"):
        assert set(np.unique(router.weights(mode, X))) <= {0.0, 1.0}


def test_router_falls_back_when_features_are_noise(caplog):
    ctx, forecasts, backtests, target, _ = regime_setup(informative=False)
    cfg = RouterConfig(min_gain=0.01)
    with caplog.at_level("WARNING"):
        router = fit_router(ctx, forecasts, backtests, target, [0, 1], (24,), cfg, seed=0)
    for mode in ROUTER_MODES:
        assert not router.check_[mode]["passed"]
        assert router.fallback_[mode] == "equal"  # two equally good, independent members: averaging wins
    assert "falling back to equal" in caplog.text
    X = router.features(ctx[:5], {m: f[:5] for m, f in forecasts.items()}, {m: f[:5] for m, f in backtests.items()})
    np.testing.assert_allclose(router.weights("vote", X), 0.5)


def test_too_few_windows_fall_back_visibly():
    ctx, forecasts, backtests, target, _ = regime_setup(n=40)
    router = fit_router(ctx, forecasts, backtests, target, [0], (24,), RouterConfig(), seed=0)
    assert all(fb in ("equal", "best_single") for fb in router.fallback_.values())
    assert "too few validation windows" in router.check_["vote"]["reason"]


def test_rules_mode_gives_a_readable_rule_table():
    ctx, forecasts, backtests, target, _ = regime_setup()
    router = fit_router(ctx, forecasts, backtests, target, [0, 1], (24,), RouterConfig(tree_depth=2), seed=0)
    rows = router.rule_table()
    assert 2 <= len(rows) <= 4
    assert {r["use"] for r in rows} == {"seasonal", "trend"}
    for r in rows:
        assert r["samples"] > 0 and r["val_mse_chosen"] <= r["val_mse_equal_members_mean"] + 1e-9
        for cond in r["if"]:
            feature, op, value = cond.split(" ")
            assert feature in router.names and op in ("<=", ">") and float(value) == float(value)
    conds, _ = router.models_["rules"].path(router.features(ctx[:1], {m: f[:1] for m, f in forecasts.items()},
                                                            {m: f[:1] for m, f in backtests.items()})[0, 0],
                                            router.names)
    assert conds and all(" " in c for c in conds)


def test_vote_explanation_names_the_regime_features():
    ctx, forecasts, backtests, target, _ = regime_setup()
    router = fit_router(ctx, forecasts, backtests, target, [0, 1], (24,), RouterConfig(), seed=0)
    x = router.features(ctx[:1], {m: f[:1] for m, f in forecasts.items()}, {m: f[:1] for m, f in backtests.items()})
    ex = router.explain("vote", x[0, 0], top=3)
    assert len(ex["drivers"]) == 3 and ex["fallback"] is None
    assert all(d["feature"] in router.names for d in ex["drivers"])
    assert ex["drivers"][0]["favours"] == "seasonal"  # window 0 is regime A
    assert not any(d["feature"].startswith("backtest:") for d in ex["drivers"][:1])


@pytest.mark.parametrize("mode", ["vote", "select"])
def test_softmax_weights_without_fallback_are_a_distribution(mode):
    ctx, forecasts, backtests, target, _ = regime_setup(n=200)
    router = fit_router(ctx, forecasts, backtests, target, [0, 1], (24,), RouterConfig(holdout_fraction=0.3), seed=0)
    w = router.raw_weights(mode, router.features(ctx, forecasts, backtests))
    assert (w >= 0).all() and np.allclose(w.sum(-1), 1.0)
