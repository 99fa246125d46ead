"""The one forecasting contract every member obeys (docs/architecture.md, "The contract").

A member learns its parameters once, on scaled training data, and then
forecasts any batch of windows by running the fitted model over each window:

    member.fit(train, val, spec) -> member
        train: one array [T, C] or several :class:`Segment` s (stretches of
               consecutive rows; a cross-fitting fold leaves a hole, and no
               training window may span it)
        val:   [T', C] (or a Segment) that may choose hyper-parameters, or None
    member.predict(context [N, C, L], references=None) -> forecast [N, C, H]
    member.frozen() -> an unfitted copy whose hyper-parameters are fixed to
               what this fit chose (for refits on folds, on train + val and
               on all the data, which have no validation part)

Every member subclasses :class:`Member`, which declares everything the
application relies on, with its default; the application asks a member
nothing else (no ``hasattr``, ``getattr`` or ``isinstance``). Members are
small classes: ``__init__`` stores hyper-parameters only, fitted state ends in
``_``, ``fit`` returns ``self``, ``predict`` returns a plain float32 array.
Capabilities are class constants:

- ``horizon_agnostic``: one fit serves every horizon (the pipeline fits once
  at the longest horizon and truncates).
- ``uses_references``: the member reads other members' forecasts
  (``spec.references`` while fitting, ``predict(context, references)``);
  ``reference_names()`` says which ones a fit reads, in order. Every other
  member accepts ``references`` and ignores it.
- ``per_series``: a local model, fitted one channel (one series) at a time
  (ARIMA, ETS); otherwise one global model shared by every channel and series.
- ``supports_fit_many``: ``fit_many`` fits every training set in one pass
  over the data (the linear family); the default ``fit_many`` is the plain
  loop (fit the first set, then frozen copies on the others), equal in result.
- ``stores_itself``: the member writes and reads its own folder
  (``save(dir)`` and the classmethod ``load(dir)``: the core's safetensors);
  every other member is stored as data (hybrid/state.py).

What a member reports about itself: ``describe()`` (its fitted choices for the
manifest: ``alpha``, ``period``, ``channel_status``, the core's epochs, start
mix, parameter counts and ladder; ``{}`` when it has none) and, for the vote
report, ``prompt_text`` / ``explain`` of one window (None: nothing to say).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

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
        later_fits: frozen copies (:meth:`Member.frozen`) that will train
            this fit's chosen budget after it: the fold fits and the refits.
            A member whose choice is bound by a time limit counts them (the
            core's ladder); 0 for any fit that chooses nothing.
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
    later_fits: int = 0


@runtime_checkable
class Forecaster(Protocol):
    """The batched window-forecasting contract (see the module docstring); :class:`Member` implements its defaults."""

    name: str
    horizon_agnostic: bool
    uses_references: bool
    per_series: bool
    supports_fit_many: bool
    stores_itself: bool

    def fit(self, train: np.ndarray | Sequence[Segment], val: np.ndarray | Segment | None, spec: TaskSpec) -> Self:
        """Learn parameters from scaled ``train``; ``val`` may choose hyper-parameters, never trains."""
        ...

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        """Forecast ``context`` [N, C, L] -> [N, C, H] (scaled units); ``references`` [N, C, R, H] or None."""
        ...

    def frozen(self) -> Self:
        """An unfitted copy with the hyper-parameters this fit chose fixed."""
        ...

    def fit_many(self, trains: Sequence[Sequence[Segment]], val: np.ndarray | Segment | Sequence[Segment] | None,
                 spec: TaskSpec) -> list[Self]:
        """A fit on ``trains[0]`` (``val`` chooses), then frozen copies fitted on every other training set."""
        ...

    def reference_names(self) -> tuple[str, ...]:
        """The references this fit reads, in the order ``predict`` takes them (() for most members)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the manifest records of this fit (its fitted choices; {} when none)."""
        ...

    def prompt_text(self, context: np.ndarray, references: np.ndarray | None = None) -> list[str] | None:
        """The text the member reads for each channel of ``context`` [1, C, L] (None: it reads none)."""
        ...

    def explain(self, context: np.ndarray, references: np.ndarray | None = None) -> list[str] | None:
        """Per channel of ``context`` [1, C, L], what drove the forecast (None: nothing to say)."""
        ...


class Member:
    """Base class of every member: the capability flags and the contract's optional parts, with their defaults.

    Subclasses implement ``fit``, ``predict`` and ``frozen`` and override a
    flag or a method only where they differ (see the module docstring).
    """

    name: str = "member"
    horizon_agnostic: ClassVar[bool] = False
    uses_references: ClassVar[bool] = False
    per_series: ClassVar[bool] = False
    supports_fit_many: ClassVar[bool] = False
    stores_itself: ClassVar[bool] = False

    def fit(self, train: np.ndarray | Sequence[Segment], val: np.ndarray | Segment | None, spec: TaskSpec) -> Self:
        """Learn parameters from scaled ``train``; ``val`` may choose hyper-parameters, never trains."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement fit.")

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        """Forecast ``context`` [N, C, L] -> [N, C, H] (scaled units); members without references ignore them."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement predict.")

    def frozen(self) -> Self:
        """An unfitted copy with the hyper-parameters this fit chose fixed."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement frozen.")

    def fit_many(self, trains: Sequence[Sequence[Segment]], val: np.ndarray | Segment | Sequence[Segment] | None,
                 spec: TaskSpec) -> list[Self]:
        """``[self.fit(trains[0], val, spec)]`` and frozen copies of it fitted on ``trains[1:]`` (without ``val``)."""
        first = self.fit(trains[0], val, spec)
        return [first, *(first.frozen().fit(t, None, spec) for t in trains[1:])]

    def reference_names(self) -> tuple[str, ...]:
        """The references this fit reads, in order (none: only members with ``uses_references`` read any)."""
        return ()

    def describe(self) -> dict[str, Any]:
        """What the manifest records of this fit: none by default."""
        return {}

    def prompt_text(self, context: np.ndarray, references: np.ndarray | None = None) -> list[str] | None:
        """The text the member reads for each channel of ``context`` (None: it reads no text)."""
        return None

    def explain(self, context: np.ndarray, references: np.ndarray | None = None) -> list[str] | None:
        """What drove the forecast of each channel of ``context`` (None: nothing to say)."""
        return None


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
