"""The Python API: ``HybridForecaster``, the same work as the CLI, on files or pandas DataFrames."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from hybrid import artifacts
from hybrid.artifacts import is_panel
from hybrid.config import Config, load_config
from hybrid.deployment import COMBINED
from hybrid.panel import panel_forecast
from hybrid.pipeline import ForecastResult, fit_run, forecast_run
from kernel.data import DataSource, dataset_name

logger = logging.getLogger(__name__)

ID_COLUMNS = ["unique_id", "ds"]


class HybridForecaster:
    """Fit every member, the core and the router; forecast; evaluate.

    ``fit`` takes a file path, a built-in dataset name or a pandas DataFrame: wide (a DatetimeIndex or a
    time column, one column per channel) or long (``unique_id, ds, y``, as statsforecast and
    neuralforecast take it). ``forecast`` returns a long DataFrame in the same convention.

    Without a ``run_dir``, ``fit`` writes its run into a private temporary directory owned by this object
    (``run_dir_``), never into the working directory; it is removed when the object is garbage-collected.
    Pass ``run_dir`` to keep the run (and reopen it later with :meth:`load`).

    Example:
        >>> model = HybridForecaster(horizons=(96,), members=("seasonal_naive", "linear"))
        >>> model.fit(frame)                              # doctest: +SKIP
        >>> model.forecast(96).head()                     # doctest: +SKIP

    Args:
        config: a full :class:`Config`; when None it is built from
            ``configs/default.yaml`` and the dataset's file at ``fit`` time.
        config_file: an extra YAML layer.
        sets: ``["section.key=value", ...]`` overrides.
        **task: shortcuts for the ``task`` section (horizons, context_length,
            members, seed).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        config_file: str | Path | None = None,
        sets: list[str] | None = None,
        **task: Any,
    ) -> None:
        self.config = config
        self.config_file = config_file
        self.sets = list(sets or [])
        self.task = task
        self.run_dir_: Path | None = None
        self.manifest_: dict[str, Any] | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None  # the private run folder, when fit made one

    def resolve_config(self, data: DataSource) -> Config:
        """The config a fit on ``data`` uses (the dataset's own config file applies to a file of that name)."""
        if self.config is not None:
            return self.config
        task = dict(self.task)
        if "members" in task:  # members given: the whole list (period experts named as name@p)
            task.setdefault("period_experts", ())
        overrides = {"task": task} if task else None
        return load_config(dataset_name(data), self.config_file, overrides, self.sets)

    def fit(self, data: DataSource = None, run_dir: str | Path | None = None, overwrite: bool = False) -> Self:
        """Fit on a file, a built-in dataset name or a DataFrame, and write the run.

        Args:
            data: a file path (CSV of any common separator, .csv.gz, .xlsx), a built-in dataset name, or a
                DataFrame: wide (a DatetimeIndex or a time column; one column per channel) or long
                (``unique_id, ds, y``). A DataFrame's dataset is named ``dataframe`` unless data.name is set.
            run_dir: where to write the run. None: a private temporary directory owned by this object and
                removed with it (nothing is written into the working directory).
            overwrite: replace a run already at ``run_dir`` (refused otherwise).

        Returns:
            self, fitted: ``run_dir_`` and ``manifest_`` are set.
        """
        cfg = self.resolve_config(data)
        if run_dir is None:
            scratch = tempfile.TemporaryDirectory(prefix="hybrid-run-")
            run_dir, overwrite = Path(scratch.name) / "run", False
            logger.info("no run_dir: the run goes to %s, removed with this object", run_dir)
        else:
            scratch = None
        result = fit_run(cfg, data, run_dir, overwrite=overwrite, latest=scratch is None)
        if self._scratch is not None:  # a refit replaces the previous private run
            self._scratch.cleanup()
        self._scratch = scratch
        self.run_dir_, self.manifest_ = result.run_dir, result.manifest
        return self

    @classmethod
    def load(cls, run_dir: str | Path | None = None) -> Self:
        """Open a fitted run (default ``runs/latest``)."""
        model = cls()
        model.run_dir_ = artifacts.resolve_run_dir(run_dir)
        model.manifest_ = artifacts.read_manifest(model.run_dir_)
        artifacts.check_state_format(model.run_dir_, model.manifest_)
        return model

    def _require_run(self) -> tuple[Path, dict[str, Any]]:
        if self.run_dir_ is None or self.manifest_ is None:
            raise RuntimeError("call fit() or HybridForecaster.load() first")
        return self.run_dir_, self.manifest_

    def forecast_result(self, horizon: int | None = None, data: DataSource = None) -> ForecastResult:
        """The full forecast of one series' run: bands, member forecasts, weights and the vote report's details.

        Args:
            horizon: steps to forecast (default: the smallest fitted horizon serving it, see the README).
            data: newer data with the run's columns (a file or a DataFrame); default the data fitted on.

        Returns:
            A :class:`ForecastResult`; its ``frame`` is wide (a ``timestamp`` column, one column per channel).

        Raises:
            HybridInputError: for a many-series run (use :meth:`forecast`), or data that does not fit the run.
        """
        run_dir, _ = self._require_run()
        return forecast_run(run_dir, horizon, data)

    def forecast(self, horizon: int | None = None, data: DataSource = None) -> pd.DataFrame:
        """Forecast the ``horizon`` steps after the end of the data, as a long DataFrame.

        Args:
            horizon: steps to forecast (default: the smallest fitted horizon).
            data: newer data with the run's columns (a many-series run: a long file of its series); default
                the data fitted on.

        Returns:
            One row per (channel or series, step), columns ``unique_id, ds, hybrid``, the bands
            ``hybrid-lo-<level>`` / ``hybrid-hi-<level>`` for each level (ascending), then one column per
            member with its point forecast, in original units. ``unique_id`` is the channel name of a wide
            series (the series id of a long one); for a many-series run without ``data``, the forecasts that
            the fit made from each series' end.
        """
        run_dir, manifest = self._require_run()
        if is_panel(manifest):
            frame, _ = panel_forecast(run_dir, manifest, horizon, data)
            frame = frame.drop(columns=[c for c in frame.columns if c.startswith("weight:")])
            frame["ds"] = pd.to_datetime(frame["ds"])
            frame["unique_id"] = frame["unique_id"].astype(str)
            members = [c for c in frame.columns if c not in ID_COLUMNS and not c.startswith(COMBINED)]
            return frame[[*ID_COLUMNS, *_combined_columns(frame.columns), *members]]
        return long_forecast(forecast_run(run_dir, horizon, data), manifest["output_columns"])

    def evaluate(self) -> dict[str, Any]:
        """Test (and validation) metrics from the run.

        Returns:
            ``dataset``, ``context_length`` and ``horizons``: horizon (int) -> member or combiner -> metrics.
        """
        _, manifest = self._require_run()
        return {
            "dataset": manifest["dataset"],
            "context_length": manifest["context_length"],
            "horizons": {int(H): entry["metrics"] for H, entry in manifest["results"].items()},
        }


def _combined_columns(columns: Any) -> list[str]:
    """``hybrid`` then its bands, lo before hi, by ascending level."""
    bands = [c for c in columns if c.startswith(f"{COMBINED}-lo-") or c.startswith(f"{COMBINED}-hi-")]
    return [COMBINED, *sorted(bands, key=lambda c: (float(c.rsplit("-", 1)[1]), "-hi-" in c))]


def long_forecast(result: ForecastResult, channels: list[str]) -> pd.DataFrame:
    """A one-series forecast in the long convention.

    Args:
        result: the forecast of a run's output channels ``channels`` (C of them) over H steps.
        channels: the output channels' names, in the order of ``result``'s arrays.

    Returns:
        C * H rows (channel-major): ``unique_id`` (the channel), ``ds``, ``hybrid``, its bands per level
        (ascending), one column per member; original units.
    """
    H, C = result.horizon, len(channels)
    frame = result.frame
    cols: dict[str, Any] = {
        "unique_id": pd.Series(np.repeat(channels, H), dtype=str),
        "ds": np.tile(pd.DatetimeIndex(frame["timestamp"]), C),
        COMBINED: frame[channels].to_numpy().T.ravel(),  # [C, H] -> C * H
    }
    for level in sorted(result.bands):
        lo, hi = result.bands[level]  # [C, H] each
        cols[f"{COMBINED}-lo-{level:g}"] = lo.ravel()
        cols[f"{COMBINED}-hi-{level:g}"] = hi.ravel()
    for name, values in result.members.items():  # [C, H]
        cols[name] = values.ravel()
    return pd.DataFrame(cols)
