"""The one forecasting contract every member obeys (docs/architecture.md, "The contract").

A member learns its parameters once, on scaled training data, and then
forecasts any batch of windows by running the fitted model over each window:

    member.fit(train, val, spec) -> member
        train: one array [T, C] or several :class:`Segment` s (stretches of
               consecutive rows; a cross-fitting fold leaves a hole, and no
               training window may span it)
        val:   [T', C] (or a Segment) that may choose hyper-parameters, or None
    member.predict(context [N, C, L]) -> forecast [N, C, H]
    member.frozen() -> an unfitted copy whose hyper-parameters are fixed to
               what this fit chose (for refits on folds, on train + val and
               on all the data, which have no validation part)

Members are small classes: ``__init__`` stores hyper-parameters only, fitted
state ends in ``_``, ``fit`` returns ``self``, ``predict`` returns a plain
float32 array. Capabilities are class constants:

- ``horizon_agnostic``: one fit serves every horizon (the pipeline fits once
  at the longest horizon and truncates).
- ``uses_references``: the member reads other members' forecasts
  (``spec.references`` while fitting, ``predict(context, references)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Segment:
    """A stretch of consecutive scaled rows and where it starts in the series.

    Attributes:
        values: [T, C] scaled values.
        start: the row of ``values[0]`` in the whole series (0 for a part that
            is not placed, e.g. in tests); members that look reference
            forecasts up by window position use it.
    """

    values: np.ndarray
    start: int = 0

    def __len__(self) -> int:
        return int(self.values.shape[0])


@runtime_checkable
class ReferenceSource(Protocol):
    """Other members' forecasts of any historical window, each from a fit that never saw its target.

    The pipeline builds it from the cross-fitted (out-of-fold) reference
    members and hands it to members with ``uses_references`` in
    ``TaskSpec.references``.
    """

    names: tuple[str, ...]

    def forecasts(self, starts: np.ndarray, horizon: int) -> np.ndarray:
        """Window start rows [n] (in the whole series) -> forecasts [n, C, R, horizon] float32."""
        ...


@dataclass(frozen=True)
class TaskSpec:
    """What a member needs to know about the task, beside the data.

    Attributes:
        context_length: L, the number of past steps a window holds.
        horizon: H, the number of future steps to forecast.
        freq: pandas frequency alias of the series ("h", "15min", "D", ...).
        periods: detected periods of the training part, strongest first.
        seed: the run's one seed (numpy, torch and scikit-learn).
        n_jobs: worker processes a member may use for per-channel work
            (joblib's convention: -1 every core, -2 all but one).
        backend: joblib backend name ("loky", "threading", "dask", ...).
        dask_address: the scheduler to connect to with backend "dask" (empty:
            a local cluster).
        channel_names: names of the C channels, in array order.
        description: the dataset's domain description (prompt text).
        references: out-of-fold forecasts of the reference members, for
            members with ``uses_references`` (None: no references).
    """

    context_length: int
    horizon: int
    freq: str = ""
    periods: tuple[int, ...] = ()
    seed: int = 0
    n_jobs: int = 1
    backend: str = "loky"
    dask_address: str = ""
    channel_names: tuple[str, ...] = ()
    description: str = ""
    references: ReferenceSource | None = field(default=None, compare=False, hash=False, repr=False)


@runtime_checkable
class Forecaster(Protocol):
    """The batched window-forecasting contract (see the module docstring)."""

    name: str

    def fit(self, train: np.ndarray | Sequence[Segment], val: np.ndarray | Segment | None, spec: TaskSpec) -> Self:
        """Learn parameters from scaled ``train``; ``val`` may choose hyper-parameters, never trains."""
        ...

    def predict(self, context: np.ndarray) -> np.ndarray:
        """Forecast ``context`` [N, C, L] -> [N, C, H] (scaled units)."""
        ...

    def frozen(self) -> Self:
        """An unfitted copy with the hyper-parameters this fit chose fixed."""
        ...


def as_segments(train: np.ndarray | Segment | Sequence[Segment]) -> list[Segment]:
    """``train`` as a list of segments (a plain [T, C] array is one segment starting at row 0)."""
    if isinstance(train, Segment):
        return [train]
    if isinstance(train, np.ndarray):
        return [Segment(train)]
    segments = list(train)
    if not segments or not all(isinstance(s, Segment) for s in segments):
        raise ValueError("`train` must be an array [T, C] or a non-empty sequence of Segment.")
    widths = {s.values.shape[1] for s in segments}
    if len(widths) != 1:
        raise ValueError(f"every training segment must have the same channels; got widths {sorted(widths)}.")
    return segments


def as_values(part: np.ndarray | Segment | None) -> np.ndarray | None:
    """The [T, C] values of a validation part given as an array or a segment."""
    return part.values if isinstance(part, Segment) else part


def longest_segment(segments: Sequence[Segment]) -> Segment:
    """The longest segment (the latest among equals): where a per-channel model is fitted."""
    return max(reversed(list(segments)), key=len)


def gapped_values(segments: Sequence[Segment]) -> np.ndarray:
    """The rows from the first segment's start to the last one's end [T, C], NaN where no segment lies (the holes).

    For a model whose likelihood treats missing observations exactly (a
    Kalman filter), this hands a fold fit all of its training rows at their
    true distance apart instead of the longest stretch alone.
    """
    ordered = sorted(segments, key=lambda s: s.start)
    first, end = ordered[0].start, max(s.start + len(s) for s in ordered)
    out = np.full((end - first, ordered[0].values.shape[1]), np.nan)
    for s in ordered:
        out[s.start - first : s.start - first + len(s)] = s.values
    return out


def check_context(context: np.ndarray, context_length: int) -> np.ndarray:
    """Validate a member's input window batch and return it as float32.

    Args:
        context: array [N, C, L].
        context_length: the L the member was fitted for.

    Returns:
        The same windows as a float32 array [N, C, L].

    Raises:
        ValueError: wrong shape or length, or non-finite values (one line
            naming the problem).
    """
    context = np.asarray(context)
    if context.ndim != 3:
        raise ValueError(f"`context` must have shape [N, C, L] (3 dimensions); got shape {context.shape}.")
    if context.shape[-1] != context_length:
        raise ValueError(
            f"`context` must hold {context_length} steps per window (the fitted context_length); "
            f"got {context.shape[-1]}."
        )
    context = context.astype(np.float32, copy=False)
    if not np.isfinite(context).all():
        raise ValueError("`context` holds NaN or inf; members forecast complete windows only (clean the data first).")
    return context


def not_fitted(name: str) -> RuntimeError:
    """The error for ``predict`` (or ``frozen``) before ``fit``."""
    return RuntimeError(f"{name}: call fit (or load) before predict.")
