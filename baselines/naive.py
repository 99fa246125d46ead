"""Seasonal naive: repeat the last observed cycle."""

from __future__ import annotations

import copy
from typing import Any, Self

import numpy as np

from kernel.contract import Member, TaskSpec, check_context, not_fitted


class _Stateless(Member):
    """Members with nothing to learn beyond the task's shape."""

    name = "stateless"

    def frozen(self) -> Self:
        """An unfitted copy (there is no hyper-parameter to fix beyond the settings)."""
        if not hasattr(self, "horizon_"):
            raise not_fitted(self.name)
        twin = copy.copy(self)
        for attr in [a for a in vars(twin) if a.endswith("_")]:
            delattr(twin, attr)
        if hasattr(self, "period_"):
            twin.period = self.period_  # the season this fit settled on
        return twin

    def _check(self, context: np.ndarray) -> np.ndarray:
        if not hasattr(self, "horizon_"):
            raise not_fitted(self.name)
        return check_context(context, self.context_length_)


class SeasonalNaive(_Stateless):
    """Forecast y[t + h] = y[t + h - p * ceil(h / p)]: the last full cycle, repeated.

    Args:
        period: season length p; None takes the dominant period detected on the
            training part (``spec.periods[0]``), and 1 (plain naive) when none
            was found or it does not fit in the context.
    """

    name = "seasonal_naive"
    horizon_agnostic = True

    def __init__(self, period: int | None = None) -> None:
        self.period = period

    def fit(self, train: object, val: object, spec: TaskSpec) -> Self:
        period = self.period or (spec.periods[0] if spec.periods else 1)
        if period > spec.context_length:
            period = 1
        self.period_ = int(period)
        self.context_length_ = spec.context_length
        self.horizon_ = spec.horizon
        return self

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        """context [N, C, L] -> forecast [N, C, H]."""
        context = self._check(context)
        p, L = self.period_, self.context_length_
        idx = L - p + (np.arange(self.horizon_) % p)  # positions of the last cycle, repeated
        return np.ascontiguousarray(context[:, :, idx])

    def describe(self) -> dict[str, Any]:
        """The season this fit settled on ({} before fit)."""
        return {"period": self.period_} if hasattr(self, "period_") else {}


class Drift(_Stateless):
    """Random walk with drift: the line through the window's first and last value."""

    name = "drift"
    horizon_agnostic = True

    def fit(self, train: object, val: object, spec: TaskSpec) -> Self:
        self.context_length_, self.horizon_ = spec.context_length, spec.horizon
        return self

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        """context [N, C, L] -> forecast [N, C, H]."""
        context = self._check(context)
        last = context[:, :, -1:]
        slope = (last - context[:, :, :1]) / max(self.context_length_ - 1, 1)
        steps = np.arange(1, self.horizon_ + 1, dtype=np.float32)
        return last + slope * steps


class WindowMean(_Stateless):
    """The window's mean, repeated: a floor any useful member must beat."""

    name = "mean"
    horizon_agnostic = True

    def fit(self, train: object, val: object, spec: TaskSpec) -> Self:
        self.context_length_, self.horizon_ = spec.context_length, spec.horizon
        return self

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        """context [N, C, L] -> forecast [N, C, H]."""
        context = self._check(context)
        mean = context.mean(axis=2, keepdims=True)
        return np.repeat(mean, self.horizon_, axis=2)
