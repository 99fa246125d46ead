"""Data read right or refused: separators and decimal commas, day-first dates, Excel files, and the cases
that must keep working (issue 32). Every refusal is one line with exit code 2, and following its advice
leads to a sound fit, never to one on invented rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybrid.cli import main
from kernel.data import MAX_INVENTED_SHARE, DataConfig, load_series
from kernel.errors import HybridInputError

N = 2000
STAMPS = pd.date_range("2020-01-01", periods=N, freq="h")  # 1 January to 24 March: days 13 to 31 come first


def values(n: int = N) -> np.ndarray:
    """A daily cycle on a trend, with two decimals: [n]."""
    t = np.arange(n)
    return np.round(10 + 3 * np.sin(2 * np.pi * t / 24) + 0.01 * t, 2)


def fit(capsys: pytest.CaptureFixture[str], data: Path, *sets: str, run_dir: str = "run",
        flags: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """``hybrid fit`` with fast settings, ``--set`` each of ``sets``; the exit code and the ``error:`` lines."""
    args = ["fit", "--data", str(data), "--context-length", "96", "--horizon", "24", "--members",
            "seasonal_naive,linear", "--set", "runtime.progress=false", "--run-dir", run_dir, *flags]
    rc = main([*args, *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, [line for line in err if line.startswith("error:")]


def manifest(run_dir: str = "run") -> dict:
    return json.loads(Path(run_dir, "manifest.json").read_text())


# ----------------------------------------------------------------------------- 1. separators, decimal comma


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_separator_and_decimal_comma_are_sniffed(tmp_path, sep):
    y = values()
    path = tmp_path / "semi.csv"
    rows = [f"date{sep}value{sep}double"]
    comma = sep != ","
    for stamp, v in zip(STAMPS, y, strict=True):
        cells = [f"{v:.2f}", f"{2 * v:.2f}"]
        rows.append(sep.join([stamp.strftime("%Y-%m-%d %H:%M"), *[c.replace(".", ",") if comma else c for c in cells]]))
    path.write_text("\n".join(rows) + "\n")

    series = load_series(str(path), DataConfig())  # defaults: data.sep and data.decimal auto

    assert series.columns == ("value", "double")
    assert (series.timestamps == STAMPS).all() and series.freq == "h"
    np.testing.assert_allclose(series.values[:, 0], y, rtol=1e-6)
    np.testing.assert_allclose(series.values[:, 1], 2 * y, rtol=1e-6)


def test_explicit_separator_and_a_wrong_decimal_mark_say_the_fix(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("date;value\n" + "".join(f"{t:%Y-%m-%d %H:%M};{v:.2f}\n".replace(".", ",")
                                             for t, v in zip(STAMPS, values(), strict=True)))
    with pytest.raises(HybridInputError, match=r"decimal comma; set data\.decimal: ','"):
        load_series(str(path), DataConfig(decimal="."))
    series = load_series(str(path), DataConfig(sep=";", decimal=","))
    np.testing.assert_allclose(series.values[:, 0], values(), rtol=1e-6)


# ----------------------------------------------------------------------------- 2. day-first dates, invented rows


def write_dates(tmp_path: Path, stamps: pd.DatetimeIndex, fmt: str, name: str) -> Path:
    path = tmp_path / name
    pd.DataFrame({"date": stamps.strftime(fmt), "value": values(len(stamps))}).to_csv(path, index=False)
    return path


def test_day_first_dates_load_with_the_right_timestamps(tmp_path):
    path = write_dates(tmp_path, STAMPS, "%d/%m/%Y %H:%M", "dayfirst.csv")
    series = load_series(str(path), DataConfig())
    assert series.n_rows == N and series.freq == "h"
    assert (series.timestamps == STAMPS).all()
    np.testing.assert_allclose(series.values[:, 0], values(), rtol=1e-6)  # rows in file order, none invented


def test_dates_that_read_both_ways_keep_the_regular_order(tmp_path):
    """1 to 12 January, hourly: every date reads month first too (1 January, 1 February, ... 1 December), which
    is no regular series; day first is."""
    stamps = pd.date_range("2020-01-01", periods=12 * 24, freq="h")
    path = write_dates(tmp_path, stamps, "%d.%m.%Y %H:%M", "ambiguous.csv")
    series = load_series(str(path), DataConfig())
    assert (series.timestamps == stamps).all()
    month_first = write_dates(tmp_path, stamps, "%m/%d/%Y %H:%M", "month-first.csv")
    assert (load_series(str(month_first), DataConfig()).timestamps == stamps).all()


def test_day_first_through_the_cli_and_its_advice(capsys, tmp_path):
    path = write_dates(tmp_path, STAMPS, "%d/%m/%Y %H:%M", "dayfirst.csv")
    rc, errors = fit(capsys, path)
    assert rc == 0, errors
    m = manifest()
    assert m["n_rows"] == N and m["last_timestamp"].startswith("2020-03-24")

    # told the wrong order: refused, with or without data.gaps: interpolate, and never advised to interpolate
    for extra in ((), ("data.gaps=interpolate",)):
        rc, errors = fit(capsys, path, "data.dayfirst=false", *extra, run_dir="refused")
        assert rc == 2 and len(errors) == 1, errors
        assert "data.dayfirst" in errors[0] and "gaps: interpolate" not in errors[0], errors[0]
        assert not Path("refused").exists()
    # the advice (data.dayfirst: true) fits the 2000 real rows
    assert "set data.dayfirst: auto or true" in errors[0]
    rc, errors = fit(capsys, path, "data.dayfirst=true", run_dir="advised")
    assert rc == 0, errors
    assert manifest("advised")["n_rows"] == N and manifest("advised")["fingerprint"] == m["fingerprint"]


def test_interpolate_refuses_to_invent_more_than_a_small_share(capsys, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": STAMPS, "value": values()})
    holes = int(0.3 * N)  # far above MAX_INVENTED_SHARE
    sparse = frame.drop(index=np.sort(rng.choice(np.arange(1, N - 1), holes, replace=False)))
    sparse.to_csv(tmp_path / "sparse.csv", index=False)
    for gaps in ("interpolate", "error"):
        rc, errors = fit(capsys, tmp_path / "sparse.csv", f"data.gaps={gaps}")
        assert rc == 2 and len(errors) == 1, errors
        assert "data.dayfirst" in errors[0] and "gaps: interpolate" not in errors[0], errors[0]
        assert not Path("run").exists()

    # just under the share: filled; just over: refused (the grid has N rows)
    under, over = int(MAX_INVENTED_SHARE * N) - 10, int(MAX_INVENTED_SHARE * N) + 10
    for holes, ok in ((under, True), (over, False)):
        cut = frame.drop(index=np.arange(100, 100 + holes))
        cfg = DataConfig(gaps="interpolate")
        if ok:
            assert load_series(cut, cfg).n_rows == N
        else:
            with pytest.raises(HybridInputError, match="rows invented"):
                load_series(cut, cfg)

    # a few gaps still say how to fill them
    few = frame.drop(index=[100, 101, 102])
    with pytest.raises(HybridInputError, match="set data.gaps: interpolate to fill them"):
        load_series(few, DataConfig())


# ----------------------------------------------------------------------------- 3. Excel


@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    path = tmp_path / "book.xlsx"
    pd.DataFrame({"date": STAMPS, "value": values()}).to_excel(path, index=False, sheet_name="data")
    return path


def test_xlsx_is_read_from_its_first_sheet(workbook):
    series = load_series(str(workbook), DataConfig())
    assert series.name == "book" and (series.timestamps == STAMPS).all()
    np.testing.assert_allclose(series.values[:, 0], values(), rtol=1e-6)


def test_xlsx_renamed_csv_is_read_as_a_workbook(capsys, tmp_path, workbook):
    renamed = tmp_path / "book.csv"
    shutil.copy(workbook, renamed)
    rc, errors = fit(capsys, renamed)
    assert rc == 0, errors
    assert manifest()["n_rows"] == N


def test_old_xls_says_what_it_is_and_how_to_convert(capsys, tmp_path):
    path = tmp_path / "old.csv"  # an OLE compound file (Excel 97-2003), whatever its name
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1024))
    rc, errors = fit(capsys, path)
    assert rc == 2 and len(errors) == 1, errors
    assert "Excel .xls workbook" in errors[0] and "save it as .xlsx or CSV" in errors[0], errors[0]


# ----------------------------------------------------------------------------- 4. what keeps working


def test_string_column_is_named_and_the_advice_fits(capsys, tmp_path):
    frame = pd.DataFrame({"date": STAMPS, "label": "shop", "value": values()})
    frame.to_csv(tmp_path / "labels.csv", index=False)
    rc, errors = fit(capsys, tmp_path / "labels.csv")
    assert rc == 2 and len(errors) == 1, errors
    assert "non-numeric columns" in errors[0] and "label" in errors[0] and "--features S" in errors[0]
    rc, errors = fit(capsys, tmp_path / "labels.csv", flags=("--features", "S", "--target", "value"))
    assert rc == 0, errors
    assert manifest()["columns"] == ["value"]


def test_bom_and_crlf_fit(capsys, tmp_path):
    path = tmp_path / "windows.csv"
    pd.DataFrame({"date": STAMPS, "value": values()}).to_csv(path, index=False, encoding="utf-8-sig",
                                                             lineterminator="\r\n")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfdate") and b"\r\n" in path.read_bytes()
    rc, errors = fit(capsys, path)
    assert rc == 0, errors
    assert manifest()["columns"] == ["value"] and manifest()["n_rows"] == N


@pytest.mark.parametrize(("rows", "says"), [(1, "pass a longer series"), (2, "series too short")])
def test_a_file_of_one_or_two_rows_is_refused_clearly(capsys, tmp_path, rows, says):
    pd.DataFrame({"date": STAMPS[:rows], "value": values(rows)}).to_csv(tmp_path / "tiny.csv", index=False)
    rc, errors = fit(capsys, tmp_path / "tiny.csv")
    assert rc == 2 and len(errors) == 1, errors
    assert says in errors[0], errors[0]


def test_missing_file_is_refused_clearly(capsys, tmp_path):
    rc, errors = fit(capsys, tmp_path / "absent.xlsx")
    assert rc == 2 and len(errors) == 1, errors
    assert "data file not found" in errors[0] and "absent.xlsx" in errors[0]


def test_a_yearly_series_longer_than_292_years_loads(tmp_path):
    """pandas' Timedelta ends at about 292 years: the spacing check must not subtract timestamps as one (it failed
    with pandas 2.3 on sunspots' 309 years; pandas 3 keeps such dates in coarser units)."""
    path = tmp_path / "years.csv"
    pd.DataFrame({"date": pd.date_range("1700-01-01", periods=320, freq="YS"), "y": np.arange(320.0)}).to_csv(
        path, index=False)
    series = load_series(str(path), DataConfig())
    assert series.n_rows == 320 and series.freq.startswith("YS")
