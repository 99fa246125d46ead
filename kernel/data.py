"""Loading and validating a series: the boundary where bad input is stopped.

Every problem found here is a :class:`HybridInputError` with one line that
names the problem and the fix (the CLI turns it into exit code 2).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import lzma
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeAlias

import numpy as np
import pandas as pd

from kernel.errors import HybridInputError

logger = logging.getLogger(__name__)

BUILTIN = ("taylor", "airpassengers", "msft")
DEFAULT_DATASET = "taylor"
TIME_COLUMN_NAMES = ("date", "ds", "timestamp", "time", "datetime")
LONG_COLUMNS = ("unique_id", "ds", "y")
FRAME_SOURCE = "dataframe"  # what an in-memory DataFrame is called: its dataset name and its source in messages
SEPARATORS = (",", ";", "\t", "|")  # what data.sep: auto chooses from
SNIFF_BYTES = 1 << 16  # the start of a text file that the separator and the decimal mark are sniffed on
MAX_INVENTED_SHARE = 0.10  # data.gaps: interpolate refuses to invent more than this share of the regular grid's rows
ZIP_MAGIC = b"PK\x03\x04"  # .xlsx (a ZIP of XML parts), or a zipped CSV
OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # .xls (Excel 97-2003, an OLE compound file)
COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
_OPENERS = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
_SLASH_DATE = re.compile(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{2,4})(?!\d)")  # 13/01/2020, 01.13.2020, 1-2-20
_DOT_DECIMAL = re.compile(r"^[+-]?\d*\.\d+(?:[eE][+-]?\d+)?$")
_COMMA_DECIMAL = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$")
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")

DataSource: TypeAlias = str | os.PathLike[str] | pd.DataFrame | None  # a file, a built-in name or a DataFrame

Features = Literal["M", "S", "MS"]
Missing = Literal["error", "interpolate", "ffill", "drop"]
Duplicates = Literal["error", "first", "mean", "keep"]
Gaps = Literal["error", "interpolate", "allow"]
Split = Literal["auto", "ett", "ratio"]
Layout = Literal["auto", "long", "wide"]


@dataclass(frozen=True)
class DataConfig:
    """How the series is read and checked (see README, "Config reference")."""

    name: str = ""  # dataset name in reports; default: file stem or built-in name
    description: str = ""  # domain description used in the core's prompt
    time_column: str = "auto"  # auto: date / ds / timestamp / time / datetime, else the first column
    target: str = "auto"  # auto: OT when present, else the last column
    features: Features = "M"  # M: all in, all out; S: target only; MS: all in, target out
    missing: Missing = "error"  # NaN, inf, sentinels: error | interpolate | ffill | drop
    sentinels: tuple[float, ...] = (-9999.0, -99999.0)  # values that mean "missing"
    duplicates: Duplicates = "error"  # duplicate timestamps: error | first | mean | keep (rows as they are; gaps: allow)
    gaps: Gaps = "error"  # irregular spacing: error | interpolate | allow
    freq: str = "auto"  # pandas alias, or auto (inferred from the timestamps)
    split: Split = "auto"  # auto (ett for ETT* files, else ratio) | ett | ratio
    split_ratios: tuple[float, ...] = (0.7, 0.1, 0.2)  # train / val / test fractions for split ratio
    layout: Layout = "auto"  # long files (unique_id, ds, y): auto (many series unless all share one time axis) | long | wide
    sep: str = "auto"  # field separator: auto (sniffed: comma, semicolon, tab or pipe), one character, or tab
    decimal: str = "auto"  # decimal mark: auto ("," when the separator is not a comma and numbers use it) | . | ,
    dayfirst: str = "auto"  # 01/02/2020 is 1 February: auto (the order that gives a regular grid) | true | false


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


def source_label(source: DataSource) -> str:
    """How a source is named in messages and manifests: the path, the built-in name, or ``dataframe``."""
    if isinstance(source, pd.DataFrame):
        return FRAME_SOURCE
    return DEFAULT_DATASET if source is None else str(source)


def dataset_name(source: DataSource) -> str:
    """Short dataset name for a path or built-in name (``ETTh1.csv.gz`` -> ``ETTh1``); ``dataframe`` for a DataFrame."""
    if isinstance(source, pd.DataFrame):
        return FRAME_SOURCE
    if source is None:
        return DEFAULT_DATASET
    name = Path(source).name
    for suffix in (".gz", ".bz2", ".xz", ".csv", ".tsv", ".txt", ".xlsx"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _builtin_frame(name: str) -> tuple[pd.DataFrame, DataConfig | None]:
    from pmdarima import datasets

    if name == "airpassengers":
        # Monthly totals of international airline passengers, 1949-1960, in thousands (Box & Jenkins): 144 months.
        y = np.asarray(datasets.load_airpassengers(), dtype=np.float64)
        return pd.DataFrame({"date": pd.date_range("1949-01-01", periods=len(y), freq="MS"), "passengers": y}), None
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


def _separator(cfg: DataConfig) -> str | None:
    """data.sep as one character, or None for auto."""
    sep = {"tab": "\t", "\\t": "\t"}.get(cfg.sep.lower(), cfg.sep)
    if sep == "auto":
        return None
    if len(sep) != 1 or sep in "\"\r\n" or sep.isalnum():
        raise HybridInputError(f"data.sep must be auto, tab or one character such as ';' or '|'; got {cfg.sep!r}.")
    return sep


def dayfirst_setting(cfg: DataConfig) -> bool | None:
    """data.dayfirst as True / False, or None for auto."""
    value = str(cfg.dayfirst).strip().lower()
    if value == "auto":
        return None
    if value in _TRUE + _FALSE:
        return value in _TRUE
    raise HybridInputError(f"data.dayfirst must be auto, true or false; got {cfg.dayfirst!r}.")


def _magic(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(8)


def _is_workbook(path: Path) -> bool:
    """A ZIP holding ``xl/workbook.xml``: an .xlsx (or .xlsm) workbook, whatever its name."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.lower() == "xl/workbook.xml" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _read_excel(path: Path, nrows: int | None) -> pd.DataFrame:
    """The first sheet of an .xlsx workbook (header on the first row)."""
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        logger.warning("%s is an Excel workbook, not a CSV; reading its first sheet", path)
    try:
        with pd.ExcelFile(path, engine="openpyxl") as book:
            if len(book.sheet_names) > 1:
                logger.warning("%s has %d sheets; reading the first, %r", path, len(book.sheet_names),
                               book.sheet_names[0])
            return pd.read_excel(book, sheet_name=0, nrows=nrows)
    except ImportError:
        raise HybridInputError(f"{path} is an Excel workbook; reading it needs openpyxl: pip install openpyxl.") from None
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HybridInputError(
            f"cannot read {path} as an Excel workbook ({reason}); save its first sheet as CSV and pass that."
        ) from None


def _text_sample(path: Path, compression: str) -> str:
    """The first :data:`SNIFF_BYTES` of the file's text (decompressed), for sniffing only."""
    if compression in _OPENERS:
        with _OPENERS[compression](path, "rb") as fh:
            raw = fh.read(SNIFF_BYTES)
    elif compression == "zip":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            raw = archive.read(names[0])[:SNIFF_BYTES] if names else b""
    else:
        with path.open("rb") as fh:
            raw = fh.read(SNIFF_BYTES)
    text = raw.decode("utf-8-sig", errors="replace")
    return text.rsplit("\n", 1)[0] if len(raw) == SNIFF_BYTES else text  # drop a cut last line


def sniff_separator(sample: str) -> str:
    """The separator among :data:`SEPARATORS` that splits every sampled line into the same number (> 0) of
    fields, the most fields winning; a comma when none does (a one-column file)."""
    lines = [line for line in sample.splitlines()[:200] if line.strip()]
    best, most = ",", 0
    for sep in SEPARATORS:
        counts = {line.count(sep) for line in lines}
        if len(counts) == 1 and (n := counts.pop()) > most:
            best, most = sep, n
    return best


def sniff_decimal(sample: str, sep: str) -> str:
    """``,`` when the separator is not a comma and the numbers of the sample use a decimal comma (1,5) and
    never a decimal point (1.5); else ``.``."""
    if sep == ",":
        return "."
    cells = [c.strip().strip('"') for line in sample.splitlines()[1:201] for c in line.split(sep)]
    commas = sum(bool(_COMMA_DECIMAL.match(c)) for c in cells)
    points = sum(bool(_DOT_DECIMAL.match(c)) for c in cells)
    return "," if commas and not points else "."


def _frame_table(frame: pd.DataFrame, cfg: DataConfig) -> tuple[pd.DataFrame, DataConfig]:
    """An in-memory DataFrame as a table with a time column (a DatetimeIndex becomes one); never modifies it."""
    if frame.columns.nlevels > 1:
        raise HybridInputError("the DataFrame has MultiIndex columns; pass one column per channel "
                               "(e.g. frame.columns = ['_'.join(map(str, c)) for c in frame.columns]).")
    table = frame.copy()
    table.columns = [str(c) for c in table.columns]
    if set(LONG_COLUMNS) <= set(table.columns) or not isinstance(table.index, pd.DatetimeIndex):
        return table.reset_index(drop=True), cfg
    name = str(table.index.name) if table.index.name is not None else "ds"
    if cfg.time_column not in ("auto", name):  # the time is a column the user named: the index is not used
        return table.reset_index(drop=True), cfg
    if name in table.columns:
        raise HybridInputError(f"the DataFrame has a DatetimeIndex and a column both named {name!r}; rename one "
                               "(e.g. frame.rename_axis('ds')).")
    table.index = table.index.rename(name)
    return table.reset_index(), replace(cfg, time_column=name)


def read_table(source: str | os.PathLike[str] | pd.DataFrame, cfg: DataConfig,
               nrows: int | None = None) -> pd.DataFrame:
    """The raw table of a file (CSV / TSV / ..., maybe compressed, or an .xlsx workbook) or of a DataFrame.

    The separator and the decimal mark of a text file are sniffed unless data.sep / data.decimal say them; an
    .xlsx workbook (found by its content, whatever its name) is read from its first sheet.

    Args:
        source: a file path or a DataFrame (returned as a copy, its DatetimeIndex, if any, as a column).
        cfg: the ``data`` config section.
        nrows: read only the header and this many rows (0: the header alone).

    Returns:
        The rows as read, unchecked: one column per field.

    Raises:
        HybridInputError: a missing or unreadable file, or an invalid data.sep / data.decimal.
    """
    if isinstance(source, pd.DataFrame):
        table = _frame_table(source, cfg)[0]
        return table if nrows is None else table.head(nrows)
    path = Path(source)
    if not path.exists():
        raise HybridInputError(
            f"data file not found: {path}; pass --data with an existing CSV (.csv or .csv.gz) or .xlsx file "
            f"or a built-in dataset name ({', '.join(BUILTIN)})."
        )
    if path.is_dir():
        raise HybridInputError(f"--data {path} is a folder; pass a CSV file (.csv or .csv.gz).")
    sep, decimal = _separator(cfg), cfg.decimal
    if decimal not in ("auto", ".", ","):
        raise HybridInputError(f"data.decimal must be auto, '.' or ','; got {decimal!r}.")
    try:
        magic = _magic(path)
        if magic.startswith(OLE_MAGIC):
            raise HybridInputError(
                f"{path} is an old Excel .xls workbook (Excel 97-2003), not a CSV; open it in Excel or LibreOffice "
                "and save it as .xlsx or CSV, then pass that file."
            )
        if magic.startswith(ZIP_MAGIC) and _is_workbook(path):
            return _read_excel(path, nrows)
        compression = next((kind for head, kind in COMPRESSION_MAGIC.items() if magic.startswith(head)),
                           "zip" if magic.startswith(ZIP_MAGIC) else "infer")
        sample = _text_sample(path, compression)
        sep = sep or sniff_separator(sample)
        decimal = sniff_decimal(sample, sep) if decimal == "auto" else decimal
        if (sep, decimal) != (",", "."):
            logger.info("%s: read with separator %r and decimal mark %r", path, sep, decimal)
        return pd.read_csv(path, sep=sep, decimal=decimal, compression=compression, nrows=nrows)
    except HybridInputError:
        raise
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError,
            zipfile.BadZipFile, lzma.LZMAError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HybridInputError(
            f"cannot read {path} as CSV ({reason}); pass a UTF-8 text file with a header row (fields separated "
            "by a comma, semicolon, tab or pipe) or an .xlsx workbook."
        ) from None


def _row(row: int, source: str) -> str:
    """Where row ``row`` (0-based, after the header) is, for messages: a file's line, or a DataFrame's row."""
    return f"row {row}" if source == FRAME_SOURCE else f"line {row + 2}"


def _long_to_wide(frame: pd.DataFrame, cfg: DataConfig, source: str = "") -> pd.DataFrame:
    """``unique_id, ds, y`` rows -> one column per unique_id, indexed by ds."""
    dup = frame.duplicated(subset=["unique_id", "ds"], keep=False)
    if dup.any() and cfg.duplicates == "error":
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise HybridInputError(
            f"duplicate timestamp {frame['ds'].iloc[row]} for unique_id {frame['unique_id'].iloc[row]} "
            f"({_row(row, source)}); set data.duplicates: first or mean, or remove the duplicates."
        )
    agg = "first" if cfg.duplicates == "first" else "mean"
    y = pd.to_numeric(frame["y"], errors="coerce")
    bad = y.isna() & frame["y"].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise HybridInputError(
            f"column 'y' is not numeric: {_row(row, source)} holds {frame['y'].iloc[row]!r}; "
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
    for col in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[col]):
            return col
    first = frame.columns[0]
    if frame[first].dtype == object or pd.api.types.is_string_dtype(frame[first]):
        with warnings.catch_warnings():  # pandas warns about day-first strings parsed month-first
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(frame[first], errors="coerce", format="mixed")
        if parsed.notna().mean() > 0.99:
            return first
    raise HybridInputError(
        f"no time column in {source}: expected one named {' / '.join(TIME_COLUMN_NAMES)} or a first "
        "column of dates; add one, or name it with data.time_column."
    )


def _to_datetime(col: pd.Series, dayfirst: bool) -> pd.Series:
    """Timestamps of ``col``, NaT where a cell is not a date: one format inferred for the column, else each
    cell parsed on its own."""
    with warnings.catch_warnings():  # pandas warns when it falls back to parsing cell by cell
        warnings.simplefilter("ignore")
        try:
            return pd.to_datetime(col, dayfirst=dayfirst)
        except (ValueError, TypeError, OverflowError):
            return pd.to_datetime(col, errors="coerce", format="mixed", dayfirst=dayfirst)


def _grid_misfit(times: pd.Series) -> tuple[int, bool, float]:
    """How badly parsed timestamps fit a regular grid: (unparsed cells, out of order, share of the grid at the
    median spacing that holds no timestamp). Smaller is better; a correct parse of a regular file is (0, False, 0)."""
    unparsed = int(times.isna().sum())
    t = pd.DatetimeIndex(times.dropna())
    unique = t.unique().sort_values()
    if len(unique) < 2:
        return unparsed, False, 0.0
    ns = unique.asi8.astype(np.float64)  # in the index's own unit, as floats: no Timedelta overflow past 292 years
    step = float(np.median(np.diff(ns)))
    span = (ns[-1] - ns[0]) / step + 1
    return unparsed, not t.is_monotonic_increasing, float(1 - len(unique) / span)


def _day_orders(col: pd.Series, name: str, source: str, dayfirst: bool | None) -> list[bool]:
    """Which orders to parse ``col`` in: [False] (month first) for dates that are not d/m/y-like (ISO) or are
    month first, [True] for day first, both when every date reads either way (the caller keeps the better)."""
    fields = col.astype(str).str.extract(_SLASH_DATE)
    if fields[0].isna().all():
        return [False]
    first, second = fields[0].astype(float).to_numpy(), fields[1].astype(float).to_numpy()
    day_first, month_first = np.flatnonzero(first > 12), np.flatnonzero(second > 12)
    if len(day_first) and len(month_first):
        a, b = int(day_first[0]), int(month_first[0])
        raise HybridInputError(
            f"time column {name!r} in {source} mixes day-first and month-first dates ({_row(a, source)}: "
            f"{col.iloc[a]!r}, {_row(b, source)}: {col.iloc[b]!r}); write every date in one order."
        )
    if dayfirst is False and len(day_first):
        row = int(day_first[0])
        raise HybridInputError(
            f"time column {name!r} in {source}: {_row(row, source)} holds {col.iloc[row]!r}, a day-first date, but "
            "data.dayfirst is false; set data.dayfirst: auto or true."
        )
    if dayfirst is True and len(month_first):
        row = int(month_first[0])
        raise HybridInputError(
            f"time column {name!r} in {source}: {_row(row, source)} holds {col.iloc[row]!r}, a month-first date, "
            "but data.dayfirst is true; set data.dayfirst: auto or false."
        )
    if dayfirst is not None:
        return [dayfirst]
    if len(day_first) or len(month_first):
        return [bool(len(day_first))]
    return [False, True]


def _parse_times(col: pd.Series, name: str, source: str, dayfirst: bool | None = None) -> pd.DatetimeIndex:
    """The time column as timestamps.

    Dates such as ``01/02/2020`` are read day first or month first as data.dayfirst says; with auto (None),
    a date whose first field is above 12 means day first, one whose second is means month first, and when
    every date reads both ways the order that gives increasing, regularly spaced timestamps is kept.

    Raises:
        HybridInputError: a cell that is not a date, or dates that contradict each other or data.dayfirst.
    """
    if pd.api.types.is_datetime64_any_dtype(col):
        parsed = pd.Series(col)
    else:
        parses = {order: _to_datetime(col, order) for order in _day_orders(col, name, source, dayfirst)}
        order, parsed = min(parses.items(), key=lambda kv: _grid_misfit(kv[1]))  # a tie keeps month first
        if len(parses) > 1:
            how = "day first" if order else "month first"
            if _grid_misfit(parses[True]) == _grid_misfit(parses[False]):
                logger.warning("%s: dates such as %r read either way; read them %s (set data.dayfirst to choose)",
                               source, col.iloc[0], how)
            else:
                logger.info("%s: dates such as %r read %s (a regular series that way)", source, col.iloc[0], how)
    bad = parsed.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise HybridInputError(
            f"time column {name!r} in {source}: {_row(row, source)} holds {col.iloc[row]!r}, which is not "
            "a date; fix or remove that row."
        )
    return pd.DatetimeIndex(parsed)


def _numeric(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Every column as float64, or an error naming the non-numeric columns."""
    out = {}
    bad: list[str] = []
    example, comma = "", False
    for col in frame.columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        broken = values.isna() & frame[col].notna() & (frame[col].astype(str).str.strip() != "")
        if broken.any():
            bad.append(str(col))
            row = int(np.flatnonzero(broken.to_numpy())[0])
            comma = comma or bool(_COMMA_DECIMAL.match(str(frame[col].iloc[row]).strip()))
            if not example:
                example = f" (e.g. {col!r} on {_row(row, source)}: {frame[col].iloc[row]!r})"
        out[col] = values.astype(np.float64)
    if bad and comma and source != FRAME_SOURCE:
        raise HybridInputError(
            f"non-numeric columns in {source}: {', '.join(bad)}{example}: numbers written with a decimal comma; "
            "set data.decimal: ',' (e.g. --set data.decimal=,)."
        )
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
    if len(index) < 2:
        raise HybridInputError(f"{source} has {len(index)} row(s) of data; a series needs many more (context_length + "
                               "the longest horizon, and validation and test parts): pass a longer series.")
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
    share = len(missing) / len(grid)
    if share > MAX_INVENTED_SHARE:  # not a few gaps: the dates are misread (or the series is mostly holes)
        raise HybridInputError(
            f"irregular timestamps in {source}: a regular {freq!r} series from {index[0]} to {index[-1]} would need "
            f"{len(missing)} of its {len(grid)} rows invented ({share:.0%}; at most {MAX_INVENTED_SHARE:.0%} are "
            "filled), so the dates are probably misread: day-first dates read month first (set data.dayfirst: true, "
            "or false) or a wrong date format; fix the time column."
        )
    off_grid = ~index.isin(grid)
    if cfg.gaps == "interpolate" and len(missing) and not off_grid.any():
        logger.warning("%s: %d missing timestamp(s) filled by interpolation (data.gaps=interpolate)",
                       source, len(missing))
        out = values.reindex(grid).interpolate(method="linear", limit_direction="both")
        return out, freq
    if off_grid.any():
        raise HybridInputError(
            f"irregular timestamps in {source}: {int(off_grid.sum())} timestamp(s) fall between the steps of a "
            f"regular {freq!r} series (first {index[np.flatnonzero(off_grid)[0]]}); set data.gaps: allow to treat "
            "rows as consecutive, or fix the file."
        )
    raise HybridInputError(
        f"irregular timestamps in {source}: the spacing is not a regular {freq!r} "
        f"({len(missing)} step(s) missing, first at {missing[0]}); set data.gaps: interpolate to fill "
        "them, data.gaps: allow to treat rows as consecutive, or fix the file."
    )


def load_series(source: DataSource, cfg: DataConfig) -> Series:
    """Read, validate and clean a series.

    Args:
        source: a file path (.csv, .csv.gz, any separator; or an .xlsx workbook; wide or long layout), a
            pandas DataFrame (wide: a DatetimeIndex or a time column, one column per channel; or long:
            ``unique_id, ds, y``), or a built-in dataset name; None means the default built-in dataset.
        cfg: the ``data`` config section.

    Returns:
        A :class:`Series` with float32 values [T, C]; its name is data.name, else the file stem, the built-in
        name, or ``dataframe``.

    Raises:
        HybridInputError: for every input problem, with a one-line fix.
    """
    if isinstance(source, pd.DataFrame):
        frame, cfg = _frame_table(source, cfg)
        label = FRAME_SOURCE
    else:
        label = str(source or DEFAULT_DATASET)
        if label in BUILTIN and not Path(label).exists():
            frame, builtin_cfg = _builtin_frame(label)
            if builtin_cfg is not None:
                # Built-in settings apply where the user left the default.
                defaults = DataConfig()
                changes = {k: getattr(builtin_cfg, k) for k in ("gaps", "freq", "target")
                           if getattr(cfg, k) == getattr(defaults, k)}
                cfg = replace(cfg, **changes)
        else:
            frame = read_table(label, cfg)
    name = cfg.name or dataset_name(source if isinstance(source, pd.DataFrame) else label)
    source = label  # from here on, what messages call it
    if frame.shape[0] == 0:
        raise HybridInputError(f"{source} has no data rows; pass a file with a header and at least one row.")
    if set(LONG_COLUMNS) <= set(frame.columns):
        frame = _long_to_wide(frame, cfg, source)
    time_col = _find_time_column(frame, cfg, source)
    times = _parse_times(frame[time_col], str(time_col), source, dayfirst_setting(cfg))
    data = frame.drop(columns=[time_col])
    data.columns = [str(c) for c in data.columns]
    if data.shape[1] == 0:
        raise HybridInputError(f"{source} has a time column but no value columns; add at least one numeric column.")
    columns = tuple(data.columns)
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
    if cfg.features == "S":  # the target alone is read: the other columns may hold anything
        data = data[[target]]
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


def long_frame(source: DataSource, cfg: DataConfig) -> pd.DataFrame | None:
    """The rows of ``source`` when it is many series, else None (it is read as one wide series).

    Many series: ``data.layout: long``, or ``auto`` and a long file (``unique_id, ds, y``) whose series do not all
    share the same first timestamp, last timestamp and length. A long file whose series do is one
    multichannel series (one channel per ``unique_id``).
    """
    if cfg.layout not in ("auto", "wide", "long"):
        raise HybridInputError(f"data.layout must be auto, wide or long; got {cfg.layout!r}.")
    if source is None or cfg.layout == "wide" or not (isinstance(source, pd.DataFrame) or Path(source).is_file()):
        return None
    try:
        head = read_table(source, cfg, nrows=0)
    except Exception:  # noqa: BLE001 - load_series reads it again and says what is wrong
        return None
    if not set(LONG_COLUMNS) <= set(head.columns):
        if cfg.layout == "long":
            raise HybridInputError(f"data.layout: long needs columns {', '.join(LONG_COLUMNS)}; {source_label(source)} has "
                                   f"{', '.join(map(str, head.columns))}.")
        return None
    frame = read_table(source, cfg)
    if cfg.layout == "long":
        return frame
    by = frame.groupby("unique_id", sort=False)["ds"]
    aligned = all(s.nunique() == 1 for s in (by.size(), by.first(), by.last()))
    return None if aligned else frame


def each_series(frame: pd.DataFrame, source: str, data_cfg: DataConfig) -> Iterator[tuple[str, pd.DataFrame, str]]:
    """Every series of a long frame, validated on its own: ``(unique_id, its rows (column y) on a regular time
    index, its spacing)``, in file order.

    Raises:
        HybridInputError: for every input problem, naming the series (``unique_id``) and the fix.
    """
    missing = [c for c in LONG_COLUMNS if c not in frame.columns]
    if missing:
        raise HybridInputError(f"{source}: a long file needs columns {', '.join(LONG_COLUMNS)}; missing {missing}.")
    y = pd.to_numeric(frame["y"], errors="coerce")
    bad = y.isna() & frame["y"].notna() & (frame["y"].astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise HybridInputError(f"column 'y' is not numeric: CSV line {row + 2} holds {frame['y'].iloc[row]!r}; "
                               "fix or remove those rows.")
    times = _parse_times(frame["ds"], "ds", source, dayfirst_setting(data_cfg))
    long = pd.DataFrame({"unique_id": frame["unique_id"].astype(str).to_numpy(), "y": y.to_numpy()}, index=times)
    for uid, rows in long.groupby("unique_id", sort=False):
        where = f"{source} [unique_id {uid}]"
        data = rows[["y"]]
        if not data.index.is_monotonic_increasing:
            data = data.sort_index(kind="stable")
        dup = data.index.duplicated(keep=False)
        if dup.any():
            if data_cfg.duplicates not in ("first", "mean"):
                raise HybridInputError(
                    f"duplicate timestamp {data.index[np.flatnonzero(dup)[0]]} for unique_id {uid}; set "
                    "data.duplicates: first or mean, or remove the duplicates."
                )
            data = data.groupby(level=0).first() if data_cfg.duplicates == "first" else data.groupby(level=0).mean()
        try:
            data = _handle_missing(data, data_cfg, where)
            data, freq = _regularise(data, data_cfg, where)
        except HybridInputError as exc:
            raise HybridInputError(f"unique_id {uid}: {exc}") from None
        yield str(uid), data, freq


def resolve_split_kind(series_name: str, configured: str) -> str:
    """``auto`` -> ``ett`` for ETTh* / ETTm* datasets, else ``ratio``."""
    if configured != "auto":
        return configured
    return "ett" if series_name.lower().startswith(("etth", "ettm")) else "ratio"
