"""What the combined forecast ``hybrid`` is at one horizon, learned out of fold; stored in the run as data.

:func:`deploy` fits the router and the static combiners on the out-of-fold
windows (:mod:`router.fitting`), decides what ``hybrid`` is (``router.mode``
if it passed its out-of-fold check, else the static combiner with the lowest
leave-one-fold-out error, visibly) and fits the conformal bands of the
combination and of every member on their out-of-fold errors. A
:class:`Deployment` then turns any window's member forecasts into the
combined forecast, its weights, its bands and its explanation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from hybrid.artifacts import plain
from hybrid.config import Config
from hybrid.intervals import Bands, check_levels, fit_bands, member_spread
from hybrid.stacking import Gate, OOFWindows, stack_set
from kernel.contract import Forecaster
from router.fitting import fit_router
from router.models import ROUTER_MODES
from router.router import Router
from router.static import STATIC_MODES, combine, combine_static, median_forecast

logger = logging.getLogger(__name__)

COMBINED = "hybrid"


@dataclass
class Deployment:
    """The combination of one horizon.

    Attributes:
        horizon: H.
        members: the members combined, in weight order.
        mode: ``router.mode`` as configured.
        used: what ``hybrid`` is: ``mode``, or the static combiner it fell back to.
        fallback: the static combiner used instead of a learned mode, or None.
        fallback_reason: one line, when it fell back.
        router: the fitted router (None with a single member).
        static: static mode -> weights [Co, M] from out-of-fold errors (the median's: equal over its members).
        mask: [Co, M] the members each channel may use: sound and allowed by the sanity gate.
        steps: the backtest length H' of the router's features.
        backtest_members: members with a backtest feature.
        bands: the combination's conformal bands (None without levels).
        member_bands: each member's own conformal bands.
        references: member -> the reference members it reads (the core).
        periods: the periods the features use.
        router_ratio: ``router.sound_ratio``, the soundness factor of the members combined.
    """

    horizon: int
    members: list[str]
    mode: str
    used: str
    fallback: str | None
    fallback_reason: str | None
    router: Router | None
    static: dict[str, np.ndarray]
    mask: np.ndarray
    steps: int
    backtest_members: list[str]
    bands: Bands | None = None
    member_bands: dict[str, Bands] = field(default_factory=dict)
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)
    periods: tuple[int, ...] = ()
    router_ratio: float = np.inf

    def features(self, context: np.ndarray, forecasts: dict[str, np.ndarray],
                 backtests: dict[str, np.ndarray]) -> np.ndarray | None:
        """Router features [n, Co, F] (output channels), or None without a router."""
        if self.router is None:
            return None
        return self.router.features(context, {m: forecasts[m] for m in self.members}, backtests)

    def mode_weights(self, mode: str, X: np.ndarray | None, n: int, raw: bool = False) -> np.ndarray:
        """Weights [n, Co, M] of ``mode`` (static or learned; ``raw``: a learned mode before any fallback)."""
        if mode in STATIC_MODES:
            return np.broadcast_to(self.static[mode], (n, *self.static[mode].shape))
        assert self.router is not None and X is not None
        return self.router.raw_weights(mode, X) if raw else self.router.weights(mode, X)

    def features_and_weights(self, context: np.ndarray, forecasts: dict[str, np.ndarray],
                             backtests: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray]:
        """(features or None, weights [n, Co, M] of ``hybrid``) for windows context [n, Co, L]."""
        X = self.features(context, forecasts, backtests)
        return X, self.mode_weights(self.used, X, context.shape[0])

    def band_sets(self, context: np.ndarray, forecasts: dict[str, np.ndarray], combined: np.ndarray,
                  members: bool = True) -> dict[str, dict[float, tuple[np.ndarray, np.ndarray]]]:
        """Conformal bands, name -> level -> (lo, hi), of ``hybrid`` and (``members``) of each member; {} without bands.

        ``context`` [n, Co, L] and ``forecasts`` (member -> [n, Co, H]) are the output channels' and
        ``combined`` [n, Co, H] is ``hybrid``; one spread (sigma) serves every band.
        """
        if self.bands is None:
            return {}
        spread = member_spread([forecasts[m] for m in self.members])
        sigma = self.bands.sigma(context, spread, combined.shape[-1])
        out = {COMBINED: {lv: self.bands.band(combined, sigma, lv) for lv in self.bands.levels}}
        if members:
            out.update({n: {lv: b.band(forecasts[n], sigma, lv) for lv in b.levels}
                        for n, b in self.member_bands.items()})
        return out

    def combine(self, forecasts: dict[str, np.ndarray], weights: np.ndarray) -> np.ndarray:
        """sum_m w_m f_m: forecasts member -> [n, Co, H], weights [n, Co, M] -> [n, Co, H]."""
        return combine(forecasts, self.members, weights)

    def combination(self, mode: str, X: np.ndarray | None, forecasts: dict[str, np.ndarray], n: int,
                    raw: bool = False) -> np.ndarray:
        """The forecast [n, Co, H] of ``mode`` (static or learned; ``raw``: a learned mode before any fallback)."""
        if mode in STATIC_MODES:
            return combine_static(mode, forecasts, self.members, self.static[mode])
        if not raw and self.router is not None and self.router.fallback_.get(mode):
            return self.combination(self.router.fallback_[mode], X, forecasts, n)
        return self.combine(forecasts, self.mode_weights(mode, X, n, raw=raw))

    def forecast(self, context: np.ndarray, forecasts: dict[str, np.ndarray], backtests: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """(features or None, weights [n, Co, M], ``hybrid`` [n, Co, H]) for windows context [n, Co, L]."""
        X, W = self.features_and_weights(context, forecasts, backtests)
        return X, W, self.combination(self.used, X, forecasts, context.shape[0])

    def all_combinations(self, context: np.ndarray, forecasts: dict[str, np.ndarray],
                         backtests: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every static combiner, every learned mode (before fallback) and ``hybrid`` on the same windows."""
        n = context.shape[0]
        X = self.features(context, forecasts, backtests)
        out = {mode: self.combination(mode, X, forecasts, n) for mode in STATIC_MODES}
        if self.router is not None:
            for mode in ROUTER_MODES:
                out[f"router_{mode}"] = self.combination(mode, X, forecasts, n, raw=True)
        out[COMBINED] = out[self.used] if self.used in out else self.combination(self.used, X, forecasts, n)
        return out

    def explain(self, manifest: dict[str, Any], X: np.ndarray | None, columns: list[str], members: dict[str, Forecaster],
                context: np.ndarray, forecasts: dict[str, np.ndarray]) -> dict[str, Any]:
        """The vote report's view of one window (context [1, C, L]): features, drivers, rules, texts."""
        H = str(self.horizon)
        entry = manifest["results"][H]
        out: dict[str, Any] = {
            "metrics": entry["metrics"],
            "periods": list(self.periods),
            "used": self.used,
            "fallback_reason": self.fallback_reason,
            "check": entry.get("router", {}).get("check"),
            "rules": entry.get("router", {}).get("rules"),
            "gate": entry.get("gate"),
            "sound": entry.get("combiner", {}).get("sound"),
            "bands": entry.get("bands"),
            "ladders": {n: {"ladder": d["selection"].get("ladder"), "winner": d["selection"]["ladder_winner"]}
                        for n, d in entry.get("members", {}).items() if "ladder_winner" in d.get("selection", {})},
            "channels": {},
            "member_text": member_texts(members, context, forecasts, self.references),
        }
        top = manifest["config"].get("router", {}).get("top_features", 5)
        if self.router is None or X is None:
            return out
        raw = {m: self.router.raw_weights(m, X)[0] for m in ROUTER_MODES}  # [Co, M] each
        for j, col in enumerate(columns):
            x = X[0, j]
            ch: dict[str, Any] = {"features": {n: float(v) for n, v in zip(self.router.names, x, strict=True)}}
            for m in ROUTER_MODES:
                ch[m] = self.router.explain(m, x, j, top=top)
                ch[m]["weights"] = {n: float(v) for n, v in zip(self.members, raw[m][j], strict=True)}
            out["channels"][col] = ch
        return out


def member_texts(members: dict[str, Forecaster], context: np.ndarray, forecasts: dict[str, np.ndarray],
                 references: dict[str, tuple[str, ...]]) -> dict[str, dict[str, Any]]:
    """Whatever members say about themselves: ``prompt_text`` and ``explain`` of the window."""
    out: dict[str, dict[str, Any]] = {}
    for name, member in members.items():
        refs = references.get(name, ())
        args = (np.stack([forecasts[r] for r in refs], axis=2),) if refs else ()
        for attr, say in (("prompt_text", member.prompt_text), ("explain", member.explain)):
            try:
                value = say(context, *args)
            except Exception as exc:  # a report must not stop a forecast
                logger.warning("member %s: %s() failed: %s: %s", name, attr, type(exc).__name__, exc)
                value = f"unavailable ({type(exc).__name__}: {exc})"
            if value is not None:  # None: the member has nothing to say (the contract's default)
                out.setdefault(name, {})[attr] = plain(value)
    return out


def deploy(*args: Any, **kwargs: Any) -> tuple[Deployment, dict[str, Any]]:
    """:func:`learn_deployment` on one BLAS thread: its many small products run 3-4x faster without thread hand-offs."""
    with threadpool_limits(limits=1):
        return learn_deployment(*args, **kwargs)


def learn_deployment(cfg: Config, oof: OOFWindows, members: list[str], gate: Gate, periods: tuple[int, ...],
                     horizon: int, context_length: int, steps: int, out_ch: list[int], channels: list[str],
                     backtest_members: list[str], offset: np.ndarray | None = None
                     ) -> tuple[Deployment, dict[str, Any]]:
    """Learn the combination on the out-of-fold windows; returns it and its out-of-fold scores.

    ``offset`` [Co]: each output channel's training mean over its standard deviation (the bands' level spread).

    Returns:
        The :class:`Deployment` and, per combination name (every static
        mode, ``router_<mode>``, ``hybrid``), its leave-one-fold-out scores.
    """
    mode = cfg.router.mode
    tol = cfg.stack.top_k_tolerance
    levels = check_levels(cfg.task.levels)
    forecasts = [oof.forecasts[m] for m in members]  # M arrays [n, Co, H]; never stacked (memory)

    def mix(w: np.ndarray, mode: str = "") -> np.ndarray:
        """sum_m w[..., m] f_m -> [n, Co, H] float64 (``median``: the median of each fold's members)."""
        if mode == "median":
            out = np.empty(forecasts[0].shape)
            for f in np.unique(oof.folds):
                rows = np.flatnonzero(oof.folds == f)
                out[rows] = median_forecast([x[rows] for x in forecasts], w[rows[0]] > 0)
            return out
        out = np.zeros(forecasts[0].shape)
        for k, f in enumerate(forecasts):
            out += w[..., k, None] * f
        return out

    router: Router | None = None
    oof_scores: dict[str, Any] = {}
    fallback = reason = None
    if len(members) == 1:
        static = {m: np.ones((len(out_ch), 1)) for m in STATIC_MODES}
        used = "best_single"
        if mode in ROUTER_MODES:
            fallback, reason = "best_single", f"only one member ({members[0]}) at H={horizon}; nothing to route"
            logger.warning("router %s: %s; using it alone", mode, reason)
        elif mode != "best_single":
            used = mode
        lofo = {m: np.ones((len(oof.starts), len(out_ch), 1)) for m in (*STATIC_MODES,)}
    else:
        data, names = stack_set(oof, members, periods, steps, gate, out_ch)
        router, lofo = fit_router(data, members, names, backtest_members, periods, horizon, context_length, steps,
                                  cfg.router, cfg.task.seed, tol)
        static = router.static_
        if mode in ROUTER_MODES:
            fallback = router.fallback_[mode]
            used = fallback or mode
            if fallback:
                reason = fallback_reason(router.check_, mode, fallback)
        else:
            used = mode
        for name, w in lofo.items():
            key = name if name in STATIC_MODES else f"router_{name}"
            oof_scores[key] = _scores(mix(w, name), oof.target, channels)
    combined = mix(lofo[used], used)
    oof_scores[COMBINED] = _scores(combined, oof.target, channels)
    ctx_out = oof.context[:, out_ch]
    bands = member_bands = None
    if levels:
        spread = member_spread(forecasts)
        bands = fit_bands(combined, oof.target, ctx_out, spread, oof.folds, levels, starts=oof.times, offset=offset)
        member_bands = {m: fit_bands(oof.forecasts[m], oof.target, ctx_out, spread, oof.folds, levels,
                                     bands.normaliser, oof.times, offset, bands.half_life) for m in members}
    deployment = Deployment(
        horizon=horizon, members=list(members), mode=mode, used=used, fallback=fallback, fallback_reason=reason,
        router=router, static=static, mask=gate.mask if router is None else router.mask, steps=steps,
        backtest_members=[m for m in backtest_members if m in members], bands=bands,
        member_bands=member_bands or {}, periods=tuple(periods), router_ratio=cfg.router.sound_ratio,
    )
    if router is None:
        deployment.backtest_members = []
    return deployment, oof_scores


def fallback_reason(check: dict[str, Any], mode: str, fallback: str) -> str:
    """One line: why the learned ``mode`` was not deployed and ``fallback`` was (from the router's check)."""
    c = check[mode]
    against = " / ".join(c["against"])
    text = (f"out of fold it scored MSE {c['oof_mse']:.4g} against {c['baseline_oof_mse']:.4g} for {against} "
            f"(needed: {100 * c['min_gain']:g} % lower")
    if c["check"] == "robust":
        text += f" and {c['min_t']:g} standard errors of its per-fold gain; it had {c['gain_t']:.2f})"
    elif c["check"] == "one_se":
        text += (f", on most folds and by {c['min_t']:g} standard errors; it won {c['folds_won']} of {c['folds']} "
                 f"folds by {c['gain_t']:.2f})")
    else:
        text += ")"
    beaten = c.get("beaten_by")
    return text + (f"; {beaten} did better" if beaten else "") + f"; {fallback} is used"


def _scores(forecast: np.ndarray, target: np.ndarray, channels: list[str]) -> dict[str, Any]:
    """MSE and MAE pooled and per output channel of forecasts [n, Co, H]."""
    diff = forecast.astype(np.float64) - target
    mse, mae = (diff**2).mean(axis=(0, 2)), np.abs(diff).mean(axis=(0, 2))
    return {"mse": float(mse.mean()), "mae": float(mae.mean()),
            "per_channel": {c: {"mse": float(a), "mae": float(b)} for c, a, b in zip(channels, mse, mae, strict=True)}}


__all__ = ["COMBINED", "Deployment", "deploy", "learn_deployment", "member_texts"]
