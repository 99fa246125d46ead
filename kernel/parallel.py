"""Run independent per-series work (one task per channel) through joblib.

One function, :func:`parallel_map`, used by the classical members to fit their
channels side by side. It follows statsforecast's rules: workers are capped at
the number of tasks, ``n_jobs=1`` runs inline (no joblib, no pickling), and
every worker pins its BLAS/OpenMP pools to one thread so that ``n_jobs``
processes do not oversubscribe the cores.

Any joblib backend works (``"loky"``, ``"threading"``, ``"multiprocessing"``,
``"dask"``, ``"ray"`` when installed). For ``"dask"``: with a scheduler
address (``runtime.dask_address``, e.g. ``tcp://10.0.0.5:8786``) the call
connects to that cluster (an unreachable address is an error that names it);
without one it uses the caller's ``dask.distributed.Client`` if there is one,
else starts a local in-process client for the call, and a log line says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from threadpoolctl import threadpool_limits

from kernel.errors import HybridInputError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def n_workers(n_jobs: int, n_tasks: int) -> int:
    """Workers to start: ``n_jobs`` (-1: every core, -2: all but one, ...) capped at ``n_tasks``."""
    if n_jobs == 0:
        raise ValueError("`n_jobs` must be a positive number of workers or negative (-1: every core); got 0.")
    cores = os.cpu_count() or 1
    wanted = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, min(wanted, n_tasks))


def _single_threaded(fn: Callable[[T], R], item: T) -> R:
    """Run ``fn(item)`` with BLAS / OpenMP limited to one thread (inside a worker)."""
    with threadpool_limits(limits=1):
        return fn(item)


DASK_CONNECT_TIMEOUT = "10s"  # how long to wait for runtime.dask_address before giving up


@contextlib.contextmanager
def _dask_client(address: str = "") -> Iterator[None]:
    """Connect to ``address``; without one use the caller's client or a local in-process one."""
    try:
        from dask.distributed import Client, get_client
    except ImportError:  # pragma: no cover - depends on the environment
        raise HybridInputError(
            "runtime.backend dask needs dask.distributed; install it with `pip install 'hybrid-forecast[distributed]'` "
            "or pick another backend (e.g. loky)."
        ) from None
    if address:
        try:
            client = Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
        except OSError as exc:
            raise HybridInputError(
                f"cannot reach the dask scheduler at {address} (runtime.dask_address): {exc}; start it "
                "(`dask scheduler`) or fix the address."
            ) from None
        try:
            with client.as_current():
                yield
        finally:
            client.close()
        return
    try:
        get_client()
    except ValueError:
        logger.info("backend 'dask': no dask client found; starting a local in-process one for this call.")
        with Client(processes=False, dashboard_address=None):
            yield
        return
    yield


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    n_jobs: int = 1,
    backend: str = "loky",
    dask_address: str = "",
    desc: str = "",
) -> list[R]:
    """``[fn(x) for x in items]``, in order, spread over joblib workers.

    Args:
        fn: a picklable function of one item (a module-level function or a
            ``functools.partial`` of one) for process-based backends.
        items: the tasks, e.g. one per channel.
        n_jobs: workers (joblib convention: -1 every core); capped at the number
            of tasks. 1 runs inline in this process.
        backend: a joblib backend name ("loky", "threading", "dask", ...).
        dask_address: scheduler address for backend "dask" (empty: the
            caller's client or a local one).
        desc: what is being done, for the log ("arima: fit 7 channels").

    Returns:
        The results, in the order of ``items``.
    """
    items = list(items)
    if not items:
        return []
    workers = n_workers(n_jobs, len(items))
    start = time.perf_counter()
    if workers == 1 and backend != "dask":
        results = [fn(item) for item in items]
    else:
        from joblib import Parallel, delayed, parallel_config

        context = _dask_client(dask_address) if backend == "dask" else contextlib.nullcontext()
        jobs = -1 if backend == "dask" else workers  # a cluster sizes itself: every worker it has
        with context, parallel_config(backend=backend, n_jobs=jobs):
            results = Parallel()(delayed(_single_threaded)(fn, item) for item in items)
    logger.info(
        "%s: %d tasks on %d worker(s) [%s] in %.2f s",
        desc or getattr(fn, "__name__", "parallel_map"),
        len(items),
        workers,
        "inline" if workers == 1 else backend,
        time.perf_counter() - start,
    )
    return results


__all__ = ["n_workers", "parallel_map"]
