"""The windows the peers forecast, taken from the project's own protocol (no peer library imported here).

A peer forecasts a test window from its *cutoff*: the row of the window's
last context step. The context is the ``context_length`` rows ending at the
cutoff, the target the ``horizon`` rows after it. :func:`peer_cutoffs`
enumerates exactly the windows :func:`kernel.protocol.windows` yields on the
test part (``tests/test_peers_windows.py`` checks that), so every peer is
scored on the same (context, target) pairs as ``hybrid evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kernel.data import DataConfig, load_series, resolve_split_kind
from kernel.periods import detect_periods
from kernel.protocol import Scaler, Split, make_split


@dataclass(frozen=True)
class PeerData:
    """One dataset under the project's protocol.

    Attributes:
        name: the series' name (``ETTh1``, ``exchange_rate``).
        values: scaled float32 [T, C] (scaler fitted on the training part),
            cut at ``split.test_end`` (ETT rows after the 20 months are unused).
        split: the project's split borders.
        period: the dominant period detected on the scaled training part, 1 when none.
        columns: the C channel names.
        freq: pandas frequency alias.
    """

    name: str
    values: np.ndarray
    split: Split
    period: int
    columns: tuple[str, ...]
    freq: str

    def part(self, name: str) -> np.ndarray:
        """Scaled rows of ``train`` / ``val`` / ``test`` [T_part, C] (val and test start L rows early)."""
        return self.split.part(self.values, name)


def prepare(path: str | Path, context_length: int, max_horizon: int, ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
            ) -> PeerData:
    """Load, split and scale a benchmark file exactly as ``hybrid fit`` does with the default data config."""
    series = load_series(str(path), DataConfig())
    kind = resolve_split_kind(series.name, "auto")
    split = make_split(series.n_rows, context_length, max_horizon, kind=kind, freq=series.freq, ratios=ratios)
    scaler = Scaler.fit(split.part(series.values, "train"))
    scaled = scaler.transform(series.values)[: split.test_end]
    periods = detect_periods(split.part(scaled, "train"), k=3)
    period = int(periods.dominant[0]) if periods.dominant else 1
    return PeerData(series.name, scaled, split, period, series.columns, series.freq)


def peer_cutoffs(split: Split, context_length: int, horizon: int) -> np.ndarray:
    """Cutoff rows (last context step, in the whole series) of every stride-1 test window, in window order [N]."""
    n = split.n_windows("test", context_length, horizon)
    return split.test_start + context_length - 1 + np.arange(n, dtype=np.int64)


def every_nth(split: Split, context_length: int, horizon: int, every: int) -> tuple[np.ndarray, int, int]:
    """Every ``every``-th test window from the first, as Nixtla's ``cross_validation(step_size=every)`` sees them.

    The libraries want ``(test_size - h)`` divisible by the step; the frame then ends ``(n - 1) % every`` rows before
    the test part does, so that their windows are exactly these (and no test row reaches training).

    Returns:
        The cutoffs [ceil(n / every)], the frame's end row (exclusive) and the ``test_size`` to pass.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1; got {every}.")
    cutoffs = peer_cutoffs(split, context_length, horizon)
    cut = (len(cutoffs) - 1) % every
    return cutoffs[::every], split.test_end - cut, split.test_end - split.val_end - cut


def spread(n: int, max_windows: int) -> np.ndarray:
    """Indices of at most ``max_windows`` of ``n`` windows, evenly spread, first and last included (all when <= 0)."""
    if max_windows <= 0 or max_windows >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, max_windows).round().astype(np.int64))


def windows_at(values: np.ndarray, cutoffs: np.ndarray, context_length: int, horizon: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Context [n, C, L] and target [n, C, H] of the windows ending their context at ``cutoffs`` [n] (copies)."""
    cutoffs = np.asarray(cutoffs, dtype=np.int64)
    if cutoffs.size and (cutoffs.min() < context_length - 1 or cutoffs.max() + horizon > values.shape[0] - 1):
        raise ValueError(f"cutoffs must lie in [{context_length - 1}, {values.shape[0] - horizon - 1}]; "
                         f"got [{cutoffs.min()}, {cutoffs.max()}].")
    ctx_rows = cutoffs[:, None] + np.arange(-context_length + 1, 1)  # [n, L]
    tgt_rows = cutoffs[:, None] + np.arange(1, horizon + 1)  # [n, H]
    return values[ctx_rows].transpose(0, 2, 1).copy(), values[tgt_rows].transpose(0, 2, 1).copy()


def long_frame(values: np.ndarray, end: int | None = None) -> pd.DataFrame:
    """Scaled values [T, C] as Nixtla's long frame: ``unique_id`` = channel index, ``ds`` = row index, ``y``.

    Integer ``ds`` (frequency 1) makes a cutoff the row number itself, so no
    calendar arithmetic stands between a peer's cutoffs and the project's rows.
    """
    values = values[:end]
    t, c = values.shape
    return pd.DataFrame({
        "unique_id": np.repeat(np.arange(c), t),
        "ds": np.tile(np.arange(t, dtype=np.int64), c),
        "y": values.T.reshape(-1).astype(np.float64),
    })


def forecasts_from_long(frame: pd.DataFrame, column: str, cutoffs: np.ndarray, n_channels: int, horizon: int
                        ) -> np.ndarray:
    """A cross-validation frame (``unique_id``, ``ds``, ``cutoff``, ``column``) -> forecasts [n, C, H] in ``cutoffs`` order.

    Raises:
        ValueError: when a (channel, cutoff, step) is missing or the steps are not ``cutoff + 1 .. cutoff + H``.
    """
    cutoffs = np.asarray(cutoffs, dtype=np.int64)
    pos = pd.Series(np.arange(len(cutoffs)), index=cutoffs)
    f = frame[["unique_id", "ds", "cutoff", column]]
    f = f[f["cutoff"].isin(cutoffs)]
    expected = len(cutoffs) * n_channels * horizon
    if len(f) != expected:
        raise ValueError(f"{column}: {len(f)} forecast rows for {len(cutoffs)} cutoffs x {n_channels} channels x "
                         f"{horizon} steps (expected {expected}).")
    w = pos.loc[f["cutoff"].to_numpy()].to_numpy()
    c = f["unique_id"].to_numpy().astype(np.int64)
    step = f["ds"].to_numpy().astype(np.int64) - f["cutoff"].to_numpy().astype(np.int64) - 1
    if step.min() < 0 or step.max() >= horizon:
        raise ValueError(f"{column}: forecast steps run from {step.min() + 1} to {step.max() + 1} after the cutoff; "
                         f"expected 1 to {horizon}.")
    out = np.full((len(cutoffs), n_channels, horizon), np.nan, dtype=np.float32)
    out[w, c, step] = f[column].to_numpy()
    if np.isnan(out).any():
        raise ValueError(f"{column}: some (window, channel, step) has no forecast (duplicates in the frame?).")
    return out
