"""The Python API: ``HybridForecaster``, the same work as the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from hybrid import artifacts
from hybrid.config import Config, load_config
from hybrid.pipeline import ForecastResult, fit_run, forecast_run
from kernel.data import dataset_name


class HybridForecaster:
    """Fit every member, the core and the router; forecast; evaluate.

    Example:
        >>> model = HybridForecaster(horizons=(96,), members=("seasonal_naive", "linear"))
        >>> model.fit("ETTh1.csv")                       # doctest: +SKIP
        >>> model.forecast(96).frame.head()              # doctest: +SKIP

    Args:
        config: a full :class:`Config`; when None it is built from
            ``hybrid/configs/default.yaml`` and the dataset's file at ``fit`` time.
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

    def resolve_config(self, data: str | None) -> Config:
        if self.config is not None:
            return self.config
        task = dict(self.task)
        if "members" in task:  # members given: the whole list (period experts named as name@p)
            task.setdefault("period_experts", ())
        overrides = {"task": task} if task else None
        return load_config(dataset_name(data), self.config_file, overrides, self.sets)

    def fit(self, data: str | None = None, run_dir: str | Path | None = None, overwrite: bool = False) -> Self:
        """Fit on a CSV path or built-in dataset name; writes a run directory.

        A ``run_dir`` that already holds a run is refused unless ``overwrite``.
        """
        result = fit_run(self.resolve_config(data), data, run_dir, overwrite=overwrite)
        self.run_dir_, self.manifest_ = result.run_dir, result.manifest
        return self

    @classmethod
    def load(cls, run_dir: str | Path | None = None) -> Self:
        """Open a fitted run (default ``runs/latest``)."""
        model = cls()
        model.run_dir_ = artifacts.resolve_run_dir(run_dir)
        model.manifest_ = artifacts.read_manifest(model.run_dir_)
        return model

    def _require_run(self) -> Path:
        if self.run_dir_ is None:
            raise RuntimeError("call fit() or HybridForecaster.load() first")
        return self.run_dir_

    def forecast(self, horizon: int | None = None, data: str | None = None) -> ForecastResult:
        """Forecast the ``horizon`` steps after the end of the data."""
        return forecast_run(self._require_run(), horizon, data)

    def evaluate(self) -> dict[str, Any]:
        """Test (and validation) metrics per horizon and member, from the run."""
        self._require_run()
        assert self.manifest_ is not None
        return {
            "dataset": self.manifest_["dataset"],
            "context_length": self.manifest_["context_length"],
            "horizons": {H: entry["metrics"] for H, entry in self.manifest_["results"].items()},
        }
