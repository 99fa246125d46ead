"""The pipeline: fit every member for every horizon, score, combine, persist.

``fit_run`` is what ``hybrid fit`` does; ``forecast_run`` what ``hybrid
forecast`` does. Members are fitted on the scaled training part, scored on
every validation and test window, and combined by weights learned on
validation only; the test set chooses nothing.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hybrid import artifacts
from hybrid.config import Config, config_from_dict
from hybrid.contract import TaskSpec
from hybrid.data import Series, load_series, resolve_split_kind
from hybrid.errors import HybridInputError
from hybrid.members import REGISTRY, make_member, parse_member
from hybrid.periods import detect_periods
from hybrid.protocol import Scaler, make_split, mse_mae, windows
from router.features import backtest_steps, shift_context
from router.learned import ROUTER_MODES, Router, combine_per_window, fit_router
from router.static import STATIC_MODES, combine, static_weights

logger = logging.getLogger(__name__)

COMBINED = "hybrid"
PACKAGES = ("hybrid-forecast", "numpy", "pandas", "statsmodels", "pmdarima", "scikit-learn",
            "torch", "transformers")


@dataclass
class FitResult:
    run_dir: Path
    manifest: dict[str, Any]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _score(forecast: np.ndarray, target: np.ndarray, scaler: Scaler, channels: list[int]) -> dict[str, float]:
    """MSE / MAE on scaled values and in original units, over the output channels."""
    f, t = forecast[:, channels], target[:, channels]
    mse, mae = mse_mae(f, t)
    sub = Scaler(scaler.mean[channels], scaler.scale[channels])
    mse_o, mae_o = mse_mae(sub.inverse(f, channel_axis=1), sub.inverse(np.asarray(t, np.float64), channel_axis=1))
    return {"mse": mse, "mae": mae, "mse_original": mse_o, "mae_original": mae_o}


def _task_spec(cfg: Config, series: Series, horizon: int, periods: tuple[int, ...]) -> TaskSpec:
    n_jobs = cfg.runtime.n_jobs
    if n_jobs < 1:
        import os

        n_jobs = os.cpu_count() or 1
    return TaskSpec(
        context_length=cfg.task.context_length,
        horizon=horizon,
        freq=series.freq,
        periods=periods,
        seed=cfg.task.seed,
        n_jobs=n_jobs,
        backend=cfg.runtime.backend,
        channel_names=series.columns,
        description=cfg.data.description,
    )


def expand_period_experts(members: tuple[str, ...], experts: tuple[str, ...], periods: tuple[int, ...],
                          context_length: int) -> tuple[str, ...]:
    """Add ``name@p`` for every expert ``name`` and detected period p (note 9).

    Periods longer than half the context (fewer than two cycles in a window)
    get no expert; names already listed are not repeated.
    """
    out = list(members)
    for base in experts:
        for p in periods:
            name = f"{base}@{p}"
            if p <= context_length // 2 and name not in out:
                out.append(name)
    return tuple(out)


def check_members(names: tuple[str, ...]) -> None:
    if not names:
        raise HybridInputError("task.members is empty; name at least one member (e.g. --members linear).")
    seen = set()
    for name in names:
        parse_member(name)
        if name in seen:
            raise HybridInputError(f"member {name!r} is listed twice in task.members.")
        seen.add(name)


def check_router_mode(mode: str) -> None:
    valid = (*ROUTER_MODES, *STATIC_MODES)
    if mode not in valid:
        raise HybridInputError(f"router.mode must be one of {', '.join(valid)}; got {mode!r}.")


def router_file(horizon: int) -> str:
    return f"router-h{horizon}.joblib"


def _predict_all(members: dict[str, Any], context: np.ndarray, H: int) -> dict[str, np.ndarray]:
    """member -> forecast [N, C, H] of ``context`` [N, C, L]."""
    return {n: m.predict(context)[:, :, :H] for n, m in members.items()}


def _combine_horizon(
    cfg: Config,
    H: int,
    ok: list[str],
    members: dict[str, Any],
    periods: tuple[int, ...],
    metrics: dict[str, Any],
    val: tuple[np.ndarray, dict[str, np.ndarray], np.ndarray],
    test: tuple[np.ndarray, dict[str, np.ndarray], np.ndarray],
    scaler: Scaler,
    out_ch: list[int],
) -> tuple[dict[str, Any], Router | None]:
    """Static combiners and, with two or more members, the learned router for one horizon.

    Adds ``equal``, ``inverse_error``, ``best_single``, ``router_<mode>`` (what
    each learned mode does, before any fallback; its validation score is
    in-sample) and ``hybrid`` (what is deployed: ``router.mode``, or its
    fallback) to ``metrics``; returns the manifest's combiner entry and the
    router (None with a single member).
    """
    val_ctx, val_fc, val_tgt = val
    test_ctx, test_fc, test_tgt = test
    val_mse = {n: metrics[n]["val"]["mse"] for n in ok}
    comb: dict[str, Any] = {}
    for mode in STATIC_MODES:
        w = static_weights(val_mse, mode)
        metrics[mode] = {
            "val": _score(combine(val_fc, w), val_tgt, scaler, out_ch),
            "test": _score(combine(test_fc, w), test_tgt, scaler, out_ch),
        }
        comb[mode] = w
    mode = cfg.router.mode
    entry: dict[str, Any] = {"mode": mode, "weights": comb.get(mode), "static": comb}
    if len(ok) < 2:
        if mode in ROUTER_MODES:
            reason = f"only one member ({ok[0]}) at H={H}; nothing to route"
            logger.warning("router %s: %s; using it alone", mode, reason)
            entry.update(fallback="best_single", fallback_reason=reason, weights=comb["best_single"])
            metrics[COMBINED] = dict(metrics["best_single"], router=mode, fallback="best_single")
        else:
            metrics[COMBINED] = dict(metrics[mode], router=mode)
        return entry, None

    t0 = time.perf_counter()
    L = val_ctx.shape[-1]
    steps = backtest_steps(H, L, cfg.router.backtest_steps)
    val_bt = _predict_all(members, shift_context(val_ctx, steps), H)
    router = fit_router(val_ctx, {n: val_fc[n] for n in ok}, val_bt, val_tgt, out_ch, periods,
                        cfg.router, cfg.task.seed)
    test_bt = _predict_all(members, shift_context(test_ctx, steps), H)
    X_val = router.features(val_ctx, {n: val_fc[n] for n in ok}, val_bt)
    X_test = router.features(test_ctx, {n: test_fc[n] for n in ok}, test_bt)
    for m in ROUTER_MODES:
        metrics[f"router_{m}"] = {
            "val": _score(combine_per_window(val_fc, ok, router.raw_weights(m, X_val)), val_tgt, scaler, out_ch),
            "test": _score(combine_per_window(test_fc, ok, router.raw_weights(m, X_test)), test_tgt, scaler,
                           out_ch),
            "passed_check": router.check_[m]["passed"],
        }
    if mode in ROUTER_MODES:
        fb = router.fallback_[mode]
        if fb is None:
            metrics[COMBINED] = {k: metrics[f"router_{mode}"][k] for k in ("val", "test")} | {"router": mode}
        else:
            metrics[COMBINED] = dict(metrics[fb], router=mode, fallback=fb)
            entry["weights"] = comb[fb]
        entry["fallback"] = fb
        if fb is None:
            w = router.weights(mode, X_val[:, out_ch]).reshape(-1, len(ok)).mean(0)
            entry["weights"] = {n: float(v) for n, v in zip(ok, w, strict=True)}
            entry["per_window"] = True
    else:
        metrics[COMBINED] = dict(metrics[mode], router=mode)
    entry["router"] = {
        "file": router_file(H),
        "members": ok,
        "features": router.names,
        "backtest_steps": steps,
        "check": router.check_,
        "fallback": router.fallback_,
        "rules": router.rule_table(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return entry, router


def fit_run(cfg: Config, data: str | None, run_dir: str | Path | None = None) -> FitResult:
    """Fit every member for every horizon and write a complete run directory.

    Args:
        cfg: the full config.
        data: CSV path or built-in dataset name (None: the default dataset).
        run_dir: where to write the run; default ``runs/<dataset>-<UTC time>``.

    Returns:
        The run directory and its manifest.
    """
    t_start = time.perf_counter()
    check_members(cfg.task.members)
    for base in cfg.task.period_experts:
        if not REGISTRY.get(base, (None, False))[1]:
            takes = ", ".join(n for n, (_, p) in REGISTRY.items() if p)
            raise HybridInputError(f"task.period_experts: {base!r} takes no period; members that do: {takes}.")
    horizons = tuple(sorted(set(cfg.task.horizons)))
    if not horizons or min(horizons) < 1:
        raise HybridInputError(f"task.horizons must be positive integers; got {list(cfg.task.horizons)}.")
    L = cfg.task.context_length
    if L < 2:
        raise HybridInputError(f"task.context_length must be at least 2; got {L}.")
    check_router_mode(cfg.router.mode)
    np.random.seed(cfg.task.seed)

    series = load_series(data, cfg.data)
    split_kind = resolve_split_kind(series.name, cfg.data.split)
    split = make_split(series.n_rows, L, max(horizons), kind=split_kind, freq=series.freq,
                       ratios=tuple(cfg.data.split_ratios))
    train_raw = split.part(series.values, "train")
    scaler = Scaler.fit(train_raw)
    scaled = scaler.transform(series.values)
    train, val, test = (split.part(scaled, p) for p in ("train", "val", "test"))
    periods = detect_periods(train, k=cfg.task.n_periods)
    logger.info("%s: %d rows x %d channels at %s; split %s; periods %s",
                series.name, series.n_rows, len(series.columns), series.freq, split_kind,
                list(periods.dominant))
    out_ch = series.output_channels
    member_names = expand_period_experts(cfg.task.members, cfg.task.period_experts, periods.dominant, L)

    members_info: dict[str, dict[str, Any]] = {}
    fitted: dict[tuple[str, int], Any] = {}
    metrics: dict[str, dict[str, dict[str, Any]]] = {}
    combiners: dict[str, dict[str, Any]] = {}
    agnostic_cache: dict[str, Any] = {}
    routers: dict[int, Router | None] = {}

    progress = tqdm(total=len(horizons) * len(member_names), desc="fit", unit="member",
                    disable=not cfg.runtime.progress)
    for H in horizons:
        spec = _task_spec(cfg, series, H, periods.dominant)
        val_ctx, val_tgt = windows(val, L, H)
        test_ctx, test_tgt = windows(test, L, H)
        val_fc: dict[str, np.ndarray] = {}
        test_fc: dict[str, np.ndarray] = {}
        metrics[str(H)] = {}
        for name in member_names:
            progress.set_postfix_str(f"H={H} {name}")
            info = members_info.setdefault(name, {"fit_seconds": {}, "predict_seconds": {}, "status": "ok"})
            try:
                t0 = time.perf_counter()
                if name in agnostic_cache:
                    member = agnostic_cache[name]
                else:
                    member = make_member(name, cfg)
                    fit_spec = replace(spec, horizon=max(horizons)) if getattr(member, "horizon_agnostic", False) else spec
                    # the core fits its reference members itself unless they are already fitted for this H
                    fit_spec = replace(fit_spec, extra={**fit_spec.extra, "config": cfg, "fitted_members": {
                        n: m for (n, h), m in fitted.items() if h == H}})
                    member.fit(train, val, fit_spec)
                    if getattr(member, "horizon_agnostic", False):
                        agnostic_cache[name] = member
                info["fit_seconds"][str(H)] = round(time.perf_counter() - t0, 3)
                t0 = time.perf_counter()
                val_fc[name] = member.predict(val_ctx)[:, :, :H]
                test_fc[name] = member.predict(test_ctx)[:, :, :H]
                info["predict_seconds"][str(H)] = round(time.perf_counter() - t0, 3)
            except HybridInputError:
                raise
            except Exception as exc:  # a failing member never stops the run
                logger.warning("member %s failed at H=%d: %s: %s", name, H, type(exc).__name__, exc)
                info["status"] = "failed"
                info["reason"] = f"{type(exc).__name__}: {exc}"
                progress.update()
                continue
            fitted[(name, H)] = member
            for attr in ("channel_status_", "alpha_", "period_", "n_trainable_", "n_frozen_"):
                if hasattr(member, attr):
                    info.setdefault("details", {})[attr.rstrip("_")] = getattr(member, attr)
            metrics[str(H)][name] = {
                "val": _score(val_fc[name], val_tgt, scaler, out_ch),
                "test": _score(test_fc[name], test_tgt, scaler, out_ch),
            }
            progress.update()
        ok = [n for n in member_names if n in val_fc]
        if not ok:
            raise RuntimeError(f"every member failed at horizon {H}; see the warnings above.")
        combiners[str(H)], routers[H] = _combine_horizon(
            cfg, H, ok, {n: fitted[(n, H)] for n in ok}, periods.dominant, metrics[str(H)],
            (val_ctx, val_fc, val_tgt), (test_ctx, test_fc, test_tgt), scaler, out_ch)
    progress.close()

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    final = Path(run_dir) if run_dir else artifacts.DEFAULT_RUNS / f"{series.name}-{stamp}"
    manifest: dict[str, Any] = {
        "complete": True,
        "format": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": series.name,
        "source": series.source,
        "fingerprint": series.fingerprint(),
        "columns": list(series.columns),
        "output_columns": [series.columns[j] for j in out_ch],
        "target": series.target,
        "features": series.features,
        "freq": series.freq,
        "n_rows": series.n_rows,
        "last_timestamp": str(series.timestamps[-1]),
        "context_length": L,
        "horizons": list(horizons),
        "split": split.to_dict(),
        "windows": {str(H): {p: split.n_windows(p, L, H) for p in ("train", "val", "test")} for H in horizons},
        "scaler": scaler.to_dict(),
        "periods": periods.to_dict(),
        "members": members_info,
        "combiner": combiners,
        "metrics": metrics,
        "config": cfg.to_dict(),
        "versions": _versions(),
        "seed": cfg.task.seed,
    }
    with artifacts.staged_run_dir(final) as stage:
        stored: dict[str, dict[str, str]] = {}
        for (name, H), member in fitted.items():
            path = artifacts.member_path(stage, name, H)
            kind = artifacts.save_member(member, path)
            cls = type(member)
            stored.setdefault(name, {})[str(H)] = f"{kind}:{cls.__module__}.{cls.__qualname__}"
        manifest["stored_members"] = stored
        for H, router in routers.items():
            if router is not None:
                joblib.dump(router, stage / router_file(H))
        # The last L rows (original units) let `hybrid forecast` run without the data file.
        np.savez(stage / "tail.npz", values=series.values[-L:],
                 timestamps=np.asarray(series.timestamps[-L:].strftime("%Y-%m-%dT%H:%M:%S"), dtype=str))
        manifest["fit_seconds_total"] = round(time.perf_counter() - t_start, 2)
        artifacts.write_json(stage / artifacts.MANIFEST, manifest)
    final = final.resolve()
    if run_dir is None:
        artifacts.point_latest(final)
    logger.info("run written to %s", final)
    return FitResult(final, manifest)


@dataclass
class ForecastResult:
    """A forecast of the H steps after the end of the data.

    Attributes:
        frame: timestamp column plus one column per output channel (original units).
        members: member name -> forecast [C_out, H] in original units.
        weights: member name -> weight in the combined forecast (mean over
            the output channels; see ``channel_weights``).
        horizon: H.
        fitted_horizon: the fitted horizon that served it.
        history: the context window (original units), output channels.
        channel_weights: member name -> weight per output channel [C_out].
        mode: what ``hybrid`` is (router.mode at fit time).
        fallback: the static mode used instead of the router, or None.
        details: JSON-ready explanation for the vote report: per output
            channel the router's features and drivers, the run's metrics,
            the router's check, its rule table and members' own texts.
    """

    frame: pd.DataFrame
    members: dict[str, np.ndarray]
    weights: dict[str, float]
    horizon: int
    fitted_horizon: int
    history: pd.DataFrame
    channel_weights: dict[str, np.ndarray] = field(default_factory=dict)
    mode: str = ""
    fallback: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def load_fitted(run_dir: Path, manifest: dict[str, Any], horizon: int) -> dict[str, Any]:
    out = {}
    for name, by_h in manifest["stored_members"].items():
        if str(horizon) not in by_h:
            continue
        kind, _, cls_path = by_h[str(horizon)].partition(":")
        out[name] = artifacts.load_member(artifacts.member_path(run_dir, name, horizon), kind, cls_path)
    return out


def choose_horizon(requested: int | None, fitted: list[int]) -> int:
    """The smallest fitted horizon that covers ``requested``."""
    if requested is None:
        return min(fitted)
    if requested < 1:
        raise HybridInputError(f"--horizon must be a positive integer; got {requested}.")
    covering = [h for h in sorted(fitted) if h >= requested]
    if not covering:
        raise HybridInputError(
            f"horizon {requested} is longer than any fitted horizon ({', '.join(map(str, sorted(fitted)))}); "
            f"fit again with --horizon {requested}."
        )
    return covering[0]


def _context_rows(run_dir: Path, manifest: dict[str, Any], data: str | None) -> tuple[np.ndarray, pd.DatetimeIndex, str]:
    """Last L rows (original units) and their timestamps, from the run or new data."""
    L = manifest["context_length"]
    if data is None:
        tail = np.load(run_dir / "tail.npz")
        return tail["values"], pd.DatetimeIndex(pd.to_datetime(tail["timestamps"].tolist())), manifest["freq"]
    cfg = config_from_dict(manifest["config"])
    series = load_series(data, replace(cfg.data, name=manifest["dataset"]))
    if list(series.columns) != manifest["columns"]:
        raise HybridInputError(
            f"--data {data} has columns {', '.join(series.columns)}, but the run was fitted on "
            f"{', '.join(manifest['columns'])}; pass data with the same columns."
        )
    if series.n_rows < L:
        raise HybridInputError(
            f"--data {data} has {series.n_rows} rows; forecasting needs the last {L} (context_length)."
        )
    return series.values[-L:], series.timestamps[-L:], series.freq


def forecast_run(run_dir: Path, horizon: int | None = None, data: str | None = None) -> ForecastResult:
    """Forecast the ``horizon`` steps after the end of the data with a fitted run."""
    manifest = artifacts.read_manifest(run_dir)
    fitted_h = choose_horizon(horizon, manifest["horizons"])
    horizon = horizon or fitted_h
    values, stamps, freq = _context_rows(run_dir, manifest, data)
    scaler = Scaler.from_dict(manifest["scaler"])
    context = scaler.transform(values).T[None]  # [1, C, L]
    members = load_fitted(run_dir, manifest, fitted_h)
    columns = manifest["columns"]
    out_idx = [columns.index(c) for c in manifest["output_columns"]]
    member_fc = _predict_all(members, context, fitted_h)  # name -> [1, C, H]
    entry = manifest["combiner"][str(fitted_h)]
    mode, fallback = entry["mode"], entry.get("fallback")
    router: Router | None = None
    X = None
    if "router" in entry:
        path = run_dir / entry["router"]["file"]
        if not path.is_file():
            raise HybridInputError(f"{path} is missing; the run is damaged, fit it again.")
        router = joblib.load(path)
        missing = [n for n in router.members if n not in member_fc]
        if missing:
            raise RuntimeError(f"the router needs members {missing}, which were not loaded; fit the run again.")
        fc = {n: member_fc[n] for n in router.members}
        bt = _predict_all({n: members[n] for n in router.members}, router.backtest_context(context), fitted_h)
        X = router.features(context, fc, bt)  # [1, C, F]
    if router is not None and mode in ROUTER_MODES:
        names = router.members
        W = router.weights(mode, X)[0]  # [C, M]
    else:
        weights = {n: w for n, w in entry["weights"].items() if n in member_fc}
        total = sum(weights.values())
        if total <= 0:
            raise RuntimeError("the stored combiner gives no weight to any loaded member; fit the run again.")
        names = list(weights)
        W = np.tile(np.array([weights[n] / total for n in names]), (context.shape[1], 1))  # [C, M]
    combined = combine_per_window({n: member_fc[n][:, :, :horizon] for n in names}, names, W[None])  # [1, C, h]
    member_fc = {n: fc[:, :, :horizon] for n, fc in member_fc.items()}
    out_w = W[out_idx]  # [C_out, M]
    channel_weights = {n: out_w[:, k] for k, n in enumerate(names)}
    details = _explain(manifest, fitted_h, router, X, mode, out_idx, members, context)

    def to_original(fc: np.ndarray) -> np.ndarray:
        return scaler.inverse(fc[0].T.astype(np.float64))[:, out_idx].T  # [C_out, h]

    future = pd.date_range(stamps[-1], periods=horizon + 1, freq=freq)[1:]
    comb = to_original(combined)
    frame = pd.DataFrame({"timestamp": future, **{manifest["output_columns"][i]: comb[i] for i in range(len(out_idx))}})
    history = pd.DataFrame(values[:, out_idx], index=stamps, columns=manifest["output_columns"])
    return ForecastResult(
        frame=frame,
        members={n: to_original(fc) for n, fc in member_fc.items()},
        weights={n: float(w.mean()) for n, w in channel_weights.items()},
        horizon=horizon,
        fitted_horizon=fitted_h,
        history=history,
        channel_weights=channel_weights,
        mode=mode,
        fallback=fallback,
        details=details,
    )


def _member_texts(members: dict[str, Any], context: np.ndarray) -> dict[str, dict[str, Any]]:
    """Whatever members say about themselves: ``prompt_text(context)`` and ``explain(context)``."""
    out: dict[str, dict[str, Any]] = {}
    for name, member in members.items():
        for attr in ("prompt_text", "explain"):
            if not hasattr(member, attr):
                continue
            try:
                value = getattr(member, attr)(context)
            except Exception as exc:  # a report must not stop a forecast
                logger.warning("member %s: %s() failed: %s: %s", name, attr, type(exc).__name__, exc)
                value = f"unavailable ({type(exc).__name__}: {exc})"
            out.setdefault(name, {})[attr] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (numpy arrays to lists, the rest to strings)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _explain(manifest: dict[str, Any], H: int, router: Router | None, X: np.ndarray | None, mode: str,
             out_idx: list[int], members: dict[str, Any], context: np.ndarray) -> dict[str, Any]:
    """The router's view of this window, per output channel, for the vote report."""
    entry = manifest["combiner"][str(H)]
    out: dict[str, Any] = {
        "metrics": manifest["metrics"][str(H)],
        "periods": manifest["periods"]["dominant"],
        "fallback_reason": entry.get("fallback_reason"),
        "check": entry.get("router", {}).get("check"),
        "rules": entry.get("router", {}).get("rules"),
        "static_weights": entry["static"],
        "channels": {},
        "member_text": _member_texts(members, context),
    }
    top = manifest["config"].get("router", {}).get("top_features", 5)
    if router is None or X is None:
        return out
    for col, j in zip(manifest["output_columns"], out_idx, strict=True):
        x = X[0, j]
        ch: dict[str, Any] = {"features": {n: float(v) for n, v in zip(router.names, x, strict=True)}}
        for m in ROUTER_MODES:
            ch[m] = router.explain(m, x, top=top)
            ch[m]["weights"] = {n: float(w) for n, w in zip(router.members, router.raw_weights(m, x), strict=True)}
        out["channels"][col] = ch
    return out
