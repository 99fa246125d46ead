"""The classical members on a real Dask cluster: a scheduler and two workers, each its own process, on 127.0.0.1.

ARIMA and ETS fitted through ``runtime.backend: dask`` + ``runtime.dask_address`` give the same forecasts as
loky, and so does ``hybrid fit`` end to end, on one wide series and on many series in long format; an address
nobody listens on is one error line and exit code 2.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import kernel.parallel
from baselines.arima import Arima
from baselines.ets import Ets
from hybrid.cli import main
from kernel.contract import TaskSpec
from kernel.protocol import windows
from tests.conftest import free_port, make_frame

HAS_DASK = importlib.util.find_spec("dask") is not None and importlib.util.find_spec("distributed") is not None
pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(not HAS_DASK, reason="dask.distributed is not installed; it comes with the `distributed` "
                       "(or `dev`) extra: pip install -e '.[distributed]'"),
]

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 90.0  # seconds for the scheduler to see both workers (a loaded 2-core CI machine is slow)
LIFETIME = "900s"  # the workers stop by themselves after this, the scheduler after this long idle, teardown or not
L, H, PERIOD = 48, 12, 24


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """``python -m dask <args>`` in its own process group (so its nanny's children go down with it)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent, start_new_session=os.name == "posix")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process (group), then SIGKILL it if it is still there after 15 s."""
    if proc.poll() is not None:
        return
    group = os.name == "posix"
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tcp://127.0.0.1:<port>`` of a scheduler with two single-threaded workers; all three stopped afterwards."""
    from dask.distributed import Client

    folder = tmp_path_factory.mktemp("dask_cluster")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []
    try:
        procs.append(_start(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                             "--idle-timeout", LIFETIME], folder / "scheduler.log"))
        for i in range(2):
            procs.append(_start(["worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                                 "--lifetime", LIFETIME, "--local-directory", str(folder / f"w{i}")],
                                folder / f"worker{i}.log"))
        try:
            with Client(address, timeout=f"{START_TIMEOUT:.0f}s", set_as_default=False) as client:
                client.wait_for_workers(2, timeout=START_TIMEOUT)
                n_workers = len(client.scheduler_info()["workers"])
        except (OSError, TimeoutError) as exc:
            logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(folder.glob("*.log")))
            pytest.fail(f"the dask cluster at {address} did not come up with 2 workers in {START_TIMEOUT:.0f} s "
                        f"({type(exc).__name__}: {exc}):\n{logs}")
        assert n_workers == 2
        yield address
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _series() -> np.ndarray:
    """[600, 3]: daily-seasonal channels with a trend and noise (the CLI tests' frame, as an array)."""
    return make_frame(n=600, channels=3).drop(columns="date").to_numpy(np.float64)


def _forecasts(backend: str, address: str = "") -> dict[str, np.ndarray]:
    y = _series()
    spec = TaskSpec(context_length=L, horizon=H, freq="h", periods=(PERIOD,), n_jobs=-1, backend=backend,
                    dask_address=address)
    context, _ = windows(y[400 - L :], L, H)
    members = {
        "arima": Arima(max_train_points=300, max_p=1, max_q=1, maxiter=20),
        "ets": Ets(max_train_points=400, maxiter=50),
    }
    out = {}
    for name, member in members.items():
        member.fit(y[:400], y[400 - L : 500], spec)
        assert [c["status"] for c in member.channel_status_] == ["ok"] * 3, member.channel_status_  # no fallback
        out[name] = member.predict(context)
    return out


def _imported_on_workers(address: str) -> dict[str, bool]:
    """Per worker: whether a member's channel fit ran there (it imported the member's module)."""
    from dask.distributed import Client

    def ran() -> bool:
        return "baselines.arima" in sys.modules and "baselines.ets" in sys.modules

    with Client(address, timeout="30s", set_as_default=False) as client:
        return client.run(ran)


def test_members_on_a_dask_cluster_match_loky(cluster: str) -> None:
    on_dask = _forecasts("dask", cluster)
    on_loky = _forecasts("loky")
    for name in ("arima", "ets"):
        assert on_dask[name].shape == (len(on_loky[name]), 3, H)
        np.testing.assert_allclose(on_dask[name], on_loky[name], rtol=1e-10, err_msg=name)
    assert any(_imported_on_workers(cluster).values())  # the channels were fitted on the cluster's workers


def _test_metrics(manifest: dict) -> dict[str, dict[str, float]]:
    return {f"{H_}/{name}": {"mse": s["test"]["mse"], "mae": s["test"]["mae"]}
            for H_, entry in manifest["results"].items() for name, s in entry["metrics"].items() if s.get("test")}


def test_cli_fit_on_a_dask_cluster_matches_loky(cluster: str, tmp_path: Path) -> None:
    import json

    csv = tmp_path / "series.csv"
    make_frame(n=600, channels=3).to_csv(csv, index=False)
    base = ["fit", "--data", str(csv), "--context-length", str(L), "--horizon", str(H), "--members", "arima,ets",
            "--set", "runtime.progress=false", "--set", "stack.folds=2", "--set", "arima.max_p=1",
            "--set", "arima.max_q=1", "--set", "arima.maxiter=20", "--set", "ets.maxiter=50"]
    assert main([*base, "--run-dir", "loky"]) == 0
    assert main([*base, "--run-dir", "dask", "--set", "runtime.backend=dask",
                 "--set", f"runtime.dask_address={cluster}"]) == 0
    loky, dask = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("loky", "dask"))
    assert dask["config"]["runtime"]["dask_address"] == cluster
    want, got = _test_metrics(loky), _test_metrics(dask)
    assert set(got) == set(want) and {k.split("/")[1] for k in want} >= {"arima", "ets", "hybrid"}
    for key, scores in want.items():
        np.testing.assert_allclose([got[key]["mse"], got[key]["mae"]], [scores["mse"], scores["mae"]], rtol=1e-10,
                                   err_msg=key)


def test_many_series_on_a_dask_cluster_match_loky(cluster: str, tmp_path: Path) -> None:
    """A long file of series with different lengths: ETS fitted per series as cluster tasks, as on loky."""
    import json

    import pandas as pd

    frame = make_frame(n=600, channels=3)
    rows = [pd.DataFrame({"unique_id": f"s{j}", "ds": frame["date"].iloc[j * 40 :], "y": frame[f"c{j}"].iloc[j * 40 :]})
            for j in range(3)]  # series of 600, 560 and 520 rows, each starting later
    csv = tmp_path / "panel.csv"
    pd.concat(rows).to_csv(csv, index=False)
    base = ["fit", "--data", str(csv), "--context-length", str(L), "--horizon", str(H), "--members", "linear,ets",
            "--set", "runtime.progress=false", "--set", "stack.folds=2", "--set", "ets.maxiter=50"]
    assert main([*base, "--run-dir", "loky"]) == 0
    assert main([*base, "--run-dir", "dask", "--set", "runtime.backend=dask",
                 "--set", f"runtime.dask_address={cluster}"]) == 0
    loky, dask = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("loky", "dask"))
    assert dask["layout"] == "panel" and dask["n_series"] == 3
    assert dask["results"][str(H)]["members"]["ets"]["fit"].startswith("fitted per series (3 tasks)")
    want, got = _test_metrics(loky), _test_metrics(dask)
    assert set(got) == set(want)
    for key, scores in want.items():
        np.testing.assert_allclose([got[key]["mse"], got[key]["mae"]], [scores["mse"], scores["mae"]], rtol=1e-10,
                                   err_msg=key)


def test_unreachable_scheduler_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(kernel.parallel, "DASK_CONNECT_TIMEOUT", "1s")
    csv = tmp_path / "series.csv"
    make_frame(n=600, channels=3).to_csv(csv, index=False)
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    code = main(["fit", "--data", str(csv), "--context-length", str(L), "--horizon", str(H), "--members", "arima",
                 "--set", "runtime.progress=false", "--set", "runtime.backend=dask",
                 "--set", f"runtime.dask_address={address}"])
    assert code == 2
    assert time.perf_counter() - start < 30
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert address in errors[0] and "runtime.dask_address" in errors[0]
    assert not (tmp_path / "runs").exists()  # nothing was written
