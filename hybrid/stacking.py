"""Stacking: out-of-fold windows of the history, the sanity gate, and what the router learns from.

The history's windows (train + validation, subsampled evenly to
``stack.max_windows``) each get every member's out-of-fold forecast
(:meth:`hybrid.crossfit.MemberFits.oof`). From them:

- the **sanity gate**: a member whose out-of-fold MSE on an output channel is
  above ``stack.gate_ratio`` times the better of seasonal naive and the
  window mean there is set aside on that channel, by every combination (the
  static ones, the router, and the core's references); the best member of a
  channel is never set aside;
- the router's :class:`router.fitting.StackSet` (features, moments, folds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from baselines.naive import SeasonalNaive, WindowMean
from kernel.contract import TaskSpec
from router.features import feature_names, window_features
from router.fitting import StackSet
from router.models import moments

logger = logging.getLogger(__name__)


@dataclass
class OOFWindows:
    """Historical windows with every member's out-of-fold forecasts (output channels only).

    Attributes:
        starts: window start rows [n].
        folds: the classical fold plan's fold of each window [n].
        context: contexts [n, C, L] (every channel: members read them all).
        target: targets [n, Co, H] (output channels).
        forecasts: member -> out-of-fold forecasts [n, Co, H].
        backtests: member -> out-of-fold forecasts [n, Co, H'] of the backtest context.
        times: each window's time in rows, what the bands age their scores by (default: its start; many series:
            its row in its series less the series' history end, so that every series' history ends at time 0).
    """

    starts: np.ndarray
    folds: np.ndarray
    context: np.ndarray
    target: np.ndarray
    forecasts: dict[str, np.ndarray] = field(default_factory=dict)
    backtests: dict[str, np.ndarray] = field(default_factory=dict)
    times: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.times is None:
            self.times = self.starts

    def mse(self, name: str) -> np.ndarray:
        """A member's out-of-fold MSE per output channel [Co]."""
        return ((self.forecasts[name].astype(np.float64) - self.target) ** 2).mean(axis=(0, 2))

    def mae(self, name: str) -> np.ndarray:
        return np.abs(self.forecasts[name].astype(np.float64) - self.target).mean(axis=(0, 2))

    def mse_by_fold(self, name: str) -> dict[str, float]:
        err = ((self.forecasts[name].astype(np.float64) - self.target) ** 2).mean(axis=(1, 2))
        return {str(int(f)): float(err[self.folds == f].mean()) for f in np.unique(self.folds)}

    def scores(self, name: str, channels: list[str]) -> dict[str, Any]:
        """A member's out-of-fold MSE and MAE, pooled, by fold and per output channel (for the manifest)."""
        mse_c, mae_c = self.mse(name), self.mae(name)
        return {"mse": float(mse_c.mean()), "mae": float(mae_c.mean()), "by_fold": self.mse_by_fold(name),
                "per_channel": {c: {"mse": float(a), "mae": float(b)} for c, a, b in zip(channels, mse_c, mae_c,
                                                                                        strict=True)}}


@dataclass
class Gate:
    """The sanity gate of one horizon.

    Attributes:
        mask: [Co, M] bool, True where the member may be used.
        members: member order.
        baseline: [Co] the better of seasonal naive and the window mean, OOF MSE.
        ratio: the configured ratio.
        reasons: one line per gated (member, channel).
    """

    mask: np.ndarray
    members: list[str]
    baseline: np.ndarray
    ratio: float
    reasons: list[str]

    def allowed_everywhere(self, name: str) -> bool:
        return bool(self.mask[:, self.members.index(name)].all())

    def to_dict(self, channels: list[str]) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "baseline_oof_mse": {c: float(v) for c, v in zip(channels, self.baseline, strict=True)},
            "gated": {m: [c for c, ok in zip(channels, self.mask[:, k], strict=True) if not ok]
                      for k, m in enumerate(self.members) if not self.mask[:, k].all()},
            "reasons": self.reasons,
        }


def baseline_mse(oof: OOFWindows, spec: TaskSpec, out_ch: list[int]) -> np.ndarray:
    """The better of seasonal naive and the window mean per output channel, out of fold [Co] (they learn nothing)."""
    ctx = oof.context[:, out_ch]
    naive = SeasonalNaive().fit(None, None, spec).predict(ctx)
    mean = WindowMean().fit(None, None, spec).predict(ctx)
    err = [((f[:, :, : oof.target.shape[-1]].astype(np.float64) - oof.target) ** 2).mean(axis=(0, 2))
           for f in (naive, mean)]
    return np.minimum(*err)


def sanity_gate(oof: OOFWindows, members: list[str], baseline: np.ndarray, ratio: float,
                channels: list[str]) -> Gate:
    """Set aside, per output channel, every member far worse than the better of seasonal naive and the mean."""
    err = np.stack([oof.mse(m) for m in members], axis=1)  # [Co, M]
    err = np.where(np.isfinite(err), err, np.inf)
    mask = err <= ratio * baseline[:, None]
    best = np.argmin(err, axis=1)
    mask[np.arange(len(best)), best] = True  # a channel always keeps its best member
    reasons = []
    for c, k in zip(*np.nonzero(~mask), strict=True):
        reasons.append(f"{members[k]} set aside on {channels[c]}: out-of-fold MSE {err[c, k]:.4g} is over "
                       f"{ratio:g} x {baseline[c]:.4g} (the better of seasonal naive and the window mean)")
    for line in reasons:
        logger.warning("sanity gate: %s", line)
    return Gate(mask, list(members), baseline, ratio, reasons)


def stack_set(oof: OOFWindows, members: list[str], periods: tuple[int, ...], steps: int, gate: Gate,
              out_ch: list[int]) -> tuple[StackSet, list[str]]:
    """The router's training data from the OOF windows; returns it with the feature names."""
    ctx = oof.context[:, out_ch]
    fc = {m: oof.forecasts[m] for m in members}
    bt = {m: oof.backtests[m] for m in members if m in oof.backtests}
    X = window_features(ctx, fc, bt, members, periods, steps)
    G, b, c = moments([fc[m] for m in members], oof.target)
    return StackSet(X, G, b, c, oof.folds, gate.mask, [fc[m] for m in members], oof.target), \
        feature_names(periods, members)

