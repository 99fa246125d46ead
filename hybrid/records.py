"""Typed results of a fit and the manifest written from them (the JSON is made here, at the edge)."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from hybrid.artifacts import PANEL, plain
from hybrid.config import Config
from hybrid.crossfit import MemberFits, SeriesFits
from hybrid.dataset import Dataset
from hybrid.deployment import COMBINED, Deployment
from hybrid.stacking import Gate
from kernel.protocol import FoldPlan

FORMAT = 2
PACKAGES = ("hybrid-forecast", "numpy", "pandas", "statsmodels", "pmdarima", "scikit-learn", "torch", "transformers")


@dataclass
class HorizonResult:
    """Everything fitted and measured at one horizon.

    Attributes:
        horizon: H.
        members: name -> its fits at every stage (members that failed are absent).
        failed: name -> why it failed.
        oof: member -> its out-of-fold scores (pooled, by fold, per channel).
        oof_windows: how many historical windows the out-of-fold scores cover.
        oof_combined: combination name -> leave-one-fold-out scores (MSE, MAE, per channel).
        gate: the sanity gate.
        deployment: what ``hybrid`` is.
        test: name -> test scores of the deployed members (``task.refit``),
            every combination and ``hybrid`` (with interval scores).
        test_train_only: member -> test scores of its train-only fit.
        seconds: wall seconds per member and per step.
        channels: the output channels' names.
        test_windows: how many test windows the test scores cover.
        window_errors: many series: name -> each test window's MSE (series after series); else empty.
        production: many series: the H steps after each series' end (long format, original units); else None.
    """

    horizon: int
    members: dict[str, MemberFits | SeriesFits]
    failed: dict[str, str]
    oof: dict[str, dict[str, Any]]
    oof_windows: int
    oof_combined: dict[str, dict[str, Any]]
    gate: Gate
    deployment: Deployment
    test: dict[str, Any]
    test_train_only: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)
    test_windows: int = 0
    window_errors: dict[str, np.ndarray] = field(default_factory=dict)
    production: Any = None

    def metrics(self) -> dict[str, dict[str, Any]]:
        """name -> {"oof": ..., "test": ..., "test_train_only": ...} for the manifest and ``hybrid evaluate``."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.members:
            out[name] = {"oof": self.oof[name], "test": self.test.get(name),
                         "test_train_only": self.test_train_only.get(name)}
        for name, score in self.oof_combined.items():
            if name in self.test:
                out[name] = {"oof": score, "test": self.test[name]}
        dep = self.deployment
        out[COMBINED]["router"] = dep.mode
        if dep.fallback:
            out[COMBINED]["fallback"] = dep.fallback
        if dep.router is not None:
            for mode in ("vote", "select", "rules"):
                key = f"router_{mode}"
                if key in out:
                    out[key]["passed_check"] = bool(dep.router.check_[mode]["passed"])
        return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _weights(static: dict[str, np.ndarray], members: list[str], channels: list[str]) -> dict[str, Any]:
    return {mode: {c: {m: round(float(w[i, k]), 6) for k, m in enumerate(members)} for i, c in enumerate(channels)}
            for mode, w in static.items()}


def sound_entry(result: HorizonResult) -> dict[str, Any]:
    """Which members were not sound on which channel (allowed by the gate, but too far from the best), and why."""
    router = result.deployment.router
    assert router is not None
    ratio = result.deployment.router_ratio
    unsound: dict[str, list[str]] = {}
    reasons = []
    for i, col in enumerate(result.channels):
        mse = {m: result.oof[m]["per_channel"][col]["mse"] for m in router.members}
        allowed = [m for k, m in enumerate(router.members) if router.gate_ is None or router.gate_[i, k]]
        best = min(allowed, key=mse.__getitem__)
        for k, m in enumerate(router.members):
            if m in allowed and not router.mask[i, k]:
                unsound.setdefault(m, []).append(col)
                reasons.append(f"{m} is not combined on {col}: out-of-fold MSE {mse[m]:.4g} is over {ratio:g} x "
                               f"{mse[best]:.4g} ({best}, the best there)")
    return {"ratio": ratio, "unsound": unsound, "reasons": reasons}


def horizon_entry(result: HorizonResult) -> dict[str, Any]:
    """One horizon's manifest entry, the same for one series and for many (``members``: whatever each describes)."""
    dep = result.deployment
    entry: dict[str, Any] = {
        "metrics": result.metrics(),
        "members": {n: f.describe() for n, f in result.members.items()},
        "failed": result.failed,
        "oof_windows": result.oof_windows,
        "test_windows": result.test_windows,
        "combiner": {
            "mode": dep.mode, "used": dep.used, "fallback": dep.fallback, "fallback_reason": dep.fallback_reason,
            "members": dep.members, "static": _weights(dep.static, dep.members, result.channels),
        },
        "gate": result.gate.to_dict(result.channels),
        "seconds": result.seconds,
    }
    if dep.router is not None:
        entry["combiner"]["sound"] = sound_entry(result)
        entry["router"] = {
            "features": dep.router.names,
            "backtest_steps": dep.steps,
            "backtest_members": dep.backtest_members,
            "check": plain(dep.router.check_),
            "shrink": dep.router.shrink_,
            "rules": dep.router.rule_table(),
        }
    if dep.bands is not None:
        entry["bands"] = {COMBINED: dep.bands.to_dict(), **{m: b.to_dict() for m, b in dep.member_bands.items()}}
    return entry


def member_status(results: dict[int, HorizonResult]) -> dict[str, dict[str, Any]]:
    """member -> its status (ok / failed, and why) and its fit seconds per horizon, for the manifest."""
    members: dict[str, dict[str, Any]] = {}
    for H, result in results.items():
        for name, fits in result.members.items():
            info = members.setdefault(name, {"status": "ok", "fit_seconds": {}})
            info["fit_seconds"][str(H)] = fits.seconds
        for name, why in result.failed.items():
            members.setdefault(name, {"fit_seconds": {}}).update(status="failed", reason=why)
    return members


def run_manifest(cfg: Config, results: dict[int, HorizonResult], about: dict[str, Any]) -> dict[str, Any]:
    """A run's manifest (JSON-ready), one series or many: ``about`` (its data, split and folds: what differs)
    between what every run records (format, time; members, results, config, versions, seed)."""
    return {
        "complete": True,
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **about,
        "members": member_status(results),
        "results": {str(H): horizon_entry(r) for H, r in results.items()},
        "config": cfg.to_dict(),
        "versions": _versions(),
        "seed": cfg.task.seed,
    }


def build_manifest(cfg: Config, run: Dataset, horizons: tuple[int, ...], plans: list[FoldPlan],
                   core_plans: list[FoldPlan], results: dict[int, HorizonResult]) -> dict[str, Any]:
    """The manifest of a run: what one series and many series record alike, and what each adds."""
    L = cfg.task.context_length
    keeps = "train+val" if cfg.task.refit == "train+val" else "train"
    about: dict[str, Any] = {"dataset": run.name, "source": run.source}
    if run.many:
        lengths = run.lengths()
        about |= {"layout": PANEL, "columns": run.columns, "output_columns": run.columns, "target": "y",
                  "features": "S", "freq": run.freq, "n_rows": int(run.offsets[-1]), "n_series": run.n_series,
                  "series_rows": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                                  "max": int(lengths.max())}}
    else:
        series = run.series
        about |= {"fingerprint": series.fingerprint(), "columns": list(series.columns),
                  "output_columns": [series.columns[j] for j in run.out_ch], "target": series.target,
                  "features": series.features, "freq": series.freq, "n_rows": series.n_rows,
                  "last_timestamp": str(series.timestamps[-1])}
    about |= {"context_length": L, "horizons": list(horizons)}
    if run.many:
        about["split"] = {"kind": f"{run.split_kind}, per series", "ratios": list(cfg.data.split_ratios)}
    else:
        about |= {"split": run.split.to_dict(),
                  "windows": {str(H): {p: run.split.n_windows(p, L, H) for p in ("train", "val", "test")}
                              for H in horizons},
                  "scaler": run.scaler.to_dict()}
    about["periods"] = run.periods.to_dict()
    about["cross_fit"] = {
        "classical": plans[0].to_dict() if not run.many else {"folds": plans[0].n_folds, "scheme": "blocked folds "
                     "per series; fold k of the run is fold k of every series"},
        "core": core_plans[0].to_dict() if not run.many else {"folds": core_plans[0].n_folds},
        "max_windows": cfg.stack.max_windows,
        "hyper_parameters": "chosen once on the validation part (train-only fit), then frozen for every refit",
    }
    about["refit"] = {
        "test": "members refitted on train+val after every choice" if cfg.task.refit == "train+val"
        else "members fitted on train only",
        "forecast": f"classical members refitted on all {int(run.offsets[-1])} rows; the core keeps its {keeps} fit",
    }
    return run_manifest(cfg, results, about)
