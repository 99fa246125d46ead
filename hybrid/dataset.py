"""One dataset type for one series or many: what every stage of a fit reads.

A wide file is one series (S = 1) with C channels; a long file whose series do
not share one time axis is S series with one channel each (a long file whose
series do is one series with a channel per ``unique_id``). Either way the
scaled values lie end to end in one array, with per-series offsets, splits,
scalers and fold plans, so that the fit (:mod:`hybrid.pipeline`) has one path:

- a window never spans two series; window starts are rows of ``values``
  (a series' row plus its offset), so reference forecasts are looked up by
  that row on one series or many;
- fold k of the dataset is fold k of every series (one fold count for all,
  :func:`hybrid.sizing.fit_fold_plans`);
- every series is validated on its own (long files: the same rules and
  messages as a wide file, naming the series), split by ``data.split`` and
  scaled by its own training part.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hybrid.config import Config
from kernel.contract import Segment
from kernel.data import Series, dataset_name, each_series, resolve_split_kind
from kernel.errors import HybridInputError
from kernel.periods import Periods, detect_periods
from kernel.protocol import FoldPlan, Scaler, Split, gather_windows, make_split

logger = logging.getLogger(__name__)

PERIOD_SERIES = 64  # series (the longest) whose training parts the periods of many series are detected on


@dataclass
class Dataset:
    """One series or many, scaled and split one by one, stored one after the other.

    Attributes:
        values: [N, C] float32, every series scaled by its own training part, back to back.
        offsets: [S + 1] row where each series starts in ``values`` (and where the last ends).
        ids: the series' names (one series: the dataset's name; many: their ``unique_id``).
        splits: each series' train / validation / test borders (rows of the series), of kind ``split_kind``.
        scalers: each series' per-channel scaler.
        last: each series' last timestamp.
        periods: detected on the training part (many series: of the longest ones).
        columns: the C channel names; out_ch: the output channels (scored and combined).
        freq: the spacing; name, source: dataset name and where it came from.
        series: one series: the validated table (original units); None for many.
    """

    values: np.ndarray
    offsets: np.ndarray
    ids: list[str]
    splits: list[Split]
    scalers: list[Scaler]
    last: list[pd.Timestamp]
    periods: Periods
    columns: list[str]
    out_ch: list[int]
    freq: str
    name: str
    source: str
    split_kind: str
    series: Series | None = None

    # ------------------------------------------------------------------ shape
    @property
    def n_series(self) -> int:
        return len(self.ids)

    @property
    def many(self) -> bool:
        """Whether this is many series (a long file's panel) rather than one."""
        return self.series is None

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self, i: int) -> np.ndarray:
        """Series ``i``'s scaled values [T_i, C]."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    @property
    def history_ends(self) -> list[int]:
        return [sp.val_end for sp in self.splits]

    # one series' conveniences (its split, scaler and scaled values)
    @property
    def split(self) -> Split:
        return self._one(self.splits)

    @property
    def scaler(self) -> Scaler:
        return self._one(self.scalers)

    @property
    def scaled(self) -> np.ndarray:
        return self.values

    @property
    def history_end(self) -> int:
        return self.split.val_end

    def _one(self, items: list) -> object:
        if self.n_series != 1:
            raise ValueError(f"{self.name} holds {self.n_series} series; ask for one series' part by index.")
        return items[0]

    # ------------------------------------------------------------------ parts and windows
    def segments(self, part: str) -> list[Segment]:
        """Every series' ``part`` (train, val, trainval (the history), test or all) as segments placed in ``values``."""
        out = []
        for i, sp in enumerate(self.splits):
            lo, hi = {"train": (sp.train_start, sp.train_end), "val": (sp.val_start, sp.val_end),
                      "trainval": (sp.train_start, sp.val_end), "test": (sp.test_start, sp.test_end),
                      "all": (0, int(self.offsets[i + 1] - self.offsets[i]))}[part]
            o = int(self.offsets[i])
            out.append(Segment(self.values[o + lo : o + hi], o + lo))
        return out

    def validation(self) -> Segment | list[Segment]:
        """The validation part as members read it: one segment for one series, a list for many."""
        parts = self.segments("val")
        return parts[0] if len(parts) == 1 else parts

    def fold_segments(self, fold: int, min_rows: int, plans: Sequence[FoldPlan]) -> list[Segment]:
        """Every series' training data for fold ``fold`` of ``plans`` (one per series): its history without the
        fold and the purge gaps."""
        out = []
        for i, plan in enumerate(plans):
            o = int(self.offsets[i])
            out += [Segment(s.values, s.start + o) for s in plan.train_segments(fold, self.rows(i), min_rows)]
        return out

    def series_of(self, starts: np.ndarray) -> np.ndarray:
        """The series each row of ``values`` belongs to."""
        return np.searchsorted(self.offsets, np.asarray(starts, dtype=np.int64), side="right") - 1

    def fold_of(self, starts: np.ndarray, plans: Sequence[FoldPlan]) -> np.ndarray:
        """The fold (of ``plans``, one per series) of the windows starting at rows ``starts`` of ``values``."""
        starts = np.asarray(starts, dtype=np.int64)
        which = self.series_of(starts)
        out = np.empty(len(starts), dtype=np.int64)
        for i in np.unique(which):
            rows = which == i
            out[rows] = plans[int(i)].fold_of(starts[rows] - self.offsets[i])
        return out

    def times(self, starts: np.ndarray) -> np.ndarray:
        """Each window's time (rows of ``values`` -> its row in its series less the series' history end): every
        series' history ends at time 0, so that windows of many series are aged alike (one series: a shift)."""
        which = self.series_of(starts)
        return np.asarray(starts, np.int64) - self.offsets[which] - np.asarray(self.history_ends)[which]

    def sample_starts(self, horizon: int, max_windows: int, plans: Sequence[FoldPlan], folds: int) -> np.ndarray:
        """Historical window starts (rows of ``values``), ``max_windows`` shared out over the series.

        Many series keep at least one window per fold of each series (``folds``): with fewer, a series' few
        windows would all fall in its first folds and leave-one-fold-out would meet folds without windows.
        """
        cap = 0 if max_windows == 0 else max(folds if self.many else 1, max_windows // self.n_series)
        return np.concatenate([p.sample_starts(horizon, cap) + self.offsets[i] for i, p in enumerate(plans)])

    def test_starts(self, context_length: int, horizon: int) -> np.ndarray:
        """Every test window's start (rows of ``values``), series after series."""
        return np.concatenate([np.arange(sp.test_start, sp.test_end - context_length - horizon + 1) + self.offsets[i]
                               for i, sp in enumerate(self.splits)]).astype(np.int64)

    def windows(self, starts: np.ndarray, context_length: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """Contexts [n, C, L] and targets [n, C, H] of the windows starting at rows ``starts`` (copies)."""
        ctx, tgt = gather_windows(self.values, starts, context_length, horizon)
        return np.ascontiguousarray(ctx), np.ascontiguousarray(tgt)

    def last_contexts(self, context_length: int) -> np.ndarray:
        """Each series' last window [S, C, L] (scaled): what the production fits forecast from."""
        return np.ascontiguousarray(np.stack([self.rows(i)[-context_length:].T for i in range(self.n_series)]))

    def original(self, i: int) -> np.ndarray:
        """Series ``i`` in original units [T_i, C]."""
        return self.scalers[i].inverse(self.rows(i).astype(np.float64))


# ----------------------------------------------------------------------------- one series


def from_series(cfg: Config, series: Series, max_horizon: int) -> Dataset:
    """One validated series, split, scaled and described (``cfg``'s context length resolved)."""
    kind = resolve_split_kind(series.name, cfg.data.split)
    split = make_split(series.n_rows, cfg.task.context_length, max_horizon, kind=kind, freq=series.freq,
                       ratios=tuple(cfg.data.split_ratios))
    scaler = Scaler.fit(split.part(series.values, "train"))
    scaled = scaler.transform(series.values)
    periods = detect_periods(split.part(scaled, "train"), k=cfg.task.n_periods)
    logger.info("%s: %d rows x %d channels at %s; split %s; periods %s", series.name, series.n_rows,
                len(series.columns), series.freq, kind, list(periods.dominant))
    return Dataset(scaled, np.array([0, series.n_rows], dtype=np.int64), [series.name], [split], [scaler],
                   [series.timestamps[-1]], periods, list(series.columns), series.output_channels, series.freq,
                   series.name, series.source, kind, series)


# ----------------------------------------------------------------------------- many series


def from_long(cfg: Config, source: str, frame: pd.DataFrame, max_horizon: int) -> Dataset:
    """Read and validate a long file series by series, split and scale each.

    ``data.split`` chooses each series' split as it does a wide series' (``auto``: ett for a dataset named
    ETTh* / ETTm*, else ratio).

    Raises:
        HybridInputError: for every input problem, naming the series (``unique_id``) and the fix.
    """
    L, data_cfg = cfg.task.context_length, cfg.data
    name = data_cfg.name or dataset_name(source)
    kind = resolve_split_kind(name, data_cfg.split)
    ids, parts, splits, scalers, lasts, freqs = [], [], [], [], [], []
    for uid, data, freq in each_series(frame, source, data_cfg):
        values = data["y"].to_numpy(np.float32)[:, None]  # float32 in original units, as a wide series keeps them
        try:
            split = make_split(len(values), L, max_horizon, kind=kind, freq=freq, ratios=tuple(data_cfg.split_ratios))
        except HybridInputError as exc:
            raise HybridInputError(f"unique_id {uid}: {exc} Or drop the series from the file.") from None
        train = values[: split.train_end]
        scaler = Scaler.fit(train)
        if float(train.std(dtype=np.float64)) < 1e-8 * max(1.0, float(np.abs(scaler.mean[0]))):
            raise HybridInputError(f"unique_id {uid} is constant over its training part ({train[0, 0]:g}); there is "
                                   "nothing to learn from it: drop it from the file.")
        ids.append(uid)
        parts.append(scaler.transform(values))
        splits.append(split)
        scalers.append(scaler)
        lasts.append(data.index[-1])
        freqs.append(freq)
    kinds = sorted(set(freqs))
    if len(kinds) > 1:
        raise HybridInputError(f"{source}: the series have different spacings ({', '.join(kinds)}); many series "
                               "need one (set data.freq, or fit them separately).")
    lengths = np.array([len(p) for p in parts])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    longest = np.argsort(-lengths, kind="stable")[:PERIOD_SERIES]
    n = min(splits[i].train_end for i in longest)
    tails = [parts[i][splits[i].train_end - n : splits[i].train_end] for i in longest]
    periods = detect_periods(np.concatenate(tails, axis=1), k=cfg.task.n_periods)
    logger.info("%s: %d series in long format (%d-%d rows, %d in all) at %s; per-series %s splits; periods %s",
                name, len(ids), lengths.min(), lengths.max(), offsets[-1], kinds[0], kind, list(periods.dominant))
    return Dataset(np.concatenate(parts), offsets, ids, splits, scalers, lasts, periods, ["y"], [0], kinds[0],
                   name, str(source), kind)
