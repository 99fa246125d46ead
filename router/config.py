"""Config section of the router (no heavy imports)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

Mode = Literal["vote", "select", "rules", "equal", "inverse_error", "best_single", "top_k", "greedy", "median"]
Check = Literal["shrinkage", "pooled", "one_se", "robust"]
Robust = Literal["median", "equal", "greedy", "top_k", "inverse_error", "best_single"]
CHECKS: tuple[str, ...] = typing.get_args(Check)  # router.check: how a combination's out-of-fold gain is judged


@dataclass(frozen=True)
class RouterConfig:
    """How members are combined into the ``hybrid`` forecast."""

    mode: Mode = "vote"  # vote | select | rules (learned) | equal | inverse_error | best_single | top_k (static)
    min_gain: float = 0.001  # pooled / one_se / robust: relative OOF MSE gain needed over what it replaces
    check: Check = "shrinkage"  # shrinkage: the vote as learned (shrunk out of fold), select / rules as pooled; see docs
    robust: Robust = "median"  # robust: the combination the robust check starts from (over the sound members)
    sound_ratio: float = 2.0  # only members within this x a channel's best OOF MSE are combined
    min_fold_wins: float = 0.5  # one_se: it must win on more than this fraction of the folds
    min_t: float = 1.0  # one_se: and its mean gain per fold must exceed this many standard errors
    l2: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)  # L2 candidates of the softmax models, chosen leave-one-fold-out
    shrinkage: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)  # vote: share of the best static combiner mixed in (LOFO)
    greedy_rounds: int = 25  # greedy: rounds of Caruana's ensemble selection (with replacement)
    max_iter: int = 300  # L-BFGS iterations of the softmax models
    max_samples: int = 8192  # (window, channel) samples each router fit sees at most (a seeded sample); 0: all
    tree_depth: int = 3  # depth of the rules tree
    tree_min_leaf: float = 0.02  # smallest leaf of the rules tree, as a fraction of the samples
    backtest_steps: int = 0  # H' of the in-context backtest feature; 0: min(H, L // 4)
    top_features: int = 5  # features listed per channel in the vote report
