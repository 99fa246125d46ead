"""CLI details (issue 32): ``hybrid --version`` and a forecast preview that fits a terminal."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest

from hybrid.cli import forecast_preview, main
from tests.conftest import make_frame

MAX_WIDTH = 120  # characters a terminal line of the preview may take


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"hybrid {version('hybrid-forecast')}\n"
    assert captured.err == ""


@pytest.mark.parametrize(("channels", "all_fit"), [(7, True), (21, False)])
def test_forecast_preview_of_many_channels_fits_a_terminal(channels: int, all_fit: bool, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """48 steps of 7 or 21 channels (36 or 106 columns in forecast.csv): point forecasts of the first channels."""
    data = tmp_path / "wide.csv"
    make_frame(n=700, channels=channels).to_csv(data, index=False)
    assert main(["fit", "--data", str(data), "--context-length", "96", "--horizon", "48", "--members",
                 "seasonal_naive,linear", "--set", "runtime.progress=false", "--run-dir", "run"]) == 0
    capsys.readouterr()
    assert main(["forecast", "--run-dir", "run", "--horizon", "48"]) == 0
    lines = capsys.readouterr().out.splitlines()
    frame = pd.read_csv("run/forecast.csv")
    assert frame.shape == (48, 1 + channels * 5)  # the file keeps every channel and its 80 / 95 % bands

    header = next(line for line in lines if line.split()[:1] == ["timestamp"])
    table = lines[lines.index(header):lines.index(header) + 2 + 5 + 1 + 5]  # header, rule, 5 rows, ..., 5 rows
    assert all(len(line) <= MAX_WIDTH for line in table), max(map(len, table))
    shown = header.split()[1:]
    assert shown == [f"c{j}" for j in range(len(shown))]  # the first channels' point forecasts, no band columns
    assert len(shown) == channels if all_fit else 3 <= len(shown) < channels
    assert table[2].startswith(frame["timestamp"].iloc[0]) and table[-1].startswith(frame["timestamp"].iloc[-1])
    assert table[7].strip() == "..."
    assert f"{frame['c0'].iloc[0]:,.2f}" in table[2]  # values as the report writes them, not 1.234e+01
    which = "every channel" if all_fit else f"{len(shown)} of {channels} channels"
    assert table[-1] == lines[lines.index(header) + 12]  # the table is followed by what it leaves out, then the file
    assert lines[lines.index(header) + 13:lines.index(header) + 15] == [
        f"shown: steps 1-5 and 44-48 of 48; point forecasts of {which}; the file has all, with prediction bands",
        f"wrote {Path('run/forecast.csv').resolve()}"]
    assert f" and {channels} plots (" in lines[-1] and "plot-c1.png" not in lines[-1]  # not every PNG's path
    assert all(len(line) <= MAX_WIDTH for line in lines if not line.startswith("wrote "))


def test_forecast_preview_shows_every_column_when_they_fit() -> None:
    frame = pd.DataFrame({"timestamp": pd.date_range("2021-01-01", periods=4, freq="h").astype(str),
                          "demand": [21930.4, 21280.0, 21090.9, 26270.2],
                          "demand-lo-80": [21330.0, 20600.0, 20420.0, 25500.0],
                          "demand-hi-80": [22520.0, 21950.0, 21770.0, 27000.0]})
    table, note = forecast_preview(frame, ["demand"])
    assert note == ""
    assert table.splitlines()[0].split() == ["timestamp", "demand", "demand-lo-80", "demand-hi-80"]
    assert "26,270" in table and "e+04" not in table and "..." not in table
    assert len(table.splitlines()) == 2 + 4
