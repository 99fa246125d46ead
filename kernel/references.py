"""Reference forecasts: what members with ``uses_references`` (the core) read beside the data.

:class:`PredictedReferences` forecasts any window of a series, by its start
row, with fitted members; which fitted set serves a window is a function of
its start (cross-fitting hands over one set per fold and the window's fold,
so that every reference forecast comes from a fit that never saw the
window's target). A single set serves every window when no folds are given
(as in tests, or for data that is only forecast).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from kernel.protocol import gather_windows

CHUNK = 1024  # windows forecast per call


class PredictedReferences:
    """Reference forecasts of the windows of one series, computed on demand.

    Args:
        names: the R reference members, in order.
        values: the whole scaled series [T, C] the windows are cut from.
        context_length: L.
        fitted: one mapping name -> fitted member per group of windows.
        group_of: window starts [n] -> group index [n] into ``fitted``
            (None: every window uses ``fitted[0]``).
    """

    def __init__(self, names: Sequence[str], values: np.ndarray, context_length: int,
                 fitted: Sequence[dict[str, object]],
                 group_of: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.names = tuple(names)
        self.values, self.context_length = values, context_length
        self.fitted, self.group_of = list(fitted), group_of

    def forecasts(self, starts: np.ndarray, horizon: int) -> np.ndarray:
        """Window start rows [n] -> forecasts [n, C, R, horizon] float32."""
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), self.values.shape[1], len(self.names), horizon), dtype=np.float32)
        groups = self.group_of(starts) if self.group_of is not None else np.zeros(len(starts), dtype=np.int64)
        for g in np.unique(groups):
            rows = np.flatnonzero(groups == g)
            for i in range(0, len(rows), CHUNK):
                part = rows[i : i + CHUNK]
                ctx, _ = gather_windows(self.values, starts[part], self.context_length, 0)
                for r, name in enumerate(self.names):
                    out[part, :, r] = self.fitted[g][name].predict(np.ascontiguousarray(ctx))[:, :, :horizon]
        return out
