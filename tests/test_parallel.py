"""parallel_map: order, worker capping, inline path, loky vs dask giving the same ARIMA forecasts."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from baselines.arima import Arima
from kernel.contract import TaskSpec
from kernel.parallel import n_workers, parallel_map
from kernel.protocol import windows
from tests._classical_data import PERIOD, ar2_seasonal

HAS_DASK = importlib.util.find_spec("dask") is not None and importlib.util.find_spec("distributed") is not None


def _square(x: int) -> int:
    return x * x


def test_workers_capped_at_tasks() -> None:
    assert n_workers(8, 3) == 3
    assert n_workers(1, 10) == 1
    assert n_workers(-1, 1) == 1
    with pytest.raises(ValueError, match="n_jobs"):
        n_workers(0, 4)


@pytest.mark.parametrize("n_jobs,backend", [(1, "loky"), (2, "threading"), (2, "loky")])
def test_parallel_map_keeps_order(n_jobs: int, backend: str) -> None:
    assert parallel_map(_square, range(7), n_jobs=n_jobs, backend=backend, desc="squares") == [
        x * x for x in range(7)
    ]
    assert parallel_map(_square, [], n_jobs=2) == []


def _arima_forecast(backend: str) -> np.ndarray:
    y = np.stack([ar2_seasonal(700, seed=s) for s in (0, 1)], axis=1)
    spec = TaskSpec(context_length=48, horizon=12, periods=(PERIOD,), n_jobs=2, backend=backend)
    member = Arima(max_train_points=300, max_p=1, max_q=1, maxiter=20, seasonal_differencing="always")
    member.fit(y[:500], None, spec)
    context, _ = windows(y[500 - 48 :], 48, 12)
    return member.predict(context)


@pytest.mark.skipif(not HAS_DASK, reason="dask.distributed is not installed; the dev extra has it: pip install -e '.[dev]'")
def test_dask_backend_matches_loky() -> None:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster):
        on_dask = _arima_forecast("dask")
    np.testing.assert_array_equal(on_dask, _arima_forecast("loky"))
