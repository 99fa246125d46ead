"""Shared fixtures: small synthetic series written as CSV files."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_frame(n: int = 900, channels: int = 2, freq: str = "h", seed: int = 0) -> pd.DataFrame:
    """A daily-seasonal, trending series with noise: [n rows] x (date + channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    cols = {"date": pd.date_range("2021-01-01", periods=n, freq=freq)}
    for j in range(channels):
        cols[f"c{j}"] = (
            10 + 3 * np.sin(2 * np.pi * t / 24 + j) + 0.01 * t + rng.normal(0, 0.3, n)
        ).round(4)
    return pd.DataFrame(cols)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (for a scheduler, a process group, a dead address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    path = tmp_path / "series.csv"
    make_frame().to_csv(path, index=False)
    return path


@pytest.fixture
def fit_args(tmp_path: Path) -> list[str]:
    """Fast settings for end-to-end CLI runs on the synthetic series."""
    return ["--context-length", "96", "--horizon", "24", "--set", "runtime.progress=false",
            "--members", "seasonal_naive,linear"]


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder, so `runs/` never lands in the repo."""
    monkeypatch.chdir(tmp_path)


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"benchmark data {path} is absent (it lives in ../shared/data beside the checkout)")
    return path
