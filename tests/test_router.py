"""The router: features, the learned modes, the leave-one-fold-out check and its fallback, the static combiners."""

from __future__ import annotations

import numpy as np
import pytest

from router.config import CHECKS, RouterConfig
from router.features import (
    backtest_steps,
    context_feature_names,
    context_features,
    feature_names,
    shift_context,
    window_features,
)
from router.fitting import StackSet, fit_router, lofo_learned, lofo_static
from router.models import ROUTER_MODES, combined_mse, moments
from router.static import STATIC_MODES, combine, median_forecast, sound_mask, static_weights

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


K = 5  # folds of the synthetic OOF windows


def stack(ctx, forecasts, backtests, target, mask=None, folds=K):  # noqa: ANN001, ANN201
    """A StackSet over the windows (blocks of consecutive windows as folds) and the feature names."""
    members = list(forecasts)
    steps = backtest_steps(H, L)
    X = window_features(ctx, forecasts, backtests, members, (24,), steps)
    G, b, c = moments([forecasts[m] for m in members], target)
    n = ctx.shape[0]
    mask = np.ones((C, len(members)), bool) if mask is None else mask
    return StackSet(X, G, b, c, np.arange(n) * folds // n, mask), feature_names((24,), members), steps


def fit(ctx, forecasts, backtests, target, cfg=None, mask=None):  # noqa: ANN001, ANN201
    data, names, steps = stack(ctx, forecasts, backtests, target, mask)
    router, lofo = fit_router(data, list(forecasts), names, list(forecasts), (24,), H, L, steps, cfg or RouterConfig())
    return router, lofo, data


def test_router_beats_equal_and_best_single_when_features_reveal_the_regime():
    ctx, forecasts, backtests, target, regime = regime_setup()
    router, lofo, data = fit(ctx, forecasts, backtests, target)
    for mode in ROUTER_MODES:
        check = router.check_[mode]
        assert check["passed"], (mode, check)
        assert check["oof_mse"] < 0.8 * min(check["oof_mse_equal"], check["oof_mse_best_single"])
        assert check["folds_won"] > K / 2 and router.fallback_[mode] is None
        # the LOFO weights are what the check scored
        assert combined_mse(lofo[mode], data.G, data.b, data.c).mean() == pytest.approx(check["oof_mse"])
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
        combined = combine(fc2, router.members, w)
        np.testing.assert_allclose(combined, w[..., :1] * fc2["seasonal"] + w[..., 1:] * fc2["trend"], atol=1e-5)
    vote = router.weights("vote", X)
    assert vote[regime2 == 0, :, 0].mean() > 0.8 and vote[regime2 == 1, :, 1].mean() > 0.8
    for mode in ("select", "rules"):
        assert set(np.unique(router.weights(mode, X))) <= {0.0, 1.0}


def test_router_falls_back_when_features_are_noise(caplog):
    ctx, forecasts, backtests, target, _ = regime_setup(informative=False)
    with caplog.at_level("WARNING"):
        router, _, _ = fit(ctx, forecasts, backtests, target, RouterConfig(check="pooled", min_gain=0.01))
    fallback = router.check_["static"]["fallback"]
    np.testing.assert_allclose(router.static_[fallback], 0.5)  # two equally good, independent members: averaging wins
    for mode in ROUTER_MODES:
        assert not router.check_[mode]["passed"]
        assert router.fallback_[mode] == fallback
    assert f"using {fallback}" in caplog.text
    X = router.features(ctx[:5], {m: f[:5] for m, f in forecasts.items()}, {m: f[:5] for m, f in backtests.items()})
    np.testing.assert_allclose(router.weights("vote", X), 0.5)


@pytest.mark.parametrize(("informative", "expected"), [(True, 0.0), (False, 0.75)])
def test_vote_shrinkage_toward_the_static_combiner_is_chosen_out_of_fold(informative, expected):
    """The shrinkage is the grid value whose leave-one-fold-out vote, mixed with the static combiner's LOFO weights,
    has the lowest pooled MSE (recomputed here from the LOFO fits): none where the features reveal the regime, the
    most on noise features. The deployed vote mixes the refitted model's weights with the same share."""
    cfg = RouterConfig()
    ctx, forecasts, backtests, target, _ = regime_setup(informative=informative)
    router, lofo, data = fit(ctx, forecasts, backtests, target, cfg)
    l2 = router.check_["vote"]["settings"]["l2"]
    static = lofo_static(data, cfg.sound_ratio, 0.05, cfg.greedy_rounds)
    raw = lofo_learned(data, "vote", (l2,), static.sound, cfg, 0)[0]
    toward = static.weights[router.shrink_to_]
    pooled = {lam: combined_mse((1 - lam) * raw + lam * toward, data.G, data.b, data.c).mean() for lam in cfg.shrinkage}
    assert router.shrink_["vote"] == min(pooled, key=pooled.get) == expected  # 0 on one data set, 0.75 on the other
    lam = router.shrink_["vote"]
    np.testing.assert_allclose(lofo["vote"], (1 - lam) * raw + lam * toward, atol=1e-12)
    X = router.features(ctx[:7], {m: f[:7] for m, f in forecasts.items()}, {m: f[:7] for m, f in backtests.items()})
    learned = router.models_["vote"].weights(router.standardise(X), np.broadcast_to(router.mask, (7, C, 2)))
    np.testing.assert_allclose(router.raw_weights("vote", X),
                               (1 - lam) * learned + lam * router.static_[router.shrink_to_], atol=1e-12)
    router.shrink_["vote"] = 1.0  # full shrinkage is the static combiner, whatever the features say
    np.testing.assert_allclose(router.raw_weights("vote", X), np.broadcast_to(router.static_[router.shrink_to_], (7, C, 2)))


def test_gated_member_gets_no_weight_in_any_mode():
    ctx, forecasts, backtests, target, _ = regime_setup()
    mask = np.array([[True, False], [True, True]])  # "trend" is set aside on channel 0 only
    router, lofo, _ = fit(ctx, forecasts, backtests, target, mask=mask)
    X = router.features(ctx, forecasts, backtests)
    for mode in (*ROUTER_MODES, *STATIC_MODES):
        w = router.raw_weights(mode, X) if mode in ROUTER_MODES else router.weights(mode, X)
        assert np.all(w[:, 0, 1] == 0.0), mode
        assert np.all(lofo[mode][:, 0, 1] == 0.0), mode
    assert router.raw_weights("vote", X)[:, 1, 1].max() > 0.5  # channel 1 still uses it


def independent(err: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moments of members with independent zero-mean errors of MSE ``err`` [Co, M] around a zero target."""
    G = np.stack([np.diag(e) for e in np.asarray(err, float)])
    return G, np.zeros(G.shape[:2]), np.zeros(G.shape[0])


def test_static_weights_from_out_of_fold_errors():
    err = np.array([[1.0, 1.03, 2.0, 0.5], [1.0, 1.2, 1.01, 3.0]])
    mask = np.array([[True, True, True, False], [True, True, True, True]])
    G, b, c = independent(err)
    top = static_weights(G, b, c, "top_k", mask, tolerance=0.05)
    np.testing.assert_allclose(top, [[0.5, 0.5, 0, 0], [0.5, 0, 0.5, 0]])
    best = static_weights(G, b, c, "best_single", mask)
    np.testing.assert_allclose(best, [[1, 0, 0, 0], [1, 0, 0, 0]])  # the gated 0.5 is never chosen
    inv = static_weights(G, b, c, "inverse_error", mask)
    assert inv[0, 3] == 0 and np.allclose(inv.sum(1), 1) and inv[0, 0] > inv[0, 2]
    np.testing.assert_allclose(static_weights(G, b, c, "equal", mask)[0], [1 / 3, 1 / 3, 1 / 3, 0])
    with pytest.raises(ValueError, match="one of"):
        static_weights(G, b, c, "trimmed")


def test_greedy_selection_finds_the_best_static_mix_with_few_rounds():
    """Caruana's selection with replacement: with independent errors the best static mix weighs each member by
    1 / its error (MSE 1 / sum(1 / err)); 24 rounds of greedy selection get within a few percent of it, put little
    weight on a member ten times worse, and are never worse out of fold than the best member."""
    err = np.array([[1.0, 1.0, 10.0], [1.0, 4.0, 4.0]])
    G, b, c = independent(err)
    w = static_weights(G, b, c, "greedy", None, rounds=24)
    mse = np.einsum("cm,cmk,ck->c", w, G, w)
    np.testing.assert_allclose(mse, 1 / (1 / err).sum(1), rtol=0.02)
    assert (mse < err.min(1)).all()
    assert w[0, 2] <= 2 / 24 and w[0, 0] == pytest.approx(w[0, 1], abs=1 / 24 + 1e-9)
    np.testing.assert_allclose(w[1], [4 / 6, 1 / 6, 1 / 6], atol=1 / 24 + 1e-9)


def test_sound_members_are_those_near_the_best_and_the_median_takes_only_them():
    err = np.array([[1.0, 1.5, 2.5, 0.9], [4.0, 1.0, 1.9, 5.0]])
    gate = np.array([[True, True, True, False], [True, True, True, True]])
    sound = sound_mask(err, gate, 2.0)
    np.testing.assert_array_equal(sound, [[True, True, False, False], [False, True, True, False]])
    assert sound_mask(err, gate, np.inf).tolist() == gate.tolist()
    f = [np.full((3, 2, 4), v, np.float32) for v in (1.0, 2.0, 30.0, -50.0)]
    med = median_forecast(f, sound)
    np.testing.assert_allclose(med[:, 0], 1.5)  # the median of members 0 and 1 on channel 0
    np.testing.assert_allclose(med[:, 1], 16.0)  # of members 1 and 2 on channel 1: the outliers are out


def test_rules_mode_gives_a_readable_rule_table():
    ctx, forecasts, backtests, target, _ = regime_setup()
    router, _, _ = fit(ctx, forecasts, backtests, target, RouterConfig(tree_depth=2))
    rows = router.rule_table()
    assert len(rows) == 4  # depth 2: every leaf is reached
    assert {r["use"] for r in rows} == {"seasonal", "trend"}
    assert sorted(len(r["if"]) for r in rows) == [2, 2, 2, 2]
    for r in rows:
        assert r["samples"] > 0 and r["oof_mse_chosen"] <= r["oof_mse_members_mean"] + 1e-9
        for cond in r["if"]:
            feature, op, value = cond.split(" ")
            assert feature in router.names and op in ("<=", ">")
            float(value)  # a number
    x = router.features(ctx[:1], {m: f[:1] for m, f in forecasts.items()}, {m: f[:1] for m, f in backtests.items()})
    conds, _ = router.models_["rules"].path(x[0, 0], router.names)
    assert conds and all(" " in c for c in conds)


def test_vote_explanation_names_the_regime_features():
    ctx, forecasts, backtests, target, _ = regime_setup()
    router, _, _ = fit(ctx, forecasts, backtests, target)
    x = router.features(ctx[:1], {m: f[:1] for m, f in forecasts.items()}, {m: f[:1] for m, f in backtests.items()})
    ex = router.explain("vote", x[0, 0], 0, top=3)
    assert len(ex["drivers"]) == 3 and ex["fallback"] is None and ex["gated"] == []
    assert all(d["feature"] in router.names for d in ex["drivers"])
    assert ex["drivers"][0]["favours"] == "seasonal"  # window 0 is regime A
    assert not any(d["feature"].startswith("backtest:") for d in ex["drivers"][:1])


@pytest.mark.parametrize("mode", ["vote", "select"])
def test_softmax_weights_are_those_of_the_fitted_logits(mode):
    """The weights recomputed by hand from the fitted model: features standardised by the OOF mean and std and
    clipped to +-5, logits x W + bias, a softmax (vote: then shrunk toward the static combiner; select: its arg-max
    member alone)."""
    ctx, forecasts, backtests, target, regime = regime_setup(n=200)
    router, _, _ = fit(ctx, forecasts, backtests, target)
    X = router.features(ctx, forecasts, backtests)
    model = router.models_[mode]
    z = np.clip((X - router.mean_) / router.std_, -5.0, 5.0)
    logits = z @ model.W_ + model.bias_
    soft = np.exp(logits - logits.max(-1, keepdims=True))
    soft /= soft.sum(-1, keepdims=True)
    lam = router.shrink_[mode]  # 0 for select
    expected = {"vote": (1 - lam) * soft + lam * router.static_[router.shrink_to_],
                "select": np.eye(2)[np.argmax(logits, axis=-1)]}
    w = router.raw_weights(mode, X)
    np.testing.assert_allclose(w, expected[mode], atol=1e-9)
    # and they follow the regime: "seasonal" (member 0) on the regime-A windows, "trend" on the others
    assert w[regime == 0, :, 0].mean() > 0.8 and w[regime == 1, :, 1].mean() > 0.8


def test_the_check_records_every_static_combiner_per_fold_so_a_deployment_rule_can_be_replayed():
    ctx, forecasts, backtests, target, _ = regime_setup(informative=False)
    router, _, _ = fit(ctx, forecasts, backtests, target)
    static = router.check_["static"]
    sizes = static["fold_windows"]
    assert sorted(sizes) == sorted(router.check_["vote"]["by_fold"]) and sum(sizes.values()) == len(ctx)
    for mode, pooled in static["oof_mse"].items():
        by_fold = static["by_fold"][mode]
        # the folds' MSEs, weighted by their windows, are the pooled out-of-fold MSE
        assert np.isclose(sum(by_fold[f] * n for f, n in sizes.items()) / len(ctx), pooled)
    assert static["by_fold"]["equal"] == router.check_["vote"]["by_fold_equal"]


def test_the_one_se_check_asks_for_fold_wins_and_standard_errors_the_pooled_check_does_not():
    ctx, forecasts, backtests, target, _ = regime_setup()
    strict = 1e9  # no gain is this many standard errors of its per-fold gains
    pooled, _, _ = fit(ctx, forecasts, backtests, target, RouterConfig(check="pooled", min_t=strict))
    one_se, _, _ = fit(ctx, forecasts, backtests, target, RouterConfig(check="one_se", min_t=strict))
    assert pooled.check_["vote"]["passed"] and pooled.fallback_["vote"] is None
    assert not one_se.check_["vote"]["passed"]
    assert one_se.fallback_["vote"] == one_se.check_["static"]["fallback"]
    # the default (no check named) is the shrinkage check: on noise features it deploys the vote, which each of the
    # other checks replaces by a static combiner
    noise = regime_setup(informative=False)[:4]
    deployed = {check: fit(*noise, RouterConfig(check=check))[0].fallback_["vote"] is None for check in CHECKS}
    assert deployed == {"shrinkage": True, "pooled": False, "one_se": False, "robust": False}
    assert fit(*noise)[0].fallback_["vote"] is None


def test_the_shrinkage_check_deploys_the_vote_whose_shrinkage_was_chosen_out_of_fold():
    """The default check: the vote as learned, even on noise features, where its shrinkage toward the best static
    combiner (here: averaging the two equally good members) is what keeps it safe; select still needs the pooled gain."""
    ctx, forecasts, backtests, target, _ = regime_setup(informative=False)
    router, lofo, data = fit(ctx, forecasts, backtests, target)
    assert router.check_["vote"]["passed"] and router.fallback_["vote"] is None
    assert router.shrink_["vote"] >= 0.5  # noise features: most of the weight comes from the static combiner
    assert not router.check_["select"]["passed"] and router.fallback_["select"] is not None
    vote = combined_mse(lofo["vote"], data.G, data.b, data.c).mean()
    assert vote <= 1.02 * router.check_["static"]["oof_mse"][router.check_["static"]["shrink_to"]]
