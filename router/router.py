"""The fitted router of one horizon: features in, weights over members out; stored in the run as data (hybrid.state).

It holds every learned mode (vote, select, rules), the vote's shrinkage
toward equal weights, the static combiners' weights, the sanity gate (which
members each output channel may use), the out-of-fold check and the
fallback decision made by :func:`router.fitting.fit_router`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.features import window_features
from router.models import ROUTER_MODES, Z_CLIP, softmax
from router.static import STATIC_MODES


@dataclass
class Router:
    """A fitted router for one horizon.

    Attributes:
        members: member order of every weight vector.
        periods: detected periods the features use.
        horizon, context_length, steps: H, L and the backtest length H'.
        names: feature names.
        backtest_members: members with a backtest feature (the others' is 0).
        mask: [Co, M] bool, the members each output channel may use (sound and allowed by the gate).
        mean_, std_: feature standardisation (all out-of-fold windows).
        models_: mode -> fitted model (SoftmaxLinear or RuleTree).
        shrink_: mode -> weight of the ``shrink_to_`` static combiner mixed into the mode's weights.
        static_: static mode -> weights [Co, M] from out-of-fold errors.
        check_: mode -> the out-of-fold check (pooled and per fold).
        fallback_: mode -> None, or the static mode used instead.
        shrink_to_: the weighted static combiner the vote is shrunk toward.
        gate_: [Co, M] bool, the sanity gate alone (``mask`` is also sound).
    """

    members: list[str]
    periods: tuple[int, ...]
    horizon: int
    context_length: int
    steps: int
    names: list[str]
    backtest_members: list[str]
    mask: np.ndarray
    mean_: np.ndarray
    std_: np.ndarray
    models_: dict[str, Any]
    shrink_: dict[str, float]
    static_: dict[str, np.ndarray]
    check_: dict[str, dict[str, Any]] = field(default_factory=dict)
    fallback_: dict[str, str | None] = field(default_factory=dict)
    shrink_to_: str = "equal"
    gate_: np.ndarray | None = None

    # --- inputs -----------------------------------------------------------
    def features(self, context: np.ndarray, forecasts: dict[str, np.ndarray],
                 backtests: dict[str, np.ndarray]) -> np.ndarray:
        """Raw features [N, Co, F] (context [N, Co, L]; forecasts/backtests: member -> [N, Co, H], output channels)."""
        return window_features(context, forecasts, backtests, self.members, self.periods, self.steps)

    def standardise(self, X: np.ndarray) -> np.ndarray:
        return np.clip((X - self.mean_) / self.std_, -Z_CLIP, Z_CLIP)

    def _mask_for(self, X: np.ndarray) -> np.ndarray:
        """The gate broadcast to X [..., Co, F] -> [..., Co, M]."""
        return np.broadcast_to(self.mask, X.shape[:-1] + (len(self.members),))

    # --- weights ----------------------------------------------------------
    def raw_weights(self, mode: str, X: np.ndarray) -> np.ndarray:
        """What ``mode`` says, ignoring any fallback: X [..., Co, F] -> weights [..., Co, M]."""
        mask = self._mask_for(X)
        model = self.models_[mode]
        if mode == "vote":
            w = model.weights(self.standardise(X), mask)
            lam = self.shrink_.get(mode, 0.0)
            return (1.0 - lam) * w + lam * self.static_[self.shrink_to_]
        if mode == "select":
            return np.eye(len(self.members))[np.argmax(model.weights(self.standardise(X), mask), axis=-1)]
        if mode == "rules":
            return np.eye(len(self.members))[model.choice(X, mask)]
        raise ValueError(f"`mode` must be one of {', '.join(ROUTER_MODES)}; got {mode!r}.")

    def weights(self, mode: str, X: np.ndarray) -> np.ndarray:
        """Weights actually used for ``mode`` (its fallback's when it fell back): [..., Co, M]."""
        if mode in STATIC_MODES:
            return np.broadcast_to(self.static_[mode], X.shape[:-1] + (len(self.members),)).copy()
        fb = self.fallback_.get(mode)
        if fb is not None:
            return self.weights(fb, X)
        return self.raw_weights(mode, X)

    # --- explanations -----------------------------------------------------
    def explain(self, mode: str, x: np.ndarray, channel: int, top: int = 5) -> dict[str, Any]:
        """Why ``mode`` weighs the members as it does for one feature vector x [F] of output channel ``channel``.

        For the softmax modes each feature's contribution to a member's logit
        is ``W[j, m] * z_j`` (z: standardised value), centred over members;
        the features with the widest spread of contributions pushed the
        weights most. For ``rules`` it is the path through the tree.
        """
        out: dict[str, Any] = {"mode": mode, "fallback": self.fallback_.get(mode),
                               "shrink": self.shrink_.get(mode, 0.0) if mode == "vote" else 0.0,
                               "shrink_to": self.shrink_to_,
                               "gated": [m for m, ok in zip(self.members, self.mask[channel], strict=True) if not ok]}
        z = self.standardise(x)
        if mode == "rules":
            conds, leaf = self.models_["rules"].path(x, self.names)
            out["rule"] = conds
            out["use"] = self.members[int(self.models_["rules"].choice(x[None], self.mask[channel][None])[0])]
            return out
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
