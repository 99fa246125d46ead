"""The router's models: window features -> weights over members.

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
penalty, starting from equal weights; members a sample may not use (the
sanity gate) get no weight. Errors enter through per-sample moments
(``G = <f_m f_k>``, ``b = <f_m y>``, ``c = <y y>``, averaged over the
horizon), so training never touches ``[N, C, M, H]`` arrays again. How the
penalty and the shrinkage toward equal weights are chosen, and when a mode is
used at all, is :mod:`router.fitting`.

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

logger = logging.getLogger(__name__)

ROUTER_MODES = ("vote", "select", "rules")
Z_CLIP = 5.0  # standardised features are clipped to +-Z_CLIP
BLOCKED = -1e9  # logit of a member a sample may not use


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
    H = target.shape[-1]
    fs = list(forecasts)  # used as they come (float32): no float64 copy of every member is made

    def mean_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("...h,...h->...", a, b, dtype=np.float64) / H

    M = len(fs)
    G = np.empty(target.shape[:-1] + (M, M))
    for m in range(M):
        for k in range(m, M):
            G[..., m, k] = G[..., k, m] = mean_product(fs[m], fs[k])
    b = np.stack([mean_product(f, target) for f in fs], axis=-1)
    return G, b, mean_product(target, target)


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


def logit_offset(mask: np.ndarray | None) -> np.ndarray | float:
    """0 for allowed members, a huge negative number for blocked ones."""
    return 0.0 if mask is None else np.where(mask, 0.0, BLOCKED)


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

    def fit(self, X: np.ndarray, G: np.ndarray, b: np.ndarray, c: np.ndarray,
            mask: np.ndarray | None = None) -> SoftmaxLinear:
        """X [S, F]; G [S, M, M], b [S, M], c [S]; mask [S, M] bool (None: every member allowed).

        Starts from equal weights (W = 0, bias = 0).
        """
        S, F = X.shape
        M = b.shape[-1]
        err = member_errors(G, b, c)
        offset = logit_offset(mask)
        if mask is not None:
            err = np.where(mask, err, 0.0)
        scale = max(float(err.mean()), 1e-12)  # losses in units of the mean member error

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W, bias = theta[: F * M].reshape(F, M), theta[F * M:]
            w = softmax(X @ W + bias + offset)  # [S, M]
            if self.objective == "combined":
                Gw = (G @ w[:, :, None])[:, :, 0]  # [S, M]; one batched product serves the loss and its gradient
                per = (w * (Gw - 2 * b)).sum(-1) + c
                g = 2 * (Gw - b)
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

    def weights(self, X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """X [..., F] (mask [..., M] bool) -> weights [..., M]."""
        assert self.W_ is not None and self.bias_ is not None, "fit first"
        return softmax(X @ self.W_ + self.bias_ + logit_offset(mask))


@dataclass
class RuleTree:
    """A shallow regression tree over raw features; each leaf names one member.

    The tree is fitted to each sample's member errors minus their mean (so it
    splits on what makes one member better than another, not on how hard a
    window is); a leaf picks the member with the lowest mean error in it.
    scikit-learn fits it; the model keeps only the split arrays (node ids are
    scikit-learn's, node 0 the root), so it is plain data and walks itself
    exactly as ``DecisionTreeRegressor.apply`` does (features as float32).
    """

    max_depth: int = 3
    min_leaf: float = 0.02
    seed: int = 0
    children_left_: np.ndarray | None = None  # [nodes] int, -1 at a leaf
    children_right_: np.ndarray | None = None  # [nodes] int, -1 at a leaf
    feature_: np.ndarray | None = None  # [nodes] the feature a node splits on
    threshold_: np.ndarray | None = None  # [nodes] float64: x <= threshold goes left
    missing_left_: np.ndarray | None = None  # [nodes] bool: a NaN feature goes left
    leaf_member_: dict[int, int] = field(default_factory=dict)
    leaf_errors_: dict[int, np.ndarray] = field(default_factory=dict)
    leaf_count_: dict[int, int] = field(default_factory=dict)

    def fit(self, X: np.ndarray, err: np.ndarray, mask: np.ndarray | None = None) -> RuleTree:
        """X [S, F] raw features; err [S, M] member errors; mask [S, M] bool (blocked members never chosen)."""
        S = X.shape[0]
        if mask is not None:  # a blocked member counts as the sample's worst, so a leaf never names it
            err = np.where(mask, err, err.max(-1, keepdims=True) * 10 + 1.0)
        tree = DecisionTreeRegressor(max_depth=self.max_depth, random_state=self.seed,
                                     min_samples_leaf=max(1, int(self.min_leaf * S)))
        tree.fit(X, err - err.mean(-1, keepdims=True))
        t = tree.tree_
        self.children_left_ = np.asarray(t.children_left, dtype=np.int64).copy()
        self.children_right_ = np.asarray(t.children_right, dtype=np.int64).copy()
        self.feature_ = np.asarray(t.feature, dtype=np.int64).copy()
        self.threshold_ = np.asarray(t.threshold, dtype=np.float64).copy()
        missing = getattr(t, "missing_go_to_left", None)
        self.missing_left_ = np.zeros(t.node_count, bool) if missing is None else np.asarray(missing, dtype=bool)
        leaves = self.apply(X)
        for leaf in np.unique(leaves):
            e = err[leaves == leaf].mean(0)
            self.leaf_member_[int(leaf)] = int(np.argmin(e))
            self.leaf_errors_[int(leaf)] = e
            self.leaf_count_[int(leaf)] = int((leaves == leaf).sum())
        return self

    def _go_left(self, values: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """Whether each value (float32, the node's feature) goes to the left child of its node."""
        assert self.threshold_ is not None and self.missing_left_ is not None, "fit first"
        return np.where(np.isnan(values), self.missing_left_[nodes], values <= self.threshold_[nodes])

    def apply(self, X: np.ndarray) -> np.ndarray:
        """X [S, F] -> the leaf (node id) each sample falls in [S], as ``DecisionTreeRegressor.apply``."""
        assert self.children_left_ is not None and self.children_right_ is not None and self.feature_ is not None
        x = np.asarray(X, dtype=np.float32)  # scikit-learn compares float32 features with float64 thresholds
        node = np.zeros(x.shape[0], dtype=np.int64)
        rows = np.arange(x.shape[0])
        inner = self.children_left_[node] != -1
        while inner.any():
            n = node[inner]
            left = self._go_left(x[rows[inner], self.feature_[n]], n)
            node[inner] = np.where(left, self.children_left_[n], self.children_right_[n])
            inner = self.children_left_[node] != -1
        return node

    def choice(self, X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """X [..., F] (mask [..., M] bool) -> index of the chosen member [...]: the leaf's best allowed member."""
        flat = X.reshape(-1, X.shape[-1])
        leaves = self.apply(flat)
        if mask is None:
            return np.array([self.leaf_member_[int(v)] for v in leaves]).reshape(X.shape[:-1])
        scores = np.stack([self.leaf_errors_[int(v)] for v in leaves]).reshape(*X.shape[:-1], -1)
        return np.argmin(np.where(mask, scores, np.inf), axis=-1)

    def path(self, x: np.ndarray, names: list[str]) -> tuple[list[str], int]:
        """The conditions one feature vector x [F] meets, and its leaf id."""
        assert self.children_left_ is not None and self.children_right_ is not None and self.feature_ is not None
        assert self.threshold_ is not None
        x = np.asarray(x, dtype=np.float32)
        node, conds = 0, []
        while self.children_left_[node] != -1:
            j, thr = int(self.feature_[node]), float(self.threshold_[node])
            if self._go_left(x[j : j + 1], np.array([node]))[0]:
                conds.append(f"{names[j]} <= {thr:.3g}")
                node = int(self.children_left_[node])
            else:
                conds.append(f"{names[j]} > {thr:.3g}")
                node = int(self.children_right_[node])
        return conds, int(node)

    def rules(self, names: list[str], members: list[str]) -> list[dict[str, Any]]:
        """One row per leaf: conditions, chosen member, windows, mean errors."""
        assert self.children_left_ is not None and self.children_right_ is not None and self.feature_ is not None
        assert self.threshold_ is not None
        left, right, feature, threshold = self.children_left_, self.children_right_, self.feature_, self.threshold_
        rows: list[dict[str, Any]] = []

        def walk(node: int, conds: list[str]) -> None:
            if left[node] == -1:
                e = self.leaf_errors_.get(node)
                if e is None:
                    return
                m = self.leaf_member_[node]
                rows.append({
                    "leaf": node,
                    "if": conds or ["always"],
                    "use": members[m],
                    "samples": self.leaf_count_[node],
                    "oof_mse_chosen": float(e[m]),
                    "oof_mse_members_mean": float(e.mean()),
                })
                return
            j, thr = int(feature[node]), float(threshold[node])
            walk(int(left[node]), [*conds, f"{names[j]} <= {thr:.3g}"])
            walk(int(right[node]), [*conds, f"{names[j]} > {thr:.3g}"])

        walk(0, [])
        return rows
