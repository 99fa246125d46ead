"""Loading and validating a series: the boundary where bad input is stopped.

Every problem found here is a :class:`HybridInputError` with one line that
names the problem and the fix (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kernel.errors import HybridInputError

logger = logging.getLogger(__name__)

BUILTIN = ("taylor", "msft")
DEFAULT_DATASET = "taylor"
TIME_COLUMN_NAMES = ("date", "ds", "timestamp", "time", "datetime")
LONG_COLUMNS = ("unique_id", "ds", "y")

@dataclass(frozen=True)
class DataConfig:
    """How the series is read and checked (see README, "Config reference")."""

    name: str = ""  # dataset name in reports; default: file stem or built-in name
    description: str = ""  # domain description used in the core's prompt
    time_column: str = "auto"  # auto: date / ds / timestamp / time / datetime, else the first column
    target: str = "auto"  # auto: OT when present, else the last column
    features: str = "M"  # M: all in, all out; S: target only; MS: all in, target out
    missing: str = "error"  # NaN, inf, sentinels: error | interpolate | ffill | drop
    sentinels: tuple[float, ...] = (-9999.0, -99999.0)  # values that mean "missing"
    duplicates: str = "error"  # duplicate timestamps: error | first | mean | keep (rows as they are; needs gaps: allow)
    gaps: str = "error"  # irregular spacing: error | interpolate | allow
    freq: str = "auto"  # pandas alias, or auto (inferred from the timestamps)
    split: str = "auto"  # auto (ett for ETT* files, else ratio) | ett | ratio
    split_ratios: tuple[float, ...] = (0.7, 0.1, 0.2)  # train / val / test fractions for split ratio
    layout: str = "auto"  # long files (unique_id, ds, y): auto (many series unless all share one time axis) | long | wide


@dataclass(frozen=True)
class Series:
    """A validated multichannel series.

    Attributes:
        values: float32 [T, C], original units, no NaN.
        timestamps: the T timestamps, increasing.
        columns: the C channel names.
        freq: pandas frequency alias of the spacing.
        name: dataset name (file stem or built-in name).
        target: the target column's name.
        features: M, S or MS.
        source: the path or built-in name it came from.
    """

    values: np.ndarray
    timestamps: pd.DatetimeIndex
    columns: tuple[str, ...]
    freq: str
    name: str
    target: str
    features: str
    source: str

    @property
    def n_rows(self) -> int:
        return self.values.shape[0]

    @property
    def output_channels(self) -> list[int]:
        """Channels that are forecast and scored (all for M, the target for S / MS)."""
        if self.features == "M":
            return list(range(len(self.columns)))
        return [self.columns.index(self.target)]

    def fingerprint(self) -> str:
        """sha256 of the columns and values: identifies the data a run was fitted on."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.columns).encode())
        h.update(np.ascontiguousarray(self.values).tobytes())
        return h.hexdigest()

    def future_timestamps(self, horizon: int) -> pd.DatetimeIndex:
        """The ``horizon`` timestamps after the last one, at the series' frequency."""
        return future_timestamps(self.timestamps[-1], horizon, self.freq)


def future_timestamps(last: pd.Timestamp, horizon: int, freq: str) -> pd.DatetimeIndex:
    """The ``horizon`` timestamps after ``last``, ``freq`` apart (pandas alias): what a forecast is stamped with."""
    return pd.date_range(last, periods=horizon + 1, freq=freq)[1:]


def dataset_name(source: str | None) -> str:
    """Short dataset name for a path or built-in name (``ETTh1.csv.gz`` -> ``ETTh1``)."""
    if source is None:
        return DEFAULT_DATASET
    name = Path(source).name
    for suffix in (".gz", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _builtin_frame(name: str) -> tuple[pd.DataFrame, DataConfig | None]:
    from pmdarima import datasets

    if name == "taylor":
        # Half-hourly electricity demand in England and Wales, from Monday
        # 5 June 2000 to Sunday 27 August 2000 (Taylor, 2003): 12 weeks.
        y = np.asarray(datasets.load_taylor(), dtype=np.float64)
        ts = pd.date_range("2000-06-05", periods=len(y), freq="30min")
        return pd.DataFrame({"date": ts, "demand": y}), None
    # msft: daily Microsoft stock prices on trading days; holidays leave gaps
    # in a business-day calendar, so they are allowed for this data set.
    frame = datasets.load_msft().drop(columns=["OpenInt"])
    frame = frame.rename(columns={"Date": "date"})
    return frame, DataConfig(gaps="allow", freq="B", target="Close")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise HybridInputError(
            f"data file not found: {path}; pass --data with an existing CSV (.csv or .csv.gz) "
            f"or a built-in dataset name ({', '.join(BUILTIN)})."
        )
    if path.is_dir():
        raise HybridInputError(f"--data {path} is a folder; pass a CSV file (.csv or .csv.gz).")
    try:
        return pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HybridInputError(
            f"cannot read {path} as CSV ({reason}); pass a comma-separated file with a header row."
        ) from None


def _long_to_wide(frame: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """``unique_id, ds, y`` rows -> one column per unique_id, indexed by ds."""
    dup = frame.duplicated(subset=["unique_id", "ds"], keep=False)
    if dup.any() and cfg.duplicates == "error":
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise HybridInputError(
            f"duplicate timestamp {frame['ds'].iloc[row]} for unique_id {frame['unique_id'].iloc[row]} "
            f"(CSV line {row + 2}); set data.duplicates: first or mean, or remove the duplicates."
        )
    agg = "first" if cfg.duplicates == "first" else "mean"
    y = pd.to_numeric(frame["y"], errors="coerce")
    bad = y.isna() & frame["y"].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise HybridInputError(
            f"column 'y' is not numeric: CSV line {row + 2} holds {frame['y'].iloc[row]!r}; "
            "fix or remove those rows."
        )
    wide = (
        frame.assign(y=y)
        .pivot_table(index="ds", columns="unique_id", values="y", aggfunc=agg, dropna=False)
        .reset_index()
    )
    wide.columns = ["ds", *[str(c) for c in wide.columns[1:]]]
    return wide


def _find_time_column(frame: pd.DataFrame, cfg: DataConfig, source: str) -> str:
    if cfg.time_column != "auto":
        if cfg.time_column not in frame.columns:
            raise HybridInputError(
                f"time column {cfg.time_column!r} (data.time_column) is not in {source}; "
                f"columns are: {', '.join(map(str, frame.columns))}."
            )
        return cfg.time_column
    for col in frame.columns:
        if str(col).strip().lower() in TIME_COLUMN_NAMES:
            return col
    first = frame.columns[0]
    if frame[first].dtype == object:
        parsed = pd.to_datetime(frame[first], errors="coerce", format="mixed")
        if parsed.notna().mean() > 0.99:
            return first
    raise HybridInputError(
        f"no time column in {source}: expected one named {' / '.join(TIME_COLUMN_NAMES)} or a first "
        "column of dates; add one, or name it with data.time_column."
    )


def _parse_times(col: pd.Series, name: str, source: str) -> pd.DatetimeIndex:
    parsed = pd.to_datetime(col, errors="coerce", format="mixed")
    bad = parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise HybridInputError(
            f"time column {name!r} in {source}: CSV line {row + 2} holds {col.iloc[row]!r}, which is not "
            "a date; fix or remove that row."
        )
    return pd.DatetimeIndex(parsed)


def _numeric(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Every column as float64, or an error naming the non-numeric columns."""
    out = {}
    bad: list[str] = []
    example = ""
    for col in frame.columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        broken = values.isna() & frame[col].notna() & (frame[col].astype(str).str.strip() != "")
        if broken.any():
            bad.append(str(col))
            if not example:
                row = int(np.flatnonzero(broken.to_numpy())[0])
                example = f" (e.g. {col!r} on CSV line {row + 2}: {frame[col].iloc[row]!r})"
        out[col] = values.astype(np.float64)
    if bad:
        raise HybridInputError(
            f"non-numeric columns in {source}: {', '.join(bad)}{example}; drop them or choose "
            "channels with --features S --target COLUMN."
        )
    return pd.DataFrame(out, index=frame.index)


def _handle_missing(values: pd.DataFrame, cfg: DataConfig, source: str) -> pd.DataFrame:
    arr = values.to_numpy()
    sentinel = np.isin(arr, np.asarray(cfg.sentinels, dtype=np.float64)) if cfg.sentinels else np.zeros_like(arr, bool)
    missing = ~np.isfinite(arr) | sentinel
    if not missing.any():
        return values
    if cfg.missing == "error":
        row, col = (int(i) for i in np.argwhere(missing)[0])
        what = f"the sentinel {arr[row, col]:g}" if sentinel[row, col] else f"{arr[row, col]}"
        raise HybridInputError(
            f"column {values.columns[col]!r}, row {row} ({values.index[row]}) holds {what} "
            f"({int(missing.sum())} such value(s) in all); set data.missing: interpolate, ffill or drop "
            "(e.g. --set data.missing=interpolate), or clean the file."
        )
    logger.warning("%s: %d missing or sentinel value(s) handled by data.missing=%s",
                   source, int(missing.sum()), cfg.missing)
    masked = values.mask(missing)
    if cfg.missing == "interpolate":
        return masked.interpolate(method="linear", limit_direction="both")
    if cfg.missing == "ffill":
        return masked.ffill().bfill()
    return masked.dropna(axis=0, how="any")


def _regularise(values: pd.DataFrame, cfg: DataConfig, source: str) -> tuple[pd.DataFrame, str]:
    """Infer the frequency and check the spacing; returns the (maybe re-indexed) frame."""
    index = pd.DatetimeIndex(values.index)
    if cfg.freq != "auto":
        try:
            offset = pd.tseries.frequencies.to_offset(cfg.freq)
        except ValueError:
            raise HybridInputError(f"data.freq {cfg.freq!r} is not a pandas frequency alias (e.g. h, 15min, D).") from None
        freq = cfg.freq
    else:
        with warnings.catch_warnings():  # pandas 3 warns that infer_freq will return an offset
            warnings.simplefilter("ignore")
            freq = pd.infer_freq(index) if len(index) >= 3 and index.is_unique else None
        if freq is None:
            step = pd.Series(index).diff().dropna().median()
            offset = pd.tseries.frequencies.to_offset(step)
            freq = offset.freqstr
        offset = pd.tseries.frequencies.to_offset(freq)
    grid = pd.date_range(index[0], index[-1], freq=offset)
    if len(grid) == len(index) and (grid == index).all():
        return values, freq
    if cfg.gaps == "allow":
        return values, freq
    missing = grid.difference(index)
    if cfg.gaps == "interpolate" and len(missing) and index.isin(grid).all():
        logger.warning("%s: %d missing timestamp(s) filled by interpolation (data.gaps=interpolate)",
                       source, len(missing))
        out = values.reindex(grid).interpolate(method="linear", limit_direction="both")
        return out, freq
    first = missing[0] if len(missing) else index[np.flatnonzero(~index.isin(grid))[0]]
    raise HybridInputError(
        f"irregular timestamps in {source}: the spacing is not a regular {freq!r} "
        f"({len(missing)} step(s) missing, first at {first}); set data.gaps: interpolate to fill "
        "them, data.gaps: allow to treat rows as consecutive, or fix the file."
    )


def load_series(source: str | None, cfg: DataConfig) -> Series:
    """Read, validate and clean a series.

    Args:
        source: a CSV path (.csv / .csv.gz, wide or long layout) or a built-in
            dataset name; None means the default built-in dataset.
        cfg: the ``data`` config section.

    Returns:
        A :class:`Series` with float32 values [T, C].

    Raises:
        HybridInputError: for every input problem, with a one-line fix.
    """
    source = source or DEFAULT_DATASET
    name = cfg.name or dataset_name(source)
    if source in BUILTIN and not Path(source).exists():
        frame, builtin_cfg = _builtin_frame(source)
        if builtin_cfg is not None:
            # Built-in settings apply where the user left the default.
            defaults = DataConfig()
            changes = {k: getattr(builtin_cfg, k) for k in ("gaps", "freq", "target")
                       if getattr(cfg, k) == getattr(defaults, k)}
            cfg = replace(cfg, **changes)
    else:
        frame = _read_csv(Path(source))
    if frame.shape[0] == 0:
        raise HybridInputError(f"{source} has no data rows; pass a file with a header and at least one row.")
    if set(LONG_COLUMNS) <= set(frame.columns):
        frame = _long_to_wide(frame, cfg)
    time_col = _find_time_column(frame, cfg, source)
    times = _parse_times(frame[time_col], str(time_col), source)
    data = frame.drop(columns=[time_col])
    if data.shape[1] == 0:
        raise HybridInputError(f"{source} has a time column but no value columns; add at least one numeric column.")
    data = _numeric(data, source)
    data.index = times

    if not times.is_monotonic_increasing:
        logger.warning("%s: timestamps were not in increasing order; sorted them", source)
        data = data.sort_index(kind="stable")
    dup = data.index.duplicated(keep=False)
    if dup.any():
        if cfg.duplicates == "error":
            first = data.index[np.flatnonzero(dup)[0]]
            raise HybridInputError(
                f"duplicate timestamps in {source} ({int(data.index.duplicated().sum())} repeated, first "
                f"{first}); set data.duplicates: first, mean or keep (keep needs data.gaps: allow), or remove them."
            )
        if cfg.duplicates not in ("first", "mean", "keep"):
            raise HybridInputError(f"data.duplicates must be error, first, mean or keep; got {cfg.duplicates!r}.")
        if cfg.duplicates == "keep" and cfg.gaps != "allow":
            raise HybridInputError("data.duplicates: keep treats rows as consecutive steps; it needs data.gaps: allow.")
        logger.warning("%s: duplicate timestamps resolved by data.duplicates=%s", source, cfg.duplicates)
        if cfg.duplicates == "first":
            data = data.groupby(level=0).first()
        elif cfg.duplicates == "mean":
            data = data.groupby(level=0).mean()

    data = _handle_missing(data, cfg, source)
    data, freq = _regularise(data, cfg, source)

    columns = tuple(str(c) for c in data.columns)
    if cfg.target == "auto":
        target = "OT" if "OT" in columns else columns[-1]
    elif cfg.target in columns:
        target = cfg.target
    else:
        raise HybridInputError(
            f"target {cfg.target!r} is not a column of {source}; columns are: {', '.join(columns)}."
        )
    if cfg.features not in ("M", "S", "MS"):
        raise HybridInputError(f"data.features must be M, S or MS; got {cfg.features!r}.")
    if cfg.features == "S":
        data = data[[target]]
        columns = (target,)

    values = data.to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        col = columns[int(np.argwhere(~np.isfinite(values))[0][1])]
        raise HybridInputError(f"column {col!r} overflows float32; rescale it before fitting.")
    for j, col in enumerate(columns):
        if np.ptp(values[:, j]) == 0:
            logger.warning("%s: channel %r is constant (%g); it is kept and scaled with unit scale",
                           source, col, float(values[0, j]))
    return Series(
        values=values,
        timestamps=pd.DatetimeIndex(data.index),
        columns=columns,
        freq=freq,
        name=name,
        target=target,
        features=cfg.features,
        source=str(source),
    )


def resolve_split_kind(series_name: str, configured: str) -> str:
    """``auto`` -> ``ett`` for ETTh* / ETTm* datasets, else ``ratio``."""
    if configured != "auto":
        return configured
    return "ett" if series_name.lower().startswith(("etth", "ettm")) else "ratio"
