"""The gallery's cases: every real series that ships offline with the project's dependencies, plus the shared files.

Each case names its data (a pmdarima or statsmodels data set written to a CSV,
or a benchmark file), its context length L and horizons H (for short series
the seasonal period or the M4 horizon, whichever the 70/10/20 split allows),
and anything the data needs to be read (missing values). The members are the
classical ones; the core joins where it is cheap (see ``CORE_CASES`` in
``benchmarks/gallery.py``). The cases are fixed before any combination rule is
chosen and are never tuned one by one.

``austres`` (89 quarterly points) is left out on purpose: it is the short
quarterly series of issue 31's table, kept back as a check of rules chosen
without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OUT_CSV = Path(__file__).resolve().parent / "out" / "csv"  # the dependencies' series written as CSV files (ignored)


@dataclass(frozen=True)
class Case:
    """One gallery case.

    Attributes:
        name: short name (also the CSV's stem).
        frame: builds the wide frame (a ``date`` column and value columns), or None for a shared file.
        file: the shared benchmark file (under ``../shared/data``), or "".
        context_length: L.
        horizons: the horizons fitted.
        sets: extra ``--set`` overrides the data needs (e.g. missing values).
        config: a shipped config by name, or None.
        group: "short" (a short series that ships with a dependency) or "benchmark".
    """

    name: str
    frame: Callable[[], pd.DataFrame] | None
    context_length: int
    horizons: tuple[int, ...]
    file: str = ""
    sets: tuple[str, ...] = ()
    config: str | None = None
    group: str = "short"
    members: tuple[str, ...] = field(default=("seasonal_naive", "linear", "nlinear", "dlinear", "arima", "ets"))

    def source(self, folder: Path) -> str:
        """The path ``hybrid fit --data`` reads (a CSV written into ``folder`` for a dependency's series)."""
        if self.file:
            return str(SHARED / self.file)
        path = folder / f"{self.name}.csv"
        if not path.exists():
            self.frame().to_csv(path, index=False)
        return str(path)


def _pm(name: str, start: str, freq: str) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        from pmdarima import datasets

        y = np.asarray(getattr(datasets, f"load_{name}")(), dtype=np.float64)
        y = y[: len(y) - int(np.argmax(np.isfinite(y[::-1])))]  # trailing missing values (ausbeer's last quarter)
        return pd.DataFrame({"date": pd.date_range(start, periods=len(y), freq=freq), name: y})
    return build


def _msft() -> pd.DataFrame:
    from pmdarima import datasets

    frame = datasets.load_msft()
    return pd.DataFrame({"date": pd.to_datetime(frame["Date"]), "close": frame["Close"].to_numpy(float)})


def _sm(name: str, column: str, start: str, freq: str) -> Callable[[], pd.DataFrame]:
    def build() -> pd.DataFrame:
        import statsmodels.datasets as sm

        y = sm.__dict__[name].load_pandas().data[column].to_numpy(float)
        return pd.DataFrame({"date": pd.date_range(start, periods=len(y), freq=freq), column: y})
    return build


def _elnino() -> pd.DataFrame:
    import statsmodels.datasets as sm

    d = sm.elnino.load_pandas().data
    y = d.drop(columns=["YEAR"]).to_numpy(float).ravel()  # 61 years x 12 months, row by row
    return pd.DataFrame({"date": pd.date_range("1950-01-01", periods=len(y), freq="MS"), "sst": y})


def _co2() -> pd.DataFrame:
    import statsmodels.datasets as sm

    d = sm.co2.load_pandas().data
    return pd.DataFrame({"date": pd.DatetimeIndex(d.index), "co2": d["co2"].to_numpy(float)})


def _macro() -> pd.DataFrame:
    import statsmodels.datasets as sm

    d = sm.macrodata.load_pandas().data
    cols = ["realgdp", "realcons", "realinv", "cpi", "unemp", "tbilrate"]
    out = pd.DataFrame({c: d[c].to_numpy(float) for c in cols})
    out.insert(0, "date", pd.date_range("1959-01-01", periods=len(d), freq="QS"))
    return out


def _interest() -> pd.DataFrame:
    import statsmodels.datasets as sm

    d = sm.interest_inflation.load_pandas().data
    out = pd.DataFrame({"Dp": d["Dp"].to_numpy(float), "R": d["R"].to_numpy(float)})
    out.insert(0, "date", pd.date_range("1972-01-01", periods=len(d), freq="QS"))
    return out


CASES: tuple[Case, ...] = (
    Case("airpassengers", _pm("airpassengers", "1949-01-01", "MS"), 24, (12,)),
    Case("ausbeer", _pm("ausbeer", "1956-01-01", "QS"), 16, (8,)),
    Case("wineind", _pm("wineind", "1980-01-01", "MS"), 24, (12,)),
    Case("woolyrnq", _pm("woolyrnq", "1965-01-01", "QS"), 16, (8,)),
    Case("lynx", _pm("lynx", "1821-01-01", "YS"), 20, (6,)),
    Case("heartrate", _pm("heartrate", "2000-01-01", "s"), 30, (10,)),
    Case("sunspots-monthly", _pm("sunspots", "1749-01-01", "MS"), 144, (18,)),
    Case("taylor", _pm("taylor", "2000-06-05", "30min"), 512, (96,)),
    Case("msft", _msft, 96, (14,), sets=("data.gaps=allow", "data.freq=B")),
    Case("elnino", _elnino, 48, (18,)),
    Case("co2", _co2, 104, (13,), sets=("data.missing=interpolate",)),
    Case("macrodata", _macro, 16, (8,)),
    Case("nile", _sm("nile", "volume", "1871-01-01", "YS"), 12, (6,)),
    Case("sunspots-yearly", _sm("sunspots", "SUNACTIVITY", "1700-01-01", "YS"), 33, (6,)),
    Case("interest-inflation", _interest, 16, (8,)),
    Case("etth1", None, 512, (96, 336), file="ETTh1.csv", group="benchmark"),
    Case("ettm1", None, 512, (96, 336), file="ETTm1.csv.gz", group="benchmark"),
    Case("exchange", None, 512, (96, 336), file="exchange_rate.csv", group="benchmark"),
    Case("weather", None, 512, (96, 336), file="weather.csv.gz", config="weather-benchmark", group="benchmark",
         members=("seasonal_naive", "linear", "nlinear", "dlinear", "ets")),  # ARIMA: 21 channels cost too much
)


def case(name: str) -> Case:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(f"no gallery case {name!r}; cases: {', '.join(c.name for c in CASES)}")
