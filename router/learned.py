"""The learned router: window features -> weights over members.

Three modes share one feature vector per window and channel:

- ``vote``: a linear softmax model, ``w = softmax(W' x + b)``, trained to
  minimise the MSE of the weighted forecast ``sum_m w_m f_m`` (the combined
  forecast that is actually used).
- ``select``: a linear softmax model trained on the FFORMA objective (the
  softmax-weighted member errors ``sum_m w_m e_m``, which rewards putting
  all weight on the best member); the arg-max member gets weight one.
- ``rules``: a shallow decision tree over the raw features whose leaves each
  name one member (the member with the lowest validation error among the
  leaf's windows): a readable rule table.

Both softmax models are fitted by L-BFGS on standardised features with an L2
penalty (chosen from a few candidates on an inner chronological split of the
windows they are fitted on), starting from equal weights. Errors enter through per-sample
moments (``G = <f_m f_k>``, ``b = <f_m y>``, ``c = <y y>``, averaged over
the horizon), so training never touches ``[N, C, M, H]`` arrays again.

Before a mode is used it must beat both equal weights and the best single
member on a held-back chronological tail of the validation windows
(:func:`fit_router`); otherwise it falls back to the better of the two.

References:
    Montero-Manso, Athanasopoulos, Hyndman & Talagala, "FFORMA: Feature-based
    forecast model averaging", IJF 2020.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.tree import DecisionTreeRegressor

from router.features import backtest_steps, feature_names, shift_context, window_features
from router.static import static_weights

logger = logging.getLogger(__name__)

ROUTER_MODES = ("vote", "select", "rules")
Z_CLIP = 5.0  # standardised features are clipped to +-Z_CLIP


def moments(forecasts: list[np.ndarray], target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample second moments of member forecasts and the target.

    Args:
        forecasts: M arrays [N, C, H].
        target: [N, C, H].

    Returns:
        G [N, C, M, M] = mean_h f_m f_k, b [N, C, M] = mean_h f_m y,
        c [N, C] = mean_h y^2 (float64). The MSE of weights w is then
        ``w'Gw - 2 w'b + c``.
    """
    y = np.asarray(target, dtype=np.float64)
    fs = [np.asarray(f, dtype=np.float64) for f in forecasts]
    M = len(fs)
    G = np.empty(y.shape[:-1] + (M, M))
    for m in range(M):
        for k in range(m, M):
            G[..., m, k] = G[..., k, m] = (fs[m] * fs[k]).mean(-1)
    b = np.stack([(f * y).mean(-1) for f in fs], axis=-1)
    return G, b, (y * y).mean(-1)


def member_errors(G: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Each member's own MSE per sample: [..., M]."""
    return np.diagonal(G, axis1=-2, axis2=-1) - 2 * b + c[..., None]


def combined_mse(w: np.ndarray, G: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """MSE of the weighted forecast per sample: w [..., M] -> [...]."""
    return np.einsum("...m,...mk,...k->...", w, G, w) - 2 * (w * b).sum(-1) + c


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


@dataclass
class SoftmaxLinear:
    """``w = softmax(x W + bias)`` over M members, x: standardised features [S, F].

    Args:
        objective: "combined" (MSE of the weighted forecast) or "fforma"
            (softmax-weighted member errors).
        l2: penalty on W (the bias is not penalised).
        max_iter: L-BFGS iterations.
    """

    objective: str = "combined"
    l2: float = 1e-3
    max_iter: int = 300
    W_: np.ndarray | None = None  # [F, M]
    bias_: np.ndarray | None = None  # [M]

    def fit(self, X: np.ndarray, G: np.ndarray, b: np.ndarray, c: np.ndarray) -> SoftmaxLinear:
        """X [S, F]; G [S, M, M], b [S, M], c [S]."""
        S, F = X.shape
        M = b.shape[-1]
        err = member_errors(G, b, c)
        scale = max(float(err.mean()), 1e-12)  # losses in units of the mean member error

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W, bias = theta[: F * M].reshape(F, M), theta[F * M:]
            w = softmax(X @ W + bias)  # [S, M]
            if self.objective == "combined":
                per = combined_mse(w, G, b, c)
                g = 2 * (np.einsum("smk,sk->sm", G, w) - b)
            else:
                per = (w * err).sum(-1)
                g = err
            dz = w * (g - (w * g).sum(-1, keepdims=True)) / (S * scale)
            loss = per.mean() / scale + self.l2 * float((W * W).sum())
            grad = np.concatenate([(X.T @ dz + 2 * self.l2 * W).ravel(), dz.sum(0)])
            return float(loss), grad

        if self.objective not in ("combined", "fforma"):
            raise ValueError(f"`objective` must be combined or fforma; got {self.objective!r}.")
        res = minimize(loss_grad, np.zeros(F * M + M), jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter})
        self.W_, self.bias_ = res.x[: F * M].reshape(F, M), res.x[F * M:]
        return self

    def weights(self, X: np.ndarray) -> np.ndarray:
        """X [..., F] -> weights [..., M]."""
        assert self.W_ is not None and self.bias_ is not None, "fit first"
        return softmax(X @ self.W_ + self.bias_)


@dataclass
class RuleTree:
    """A shallow regression tree over raw features; each leaf names one member.

    The tree is fitted to each sample's member errors minus their mean (so it
    splits on what makes one member better than another, not on how hard a
    window is); a leaf picks the member with the lowest mean error in it.
    """

    max_depth: int = 3
    min_leaf: float = 0.02
    seed: int = 0
    tree_: DecisionTreeRegressor | None = None
    leaf_member_: dict[int, int] = field(default_factory=dict)
    leaf_errors_: dict[int, np.ndarray] = field(default_factory=dict)
    leaf_count_: dict[int, int] = field(default_factory=dict)

    def fit(self, X: np.ndarray, err: np.ndarray) -> RuleTree:
        """X [S, F] raw features; err [S, M] member errors."""
        S = X.shape[0]
        self.tree_ = DecisionTreeRegressor(max_depth=self.max_depth, random_state=self.seed,
                                           min_samples_leaf=max(1, int(self.min_leaf * S)))
        self.tree_.fit(X, err - err.mean(-1, keepdims=True))
        leaves = self.tree_.apply(X)
        for leaf in np.unique(leaves):
            e = err[leaves == leaf].mean(0)
            self.leaf_member_[int(leaf)] = int(np.argmin(e))
            self.leaf_errors_[int(leaf)] = e
            self.leaf_count_[int(leaf)] = int((leaves == leaf).sum())
        return self

    def choice(self, X: np.ndarray) -> np.ndarray:
        """X [..., F] -> index of the chosen member [...]."""
        assert self.tree_ is not None, "fit first"
        flat = X.reshape(-1, X.shape[-1])
        leaves = self.tree_.apply(flat)
        return np.array([self.leaf_member_[int(v)] for v in leaves]).reshape(X.shape[:-1])

    def path(self, x: np.ndarray, names: list[str]) -> tuple[list[str], int]:
        """The conditions one feature vector x [F] meets, and its leaf id."""
        assert self.tree_ is not None
        t = self.tree_.tree_
        node, conds = 0, []
        while t.children_left[node] != -1:
            j, thr = t.feature[node], t.threshold[node]
            if x[j] <= thr:
                conds.append(f"{names[j]} <= {thr:.3g}")
                node = t.children_left[node]
            else:
                conds.append(f"{names[j]} > {thr:.3g}")
                node = t.children_right[node]
        return conds, int(node)

    def rules(self, names: list[str], members: list[str]) -> list[dict[str, Any]]:
        """One row per leaf: conditions, chosen member, windows, mean errors."""
        assert self.tree_ is not None
        t = self.tree_.tree_
        rows: list[dict[str, Any]] = []

        def walk(node: int, conds: list[str]) -> None:
            if t.children_left[node] == -1:
                e = self.leaf_errors_.get(node)
                if e is None:
                    return
                m = self.leaf_member_[node]
                rows.append({
                    "leaf": node,
                    "if": conds or ["always"],
                    "use": members[m],
                    "samples": self.leaf_count_[node],
                    "val_mse_chosen": float(e[m]),
                    "val_mse_equal_members_mean": float(e.mean()),
                })
                return
            j, thr = t.feature[node], t.threshold[node]
            walk(t.children_left[node], [*conds, f"{names[j]} <= {thr:.3g}"])
            walk(t.children_right[node], [*conds, f"{names[j]} > {thr:.3g}"])

        walk(0, [])
        return rows


@dataclass
class Router:
    """A fitted router for one horizon; pickled into the run directory.

    Attributes:
        members: member order of every weight vector.
        periods: detected periods the features use.
        horizon, context_length, steps: H, L and the backtest length H'.
        names: feature names.
        mean_, std_: feature standardisation (validation windows).
        models_: mode -> fitted model (SoftmaxLinear or RuleTree).
        static_: static mode -> weights over members (all validation windows).
        check_: mode -> the held-back validation check.
        fallback_: mode -> None, or the static mode used instead.
    """

    members: list[str]
    periods: tuple[int, ...]
    horizon: int
    context_length: int
    steps: int
    names: list[str]
    mean_: np.ndarray
    std_: np.ndarray
    models_: dict[str, Any]
    static_: dict[str, dict[str, float]]
    check_: dict[str, dict[str, Any]]
    fallback_: dict[str, str | None]

    # --- inputs -----------------------------------------------------------
    def backtest_context(self, context: np.ndarray) -> np.ndarray:
        """The context each member backtests from: [N, C, L] -> [N, C, L]."""
        return shift_context(context, self.steps)

    def features(self, context: np.ndarray, forecasts: dict[str, np.ndarray],
                 backtests: dict[str, np.ndarray]) -> np.ndarray:
        """Raw features [N, C, F] (forecasts/backtests: member -> [N, C, H])."""
        return window_features(context, forecasts, backtests, self.members, self.periods, self.steps)

    def standardise(self, X: np.ndarray) -> np.ndarray:
        return np.clip((X - self.mean_) / self.std_, -Z_CLIP, Z_CLIP)

    # --- weights ----------------------------------------------------------
    def raw_weights(self, mode: str, X: np.ndarray) -> np.ndarray:
        """What the learned ``mode`` says, ignoring any fallback: X [..., F] -> [..., M]."""
        return _mode_weights(self.models_[mode], mode, self.standardise(X), X, len(self.members))

    def weights(self, mode: str, X: np.ndarray) -> np.ndarray:
        """Weights actually used for ``mode`` (the fallback's when it fell back): [..., M]."""
        if mode not in ROUTER_MODES:
            static = np.array([self.static_[mode][m] for m in self.members])
            return np.broadcast_to(static, X.shape[:-1] + (len(self.members),)).copy()
        fb = self.fallback_.get(mode)
        if fb is not None:
            return self.weights(fb, X)
        return self.raw_weights(mode, X)

    # --- explanations -----------------------------------------------------
    def explain(self, mode: str, x: np.ndarray, top: int = 5) -> dict[str, Any]:
        """Why ``mode`` weighs the members as it does for one feature vector x [F].

        For the softmax modes each feature's contribution to a member's logit
        is ``W[j, m] * z_j`` (z: standardised value), centred over members;
        the features with the widest spread of contributions pushed the
        weights most. For ``rules`` it is the path through the tree.
        """
        out: dict[str, Any] = {"mode": mode, "fallback": self.fallback_.get(mode)}
        z = self.standardise(x)
        if mode == "rules":
            conds, leaf = self.models_["rules"].path(x, self.names)
            out["rule"] = conds
            out["use"] = self.members[self.models_["rules"].leaf_member_[leaf]]
        else:
            model = self.models_[mode]
            contrib = model.W_ * z[:, None]  # [F, M]
            contrib = contrib - contrib.mean(1, keepdims=True)
            push = contrib.max(1) - contrib.min(1)
            order = np.argsort(push)[::-1][:top]
            out["baseline_weights"] = {m: float(v) for m, v in zip(self.members, softmax(model.bias_), strict=True)}
            out["drivers"] = [{
                "feature": self.names[j],
                "value": float(x[j]),
                "z": float(z[j]),
                "favours": self.members[int(np.argmax(contrib[j]))],
                "disfavours": self.members[int(np.argmin(contrib[j]))],
                "push": float(push[j]),
                "logit_contribution": {m: float(v) for m, v in zip(self.members, contrib[j], strict=True)},
            } for j in order]
        return out

    def rule_table(self) -> list[dict[str, Any]]:
        return self.models_["rules"].rules(self.names, self.members)


def _mode_weights(model: Any, mode: str, Z: np.ndarray, X: np.ndarray, M: int) -> np.ndarray:
    if mode == "vote":
        return model.weights(Z)
    if mode == "select":
        return np.eye(M)[np.argmax(model.weights(Z), axis=-1)]
    if mode == "rules":
        return np.eye(M)[model.choice(X)]
    raise ValueError(f"`mode` must be one of {', '.join(ROUTER_MODES)}; got {mode!r}.")


def _flat(a: np.ndarray) -> np.ndarray:
    """[N, C, ...] -> [N * C, ...]."""
    return a.reshape(-1, *a.shape[2:])


def _standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    std = X.std(0)
    return X.mean(0), np.where(std > 1e-8, std, 1.0)


def _choose_l2(objective: str, X: np.ndarray, G: np.ndarray, b: np.ndarray, c: np.ndarray, cfg: Any,
               gap: int) -> float:
    """The L2 penalty from ``cfg.l2`` that does best on an inner chronological split.

    X, G, b, c are per window and channel ([N, C, ...]); the last
    ``cfg.holdout_fraction`` of the windows, after a gap of ``gap`` windows,
    score each candidate fitted on the windows before them.
    """
    grid = tuple(cfg.l2)
    N = X.shape[0]
    n_hold = int(round(cfg.holdout_fraction * N))
    n_fit = N - n_hold - gap
    if len(grid) == 1 or n_hold < 1 or n_fit < 2 * X.shape[-1]:
        return float(sorted(grid)[len(grid) // 2])
    fit, hold = slice(0, n_fit), slice(N - n_hold, N)
    mean, std = _standardiser(_flat(X[fit]))
    Zf = np.clip((_flat(X[fit]) - mean) / std, -Z_CLIP, Z_CLIP)
    Zh = np.clip((_flat(X[hold]) - mean) / std, -Z_CLIP, Z_CLIP)
    Gh, bh, ch = _flat(G[hold]), _flat(b[hold]), _flat(c[hold])
    scores = []
    for l2 in grid:
        model = SoftmaxLinear(objective, l2, cfg.max_iter).fit(Zf, _flat(G[fit]), _flat(b[fit]), _flat(c[fit]))
        w = model.weights(Zh)
        if objective == "fforma":  # select mode: judged as it is used, the arg-max member
            w = np.eye(w.shape[-1])[np.argmax(w, axis=-1)]
        scores.append(float(combined_mse(w, Gh, bh, ch).mean()))
    return float(grid[int(np.argmin(scores))])


def _fit_models(X: np.ndarray, G: np.ndarray, b: np.ndarray, c: np.ndarray, cfg: Any, seed: int, gap: int
                ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Fit every mode on windows X [N, C, F] (raw), G, b, c; returns models, feature mean, std.

    The softmax models' L2 penalty is chosen on an inner chronological split
    of these windows (:func:`_choose_l2`), then they are refitted on all of them.
    """
    Xf, Gf, bf, cf = _flat(X), _flat(G), _flat(b), _flat(c)
    mean, std = _standardiser(Xf)
    Z = np.clip((Xf - mean) / std, -Z_CLIP, Z_CLIP)
    models: dict[str, Any] = {}
    for mode, objective in (("vote", "combined"), ("select", "fforma")):
        l2 = _choose_l2(objective, X, G, b, c, cfg, gap)
        models[mode] = SoftmaxLinear(objective, l2, cfg.max_iter).fit(Z, Gf, bf, cf)
    models["rules"] = RuleTree(cfg.tree_depth, cfg.tree_min_leaf, seed).fit(Xf, member_errors(Gf, bf, cf))
    return models, mean, std


def fit_router(
    context: np.ndarray,
    forecasts: dict[str, np.ndarray],
    backtests: dict[str, np.ndarray],
    target: np.ndarray,
    channels: list[int],
    periods: tuple[int, ...],
    cfg: Any,
    seed: int = 0,
) -> Router:
    """Fit the router on validation windows, check it on a held-back tail, refit.

    1. Features of every validation window and channel.
    2. Chronological check: fit on the first windows, score on the last
       ``cfg.holdout_fraction`` of them; a gap of H windows between the two
       parts keeps any target value of the fitting part out of the held-back
       part. A mode passes if its MSE there is below ``(1 - cfg.min_gain)``
       times both equal weights' and the best single member's (chosen on
       the fitting part); otherwise it falls back to the better of the two
       over all validation windows (both are static, so the whole validation
       part judges them more steadily than its tail), and a warning says so.
    3. Refit every mode on all validation windows (more data; the check
       already judged the procedure, and the fallback decision stands).

    Args:
        context: validation contexts [N, C, L].
        forecasts: member -> validation forecasts [N, C, H].
        backtests: member -> forecasts [N, C, H] from ``shift_context(context, H')``.
        target: validation targets [N, C, H].
        channels: output channels the router is trained and judged on.
        periods: detected periods.
        cfg: a RouterConfig (holdout_fraction, min_gain, l2 candidates, max_iter,
            tree_depth, tree_min_leaf, backtest_steps).
        seed: the run's seed.

    Returns:
        A fitted :class:`Router`.
    """
    members = list(forecasts)
    if len(members) < 2:
        raise ValueError(f"the router needs at least two members; got {members}.")
    N, _, L = context.shape
    H = target.shape[-1]
    steps = backtest_steps(H, L, cfg.backtest_steps)
    names = feature_names(periods, members)
    X = window_features(context, forecasts, backtests, members, periods, steps)[:, channels]  # [N, Co, F]
    G, b, c = moments([forecasts[m][:, channels] for m in members], target[:, channels])
    err = member_errors(G, b, c)  # [N, Co, M]

    def flat(a: np.ndarray, rows: slice) -> np.ndarray:
        part = a[rows]
        return part.reshape(-1, *part.shape[2:])

    all_rows = slice(0, N)
    eq_all = float(combined_mse(np.full(len(members), 1.0 / len(members)), flat(G, all_rows),
                                flat(b, all_rows), flat(c, all_rows)).mean())
    better = "equal" if eq_all <= float(flat(err, all_rows).mean(0).min()) else "best_single"
    n_hold = int(round(cfg.holdout_fraction * N))
    n_fit = N - n_hold - H
    check: dict[str, dict[str, Any]] = {}
    fallback: dict[str, str | None] = {}
    if n_hold < 1 or n_fit < 2 * len(names):
        reason = (f"too few validation windows ({N}) for a held-back check with gap {H}; "
                  f"need at least {2 * len(names) + H + 1}")
        for mode in ROUTER_MODES:
            check[mode] = {"passed": False, "reason": reason}
        for mode in ROUTER_MODES:
            check[mode]["fallback"] = better
            fallback[mode] = better
        logger.warning("router: %s; every mode falls back to %s", reason, better)
    else:
        fit_rows, hold_rows = slice(0, n_fit), slice(N - n_hold, N)
        models, mean, std = _fit_models(X[fit_rows], G[fit_rows], b[fit_rows], c[fit_rows], cfg, seed, H)
        Xh, Gh, bh, ch = (flat(a, hold_rows) for a in (X, G, b, c))
        Zh = np.clip((Xh - mean) / std, -Z_CLIP, Z_CLIP)
        eq = float(combined_mse(np.full(len(members), 1.0 / len(members)), Gh, bh, ch).mean())
        best_idx = int(np.argmin(flat(err, fit_rows).mean(0)))
        best = float(member_errors(Gh, bh, ch)[:, best_idx].mean())
        for mode in ROUTER_MODES:
            w = _mode_weights(models[mode], mode, Zh, Xh, len(members))
            score = float(combined_mse(w, Gh, bh, ch).mean())
            passed = score < (1.0 - cfg.min_gain) * min(eq, best)
            check[mode] = {
                "passed": bool(passed),
                "fit_windows": n_fit, "gap_windows": H, "holdout_windows": n_hold,
                "holdout_mse": score, "holdout_mse_equal": eq,
                "holdout_mse_best_single": best, "best_single": members[best_idx],
                "min_gain": cfg.min_gain,
                "fallback": None if passed else better,
            }
            fallback[mode] = None if passed else better
            if not passed:
                logger.warning(
                    "router %s at H=%d does not beat equal weights (%.4f) and the best single member "
                    "%s (%.4f) on the held-back validation windows (%.4f); falling back to %s",
                    mode, H, eq, members[best_idx], best, score, better)
    models, mean, std = _fit_models(X, G, b, c, cfg, seed, H)
    val_mse = {m: float(v) for m, v in zip(members, flat(err, slice(0, N)).mean(0), strict=True)}
    static = {mode: static_weights(val_mse, mode) for mode in ("equal", "inverse_error", "best_single")}
    return Router(members=members, periods=tuple(periods), horizon=H, context_length=L, steps=steps,
                  names=names, mean_=mean, std_=std, models_=models, static_=static,
                  check_=check, fallback_=fallback)


def combine_per_window(forecasts: dict[str, np.ndarray], members: list[str], weights: np.ndarray) -> np.ndarray:
    """sum_m w[N, C, m] * f_m[N, C, H] -> [N, C, H] float32."""
    out = np.zeros(forecasts[members[0]].shape, dtype=np.float32)
    for k, m in enumerate(members):
        out += weights[..., k, None].astype(np.float32) * forecasts[m].astype(np.float32)
    return out
