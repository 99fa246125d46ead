"""Plumbing shared by members fitted one channel at a time (ARIMA, ETS).

Channels are fitted in parallel through :func:`kernel.parallel.parallel_map`;
a channel that cannot be fitted falls back to seasonal naive, visibly (a
warning and its ``channel_status_`` entry), and never stops the run.
Subclasses provide ``_forecast_channel(model, context [N, L]) -> [N, H]``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

import numpy as np

from baselines.naive import SeasonalNaive
from kernel.contract import Member, Segment, TaskSpec, check_context, not_fitted
from kernel.parallel import parallel_map

logger = logging.getLogger(__name__)


class ChannelFallback(Exception):
    """A channel the model cannot fit; it gets seasonal naive instead."""


def guarded_fit(
    channel: int,
    y: np.ndarray,
    max_points: int,
    body: Callable[[np.ndarray, dict[str, Any]], None],
    status: dict[str, Any],
    gaps: bool = False,
) -> dict[str, Any]:
    """Fit one channel and never raise.

    Keeps the last ``max_points`` values, rejects non-finite and constant
    channels (``gaps``: NaN marks rows between training segments, and only
    the observed values are checked), then runs ``body(y, status)``, which fills ``status`` (with
    "model") or raises :class:`ChannelFallback`. Any failure becomes a
    "fallback" status with its reason; ``fit_seconds`` is always set.
    """
    start = time.perf_counter()
    status = {"channel": channel, "status": "ok", "reason": "", **status}
    try:
        y = np.asarray(y, dtype=np.float64)[-max_points:]
        observed = y[~np.isnan(y)] if gaps else y
        if not np.isfinite(observed).all():
            raise ChannelFallback("non-finite values in the training part")
        if observed.std() < 1e-8 * max(1.0, float(np.abs(observed).mean())):
            raise ChannelFallback("constant channel")
        body(y, status)
    except ChannelFallback as exc:
        status.update(status="fallback", reason=str(exc), model=None)
    except Exception as exc:  # noqa: BLE001 - a channel must never stop the run
        status.update(status="fallback", reason=f"{type(exc).__name__}: {exc}", model=None)
    status["fit_seconds"] = round(time.perf_counter() - start, 3)
    return status


FALLBACK = "fallback"  # the fixed choice of a channel that fell back in the fit a refit copies
POINTS_PER_PARAMETER = 3  # a refit of a fixed form needs this many observations per parameter it estimates ...
MIN_REFIT_POINTS = 20  # ... and never fewer than this


def refit_points(n_parameters: int, lost: int = 0) -> int:
    """Observations a refit of a fixed form needs: enough per estimated parameter, plus those differencing loses.

    A fold fit has a hole where its fold lies and sees less data than the
    selection fit that chose the form; holding it to the selection's
    minimum would make it fall back to seasonal naive while the refit (more
    data) fits the real model, so the out-of-fold forecasts would describe
    a member the deployment never meets.
    """
    return max(MIN_REFIT_POINTS, POINTS_PER_PARAMETER * n_parameters) + lost


class PerChannelMember(Member):
    """Base of members that hold one fitted model (or None) per channel (``per_series``: a local model).

    ``fixed_choices`` (set by :meth:`frozen`): per channel, the choice a refit
    keeps (None: choose again; ``FALLBACK``: seasonal naive again).
    """

    name = "per_channel"
    per_series = True
    fixed_choices: list[Any] | None = None

    def _choice(self, model: Any) -> Any:
        raise NotImplementedError

    def frozen(self) -> Self:
        """An unfitted copy that refits each channel's parameters with the orders / form this fit chose."""
        if not hasattr(self, "models_"):
            raise not_fitted(self.name)
        twin = copy.copy(self)
        for attr in [a for a in vars(twin) if a.endswith("_")]:
            delattr(twin, attr)
        twin.fixed_choices = [FALLBACK if m is None else self._choice(m) for m in self.models_]
        return twin

    def _fixed(self, channel: int) -> Any:
        return None if self.fixed_choices is None else self.fixed_choices[channel]

    def _fit_channels(
        self,
        fit_one: Callable[..., dict[str, Any]],
        tasks: list[tuple],
        train: Sequence[Segment],
        spec: TaskSpec,
        fallback_period: int | None,
        note: str = "",
    ) -> None:
        """Fit every channel; each result is a status dict with an optional "model"."""
        if self.fixed_choices is not None and len(self.fixed_choices) != len(tasks):
            raise ValueError(f"{self.name}: the frozen copy was fitted on {len(self.fixed_choices)} channels; "
                             f"got {len(tasks)}.")
        results = parallel_map(fit_one, tasks, n_jobs=spec.n_jobs, backend=spec.backend,
                               dask_address=spec.dask_address, desc=f"{self.name}: fit {len(tasks)} channels")
        self.models_: list[Any | None] = [r.pop("model", None) for r in results]
        self.channel_status_: list[dict[str, Any]] = results
        for r in results:
            if note:
                r["reason"] = "; ".join(filter(None, [note, r["reason"]]))
            if r["status"] != "ok":
                logger.warning("%s: channel %d falls back to seasonal naive: %s", self.name, r["channel"], r["reason"])
        self.fallback_ = SeasonalNaive(period=fallback_period).fit(train, None, spec)
        self.context_length_ = spec.context_length
        self.horizon_ = spec.horizon

    def _forecast_channel(self, model: Any, context: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Each channel's status ("ok" or "fallback", its reason, its model's choices; {} before fit)."""
        return {"channel_status": self.channel_status_} if hasattr(self, "channel_status_") else {}

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        """context [N, C, L] (scaled) -> forecast [N, C, H] float32."""
        if not hasattr(self, "models_"):
            raise not_fitted(self.name)
        context = check_context(context, self.context_length_)
        n_windows, n_channels, _ = context.shape
        if n_channels != len(self.models_):
            raise ValueError(f"`context` has {n_channels} channels; the member was fitted on {len(self.models_)}.")
        out = np.empty((n_windows, n_channels, self.horizon_), dtype=np.float32)
        for j, model in enumerate(self.models_):
            if model is None:
                out[:, j] = self.fallback_.predict(context[:, j : j + 1])[:, 0]
            else:
                out[:, j] = self._forecast_channel(model, context[:, j])
        return out
