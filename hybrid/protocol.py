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

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from hybrid.errors import HybridInputError

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
