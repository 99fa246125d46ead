"""Scores accumulated over chunks of windows: MSE / MAE per channel, and interval coverage.

The test part is scored chunk by chunk (``stack.chunk_windows`` windows at a
time) so that no ``[N, C, H]`` array of every member has to be held at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybrid.config import Config
from hybrid.deployment import COMBINED, Deployment
from hybrid.intervals import interval_score


@dataclass
class Tally:
    """Sums of squared and absolute errors per channel (float64)."""

    se: np.ndarray
    ae: np.ndarray
    n: np.ndarray

    @classmethod
    def zeros(cls, channels: int) -> Tally:
        return cls(np.zeros(channels), np.zeros(channels), np.zeros(channels))

    def add(self, forecast: np.ndarray, target: np.ndarray) -> None:
        """forecast, target [n, Co, H]."""
        diff = forecast.astype(np.float64) - target
        self.se += np.square(diff).sum(axis=(0, 2))
        self.ae += np.abs(diff).sum(axis=(0, 2))
        self.n += diff.shape[0] * diff.shape[2]

    def scores(self, channels: list[str]) -> dict[str, Any]:
        n = np.maximum(self.n, 1)
        return {
            "mse": float(self.se.sum() / n.sum()),
            "mae": float(self.ae.sum() / n.sum()),
            "per_channel": {c: {"mse": float(s / k), "mae": float(a / k)}
                            for c, s, a, k in zip(channels, self.se, self.ae, n, strict=True)},
        }


@dataclass
class BandTally:
    """Coverage, width and interval score of prediction intervals, per level."""

    sums: dict[float, np.ndarray] = field(default_factory=dict)
    n: int = 0

    def add(self, target: np.ndarray, bands: dict[float, tuple[np.ndarray, np.ndarray]]) -> None:
        for lv, (lo, hi) in bands.items():
            s = self.sums.setdefault(lv, np.zeros(3))
            s += [((target >= lo) & (target <= hi)).sum(), (hi - lo).sum(),
                  interval_score(target.astype(np.float64), lo, hi, lv).sum()]
        self.n += target.size

    def scores(self) -> dict[str, dict[str, float]]:
        n = max(self.n, 1)
        return {f"{lv:g}": {"coverage": float(s[0] / n), "width": float(s[1] / n), "interval_score": float(s[2] / n)}
                for lv, s in self.sums.items()}


@dataclass
class Scoreboard:
    """Every forecast's tally on one part (test), by name."""

    channels: list[str]
    tallies: dict[str, Tally] = field(default_factory=dict)
    bands: dict[str, BandTally] = field(default_factory=dict)

    def add(self, name: str, forecast: np.ndarray, target: np.ndarray) -> None:
        self.tallies.setdefault(name, Tally.zeros(len(self.channels))).add(forecast, target)

    def add_bands(self, name: str, target: np.ndarray, bands: dict[float, tuple[np.ndarray, np.ndarray]]) -> None:
        self.bands.setdefault(name, BandTally()).add(target, bands)

    def add_deployed(self, deployment: Deployment, context: np.ndarray, forecasts: dict[str, np.ndarray],
                     backtests: dict[str, np.ndarray], target: np.ndarray) -> dict[str, np.ndarray]:
        """One chunk of windows: each member's ``forecasts``, every combination of them and the bands (output
        channels: context [n, Co, L], target [n, Co, H]); returns the combinations."""
        for name, f in forecasts.items():
            self.add(name, f, target)
        combos = deployment.all_combinations(context, forecasts, backtests)
        for name, f in combos.items():
            self.add(name, f, target)
        for name, bands in deployment.band_sets(context, forecasts, combos[COMBINED]).items():
            self.add_bands(name, target, bands)
        return combos

    def scores(self, name: str) -> dict[str, Any]:
        out = self.tallies[name].scores(self.channels)
        if name in self.bands:
            out["intervals"] = self.bands[name].scores()
        return out


def scores_train_only(cfg: Config, reads_references: bool) -> bool:
    """Whether a member's train-only fit is scored on the test part too: only when the members are refitted
    (``task.refit: train+val``), and by ``stack.train_only``: all, classical (members that read no references;
    the core's train-only scoring costs minutes) or none."""
    return cfg.task.refit != "train" and (cfg.stack.train_only == "all" or
                                          (cfg.stack.train_only == "classical" and not reads_references))


def train_only_scores(board_train: Scoreboard, test: dict[str, Any], members: Any) -> dict[str, Any]:
    """Each of ``members``' train-only test scores; the deployed fit's (``test``) when none was scored."""
    scores = {n: board_train.scores(n) for n in board_train.tallies} if board_train.tallies else test
    return {n: s for n, s in scores.items() if n in members}
