"""Config section of the router (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

CHECKS = ("pooled", "one_se")  # router.check: how a learned mode's out-of-fold gain is judged


@dataclass(frozen=True)
class RouterConfig:
    """How members are combined into the ``hybrid`` forecast."""

    mode: str = "vote"  # vote | select | rules (learned) | equal | inverse_error | best_single | top_k (static)
    min_gain: float = 0.001  # relative OOF MSE gain over equal weights, the best single member and the best static
    check: str = "pooled"  # pooled: that gain decides; one_se: it must also win most folds by min_t standard errors
    min_fold_wins: float = 0.5  # one_se: it must win on more than this fraction of the folds
    min_t: float = 1.0  # one_se: and its mean gain per fold must exceed this many standard errors
    l2: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)  # L2 candidates of the softmax models, chosen leave-one-fold-out
    shrinkage: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)  # vote: share of equal weights mixed in, chosen leave-one-fold-out
    max_iter: int = 300  # L-BFGS iterations of the softmax models
    tree_depth: int = 3  # depth of the rules tree
    tree_min_leaf: float = 0.02  # smallest leaf of the rules tree, as a fraction of the samples
    backtest_steps: int = 0  # H' of the in-context backtest feature; 0: min(H, L // 4)
    top_features: int = 5  # features listed per channel in the vote report
