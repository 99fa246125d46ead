"""The evaluation protocol: split borders, train-only scaling, windows, metrics.

Follows the long-horizon benchmark convention (Informer / Autoformer /
Time-LLM data loaders):

- ETT files: 12 / 4 / 4 months of 30 days (hourly 8640 / 2880 / 2880 rows,
  15-minute four times that); rows after the 20 months are not used.
- Other files: 70 % / 10 % / 20 % (train and test rounded down, val the rest).
- Validation and test windows start ``context_length`` steps before their
  border, so their first window has a full context.
- Per-channel standard scaling fitted on the training part only.
- Every window, stride 1, nothing dropped.

References:
    Zhou et al., "Informer", AAAI 2021 (ETT splits); Jin et al., "Time-LLM",
    ICLR 2024.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from kernel.contract import Segment
from kernel.errors import HybridInputError

ETT_MONTHS = (12, 4, 4)
DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class Split:
    """Row borders of the three parts, as half-open ranges over the series.

    ``val_start`` and ``test_start`` already include the ``context_length``
    look-back; ``train_end`` / ``val_end`` / ``test_end`` are the borders.
    """

    kind: str  # "ett" or "ratio"
    train_start: int
    train_end: int
    val_start: int
    val_end: int
    test_start: int
    test_end: int

    def part(self, values: np.ndarray, name: str) -> np.ndarray:
        """Rows of ``values`` [T, C] for ``name`` in train / val / test."""
        start, end = {
            "train": (self.train_start, self.train_end),
            "val": (self.val_start, self.val_end),
            "test": (self.test_start, self.test_end),
        }[name]
        return values[start:end]

    def n_windows(self, name: str, context_length: int, horizon: int) -> int:
        """Number of stride-1 windows in a part."""
        start, end = {
            "train": (self.train_start, self.train_end),
            "val": (self.val_start, self.val_end),
            "test": (self.test_start, self.test_end),
        }[name]
        return max(0, end - start - context_length - horizon + 1)

    def to_dict(self) -> dict[str, int | str]:
        return dict(self.__dict__)


def ett_rows_per_month(freq: str) -> int:
    """Rows in a 30-day month at ``freq`` (720 hourly, 2880 at 15 minutes)."""
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    rows = pd.Timedelta(days=DAYS_PER_MONTH) / step
    if rows != int(rows) or rows < 1:
        raise HybridInputError(
            f"data.split: ett needs a frequency that divides a day; got {freq!r}. "
            "Use data.split: ratio for this series."
        )
    return int(rows)


def make_split(
    n_rows: int,
    context_length: int,
    horizon: int,
    *,
    kind: str,
    freq: str = "h",
    ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> Split:
    """Compute the split borders and check that every part has a window.

    Args:
        n_rows: T, the length of the series.
        context_length: L.
        horizon: the longest H that will be evaluated.
        kind: "ett" (12/4/4 months) or "ratio" (``ratios`` of the rows).
        freq: pandas frequency alias (used by "ett").
        ratios: train / val / test fractions (used by "ratio").

    Raises:
        HybridInputError: when the series is too short; the message says how
            many rows the split needs.
    """
    L, H = context_length, horizon
    if kind == "ett":
        month = ett_rows_per_month(freq)
        n_train, n_val, n_test = (m * month for m in ETT_MONTHS)
        needed = n_train + n_val + n_test
        if n_rows < needed or n_train - L - H + 1 < 1 or n_val - H + 1 < 1:
            raise HybridInputError(
                f"series too short for the ETT split: it has {n_rows} rows; 12/4/4 months at "
                f"{freq!r} need {needed} rows (and context_length {L} + horizon {H} must fit in the "
                f"{n_train} training rows). Use data.split: ratio or a longer series."
            )
        train_end, val_end, test_end = n_train, n_train + n_val, needed
    elif kind == "ratio":
        if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-6 or min(ratios) <= 0:
            raise HybridInputError(
                f"data.split_ratios must be three positive fractions summing to 1; got {list(ratios)}."
            )

        def borders(t: int) -> tuple[int, int, int]:
            n_train, n_test = int(t * ratios[0]), int(t * ratios[2])
            return n_train, t - n_test, t

        def fits(t: int) -> bool:
            tr, va, te = borders(t)
            return tr - L - H + 1 >= 1 and (va - tr) - H + 1 >= 1 and (te - va) - H + 1 >= 1

        if not fits(n_rows):
            needed = n_rows
            while not fits(needed):
                needed += 1
            pct = "/".join(f"{round(r * 100)}" for r in ratios)
            raise HybridInputError(
                f"series too short: it has {n_rows} rows, but context_length {L} + horizon {H} "
                f"with a {pct} train/val/test split needs at least {needed} rows. "
                "Lower --context-length or --horizon, or use a longer series."
            )
        train_end, val_end, test_end = borders(n_rows)
    else:
        raise HybridInputError(f"data.split must be 'auto', 'ett' or 'ratio'; got {kind!r}.")
    return Split(
        kind=kind,
        train_start=0,
        train_end=train_end,
        val_start=train_end - L,
        val_end=val_end,
        test_start=val_end - L,
        test_end=test_end,
    )


@dataclass(frozen=True)
class Scaler:
    """Per-channel standard scaling, fitted on the training part only.

    A constant channel gets scale 1 (never a division by zero).
    """

    mean: np.ndarray  # [C]
    scale: np.ndarray  # [C]

    @classmethod
    def fit(cls, train: np.ndarray) -> Scaler:
        mean = train.mean(axis=0, dtype=np.float64)
        std = train.std(axis=0, dtype=np.float64)
        scale = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return cls(mean.astype(np.float64), scale.astype(np.float64))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """[T, C] original units -> scaled float32."""
        return ((values - self.mean) / self.scale).astype(np.float32)

    def inverse(self, values: np.ndarray, channel_axis: int = -1) -> np.ndarray:
        """Scaled -> original units; ``channel_axis`` is where C lies."""
        shape = [1] * values.ndim
        shape[channel_axis] = -1
        return values * self.scale.reshape(shape) + self.mean.reshape(shape)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Scaler:
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64))


def windows(part: np.ndarray, context_length: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Every stride-1 window of a part, as zero-copy views.

    Args:
        part: values [T, C].
        context_length: L.
        horizon: H.

    Returns:
        context [N, C, L] and target [N, C, H], N = T - L - H + 1; both are
        read-only views into ``part`` (no copy).
    """
    L, H = context_length, horizon
    n = part.shape[0] - L - H + 1
    if n < 1:
        raise HybridInputError(
            f"a part of {part.shape[0]} rows holds no window of context_length {L} + horizon {H}."
        )
    full = sliding_window_view(part, L + H, axis=0)  # [T-L-H+1, C, L+H]
    return full[:, :, :L], full[:, :, L:]


def mse_mae(forecast: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """MSE and MAE over every window, channel and step (float64 sums).

    Both arrays are [N, C, H]; they are reduced in chunks of windows so that
    long horizons need no [N, C, H] float64 temporary.
    """
    if forecast.shape != target.shape:
        raise ValueError(f"forecast {forecast.shape} and target {target.shape} differ in shape.")
    se = ae = 0.0
    step = 512
    for i in range(0, forecast.shape[0], step):
        diff = forecast[i : i + step].astype(np.float64) - target[i : i + step]
        se += float(np.square(diff).sum())
        ae += float(np.abs(diff).sum())
    n = forecast.size
    return se / n, ae / n


def segment_windows(segments: Sequence[Segment], context_length: int, horizon: int
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every stride-1 window inside each segment (none spans two segments).

    Returns:
        Per segment long enough to hold one: context [n, C, L] and target
        [n, C, H] (views) and the windows' start rows in the whole series [n].
    """
    out = []
    for seg in segments:
        if len(seg) >= context_length + horizon:
            ctx, tgt = windows(seg.values, context_length, horizon)
            out.append((ctx, tgt, seg.start + np.arange(ctx.shape[0])))
    return out


def gather_windows(values: np.ndarray, starts: np.ndarray, context_length: int, horizon: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Windows by start row: values [T, C], starts [n] -> context [n, C, L], target [n, C, H] (copies)."""
    full = sliding_window_view(values, context_length + horizon, axis=0)  # [T-L-H+1, C, L+H], a view
    picked = full[np.asarray(starts, dtype=np.int64)]
    return picked[:, :, :context_length], picked[:, :, context_length:]


# ----------------------------------------------------------------------------- cross-fitting


@dataclass(frozen=True)
class FoldPlan:
    """K contiguous folds over the history (train + validation rows) for cross-fitting.

    A historical window (start row s, context rows [s, s+L), target rows
    [s+L, s+L+H), every row before ``history_end``) belongs to the fold whose
    block of rows holds its first target row. The members that forecast a
    fold's windows are fitted on the history without the rows
    ``[border_k - purge, border_k+1 + H_max - 1 + purge)``: the fold's rows,
    every target row of its windows and a gap of ``purge`` rows on each side
    of them, so that no training window holds a row of, or right next to, a
    target it will be scored on. Folds are blocked
    (the training data lies on both sides of the hole), not forward-chaining:
    every fold, early ones included, gets members fitted on most of the
    history, as the final refit will be.

    Attributes:
        context_length: L.
        history_end: rows [0, history_end) are the history (the test part's
            own rows come after it).
        purge: rows left out on each side of a fold's targets (default L + the longest H).
        borders: K + 1 row borders; fold k holds first target rows
            [borders[k], borders[k + 1]).
        max_horizon: the longest horizon (a fold's targets reach H_max - 1 rows past its block).
    """

    context_length: int
    history_end: int
    purge: int
    borders: tuple[int, ...]
    max_horizon: int = 1

    @property
    def n_folds(self) -> int:
        return len(self.borders) - 1

    def history_starts(self, horizon: int) -> np.ndarray:
        """Start rows of every historical window at ``horizon`` (target inside the history)."""
        return np.arange(max(0, self.history_end - self.context_length - horizon + 1))

    def fold_of(self, starts: np.ndarray) -> np.ndarray:
        """Fold of each window start [n] -> [n] int (by its first target row)."""
        first = np.asarray(starts) + self.context_length
        return np.clip(np.searchsorted(np.asarray(self.borders), first, side="right") - 1, 0, self.n_folds - 1)

    def excluded(self, fold: int) -> tuple[int, int]:
        """Rows [lo, hi) left out of fold ``fold``'s training data."""
        hi = self.borders[fold + 1] + self.max_horizon - 1 + self.purge
        return max(0, self.borders[fold] - self.purge), min(self.history_end, hi)

    def train_segments(self, fold: int, values: np.ndarray, min_rows: int) -> list[Segment]:
        """Fold ``fold``'s training data: the history without the excluded rows, as segments of >= ``min_rows`` rows."""
        lo, hi = self.excluded(fold)
        parts = [Segment(values[:lo], 0), Segment(values[hi : self.history_end], hi)]
        return [p for p in parts if len(p) >= min_rows]

    def sample_starts(self, horizon: int, max_windows: int) -> np.ndarray:
        """At most ``max_windows`` historical window starts, evenly spread (all when 0 or fewer exist)."""
        starts = self.history_starts(horizon)
        if 0 < max_windows < len(starts):
            starts = starts[np.unique(np.linspace(0, len(starts) - 1, max_windows).round().astype(np.int64))]
        return starts

    def to_dict(self) -> dict[str, object]:
        return {"folds": self.n_folds, "borders": list(self.borders), "purge": self.purge,
                "history_end": self.history_end, "max_horizon": self.max_horizon,
                "scheme": "blocked folds; the fold's rows, its windows' targets and a purge gap on each side are left out"}


def make_fold_plan(history_end: int, context_length: int, max_horizon: int, n_folds: int,
                   purge: int | None = None) -> FoldPlan:
    """Split the history's first-target rows [L, history_end) into ``n_folds`` contiguous blocks.

    Args:
        history_end: rows before the test part (train + validation).
        context_length: L.
        max_horizon: the longest horizon fitted.
        n_folds: K >= 2.
        purge: rows left out on each side of a fold's targets; None: L + max_horizon, lowered (to no
            less than 0: the fold's own rows and targets are always left out) until every fold keeps a
            training window, as short series need.

    Raises:
        HybridInputError: when K < 2 or some fold has no training window left even without a purge
            gap (or with the purge given); the message says what to change.
    """
    L, H = context_length, max_horizon
    if n_folds < 2:
        raise HybridInputError(f"stack.folds must be at least 2; got {n_folds}.")
    if purge is not None and purge < 0:
        raise HybridInputError(f"stack.purge must be >= 0; got {purge}.")
    span = history_end - L
    borders = tuple(int(L + round(k * span / n_folds)) for k in range(n_folds + 1))
    candidates = [int(purge)] if purge is not None else list(range(L + H, -1, -max(1, (L + H) // 8))) + [0]
    for gap in candidates:
        plan = FoldPlan(L, history_end, gap, borders, H)
        if all(max(lo, history_end - hi) >= L + H for lo, hi in (plan.excluded(k) for k in range(n_folds))):
            return plan
    raise HybridInputError(
        f"cross-fitting: with {n_folds} folds some fold leaves no training window (history of {history_end} rows, "
        f"context_length {L} + horizon {H}, purge {candidates[-1]}); use fewer folds (stack.folds, "
        "stack.core_folds), a smaller stack.purge, or a shorter context_length / horizon."
    )


class WindowSet:
    """Every window of one or more segments, addressed by one global index (views, no copies).

    Sample ``s`` (one channel of one window) is channel ``s % C`` of window
    ``s // C``, as the core's trainer counts samples.

    Args:
        segments: the data (a window never spans two segments).
        context_length, horizon: L and H.
    """

    def __init__(self, segments: Sequence[Segment], context_length: int, horizon: int) -> None:
        self.parts = segment_windows(segments, context_length, horizon)
        sizes = [p[0].shape[0] for p in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_windows = int(self.offsets[-1])
        self.n_channels = int(segments[0].values.shape[1]) if segments else 0
        self.context_length, self.horizon = context_length, horizon
        self.starts = np.concatenate([p[2] for p in self.parts]) if self.parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return self.n_windows

    def _locate(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = np.asarray(w, dtype=np.int64)
        part = np.searchsorted(self.offsets, w, side="right") - 1
        return part, w - self.offsets[part]

    def take(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Windows ``w`` [n] -> context [n, C, L] and target [n, C, H] (copies, in the order of ``w``)."""
        w = np.asarray(w, dtype=np.int64)
        ctx = np.empty((len(w), self.n_channels, self.context_length), dtype=np.float32)
        tgt = np.empty((len(w), self.n_channels, self.horizon), dtype=np.float32)
        part, local = self._locate(w)
        for p in np.unique(part):
            sel = part == p
            ctx[sel], tgt[sel] = self.parts[p][0][local[sel]], self.parts[p][1][local[sel]]
        return ctx, tgt

    def samples(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``index`` [m] -> context rows [m, L] and targets [m, H] (copies)."""
        index = np.asarray(index, dtype=np.int64)
        w, c = index // self.n_channels, index % self.n_channels
        ctx, tgt = self.take(w)
        rows = np.arange(len(index))
        return ctx[rows, c], tgt[rows, c]
