"""The one forecasting contract every member obeys (see DESIGN.md).

A member learns its parameters once, on the scaled training part, and then
forecasts any batch of windows by running the fitted model over each window:

    member.fit(train [T, C], val [T', C] | None, spec) -> member
    member.predict(context [N, C, L]) -> forecast [N, C, H]

Members are small classes: ``__init__`` stores hyper-parameters only, fitted
state ends in ``_``, ``fit`` returns ``self``, ``predict`` returns a plain
float32 array. Capabilities are class constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TaskSpec:
    """What a member needs to know about the task, beside the data.

    Attributes:
        context_length: L, the number of past steps a window holds.
        horizon: H, the number of future steps to forecast.
        freq: pandas frequency alias of the series ("h", "15min", "D", ...).
        periods: detected periods of the training part, strongest first.
        seed: the run's one seed (numpy, torch and scikit-learn).
        n_jobs: worker processes a member may use for per-channel work.
        backend: joblib backend name ("loky", "threading", "dask", ...).
        channel_names: names of the C channels, in array order.
        description: the dataset's domain description (prompt text).
        extra: free-form, member-specific context (e.g. reference forecasts).
    """

    context_length: int
    horizon: int
    freq: str = ""
    periods: tuple[int, ...] = ()
    seed: int = 0
    n_jobs: int = 1
    backend: str = "loky"
    channel_names: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@runtime_checkable
class Forecaster(Protocol):
    """The batched window-forecasting contract.

    Class constants a member may set:
        name: the member's alias in reports and on the command line.
        horizon_agnostic: True when one fit serves every horizon (the
            pipeline then fits once at the longest horizon and truncates).
    """

    name: str

    def fit(self, train: np.ndarray, val: np.ndarray | None, spec: TaskSpec) -> Self:
        """Learn parameters from scaled ``train`` [T, C] (``val`` [T', C] may
        choose hyper-parameters; it is never trained on)."""
        ...

    def predict(self, context: np.ndarray) -> np.ndarray:
        """Forecast ``context`` [N, C, L] -> [N, C, H] (scaled units)."""
        ...


def check_context(context: np.ndarray, context_length: int) -> np.ndarray:
    """Validate a member's input window batch and return it as float32.

    Args:
        context: array [N, C, L].
        context_length: the L the member was fitted for.

    Returns:
        The same windows as a float32 array [N, C, L].
    """
    context = np.asarray(context)
    if context.ndim != 3:
        raise ValueError(
            f"`context` must have shape [N, C, L] (3 dimensions); got shape {context.shape}."
        )
    if context.shape[-1] != context_length:
        raise ValueError(
            f"`context` must hold {context_length} steps per window (the fitted context_length); "
            f"got {context.shape[-1]}."
        )
    return context.astype(np.float32, copy=False)
