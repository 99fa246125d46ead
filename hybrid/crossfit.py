"""Cross-fitting: every member fitted at every stage, and its out-of-fold forecasts.

Stages of one member at one horizon (docs/architecture.md, "Data flow"):

1. **selection**: fitted on the training part; ``val`` chooses its
   hyper-parameters (a ridge strength, ARIMA's seasonal differencing, the
   core's epoch count and starting mix). Its test scores are the "train-only"
   numbers published deep models report.
2. **folds**: :meth:`frozen` copies (hyper-parameters fixed) fitted on each
   fold's training segments (the history without the fold and a purge gap):
   they forecast the fold's windows out of fold.
3. **refit**: a frozen copy fitted on train + validation (``task.refit``):
   the test forecasts.
4. **production**: a frozen copy fitted on every row the run was given:
   ``hybrid forecast``. The core keeps its refit here: its references on the
   test part's rows are not out of fold (cross-fitting stops at the history).

Hyper-parameters are chosen once on the validation part and then frozen:
folds refit parameters, not choices. That is a selection among a few
candidates, not a fit to the fold's targets; the leak test (a memorising
member) checks that no parameter of a fold fit ever saw its fold's targets.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hybrid.config import Config
from hybrid.dataset import Dataset
from hybrid.evaluation import scores_train_only
from hybrid.members import make_member, uses_references
from kernel.contract import Forecaster, Segment, TaskSpec
from kernel.protocol import FoldPlan, Split, gather_windows, windows
from kernel.references import PredictedReferences
from router.features import shift_context

logger = logging.getLogger(__name__)

PREDICT_CHUNK = 1024  # windows per predict call when forecasting many windows
FoldLookup = Callable[[np.ndarray], np.ndarray]  # window starts -> the fold of each


def predict_many(member: Forecaster, context: np.ndarray, horizon: int, references: np.ndarray | None = None
                 ) -> np.ndarray:
    """``member``'s forecasts [N, C, horizon] of ``context`` [N, C, L], in chunks of windows.

    ``references`` [N, C, R, H]: the reference forecasts of the same windows, for a member that reads them
    (every member accepts them; the others ignore them).
    """
    out = []
    for i in range(0, context.shape[0], PREDICT_CHUNK):
        part = np.ascontiguousarray(context[i : i + PREDICT_CHUNK])
        refs = None if references is None else references[i : i + PREDICT_CHUNK]
        out.append(member.predict(part, refs)[:, :, :horizon])
    return np.concatenate(out, axis=0) if out else np.zeros((0, context.shape[1], horizon), np.float32)


def forecast_deployed(deployment: Any, context: np.ndarray,
                      predict: Callable[[str, np.ndarray, np.ndarray | None], np.ndarray]
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every member of a stored combination's forecasts of ``context`` [N, C, L] (a member that reads references
    after those it reads) and the backtests of its backtest members, by ``predict(name, context, references)``."""
    fc: dict[str, np.ndarray] = {}
    for name in sorted(deployment.members, key=lambda n: n in deployment.references):  # stable: readers last
        refs = deployment.references.get(name, ())
        fc[name] = predict(name, context, np.stack([fc[r] for r in refs], axis=2) if refs else None)
    steps = deployment.steps
    bt = {n: predict(n, shift_context(context, steps), None)[:, :, :steps] for n in deployment.backtest_members}
    return fc, bt


def predict_by_fold(fitted: list[Forecaster], folds: np.ndarray, context: np.ndarray, horizon: int,
                    references: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold forecasts [n, C, horizon] of ``context`` [n, C, L]: window i by ``fitted[folds[i]]``, the fit
    that left its fold out (``references`` [n, C, R, H]: for a member that reads them)."""
    out = np.empty((len(folds), context.shape[1], horizon), dtype=np.float32)
    for k in np.unique(folds):
        rows = np.flatnonzero(folds == k)
        refs = None if references is None else references[rows]
        out[rows] = predict_many(fitted[int(k)], context[rows], horizon, refs)
    return out


def fit_in_one_pass(name: str, member: Forecaster, fold_of: FoldLookup, trains: list[list[Segment]], val: Any,
                    spec: TaskSpec, refit_on_trainval: bool) -> MemberFits:
    """Every stage of ``member`` from one ``fit_many`` call (one pass over the data for the linear family):
    ``trains`` is [train, fold 0 ... fold K-1, train+val, every row]; without ``refit_on_trainval`` the selection
    fit serves the test part."""
    t0 = time.perf_counter()
    selection, *rest = member.fit_many(trains, val, spec)
    k = len(trains) - 3
    refit = rest[k] if refit_on_trainval else selection
    seconds = {"all stages": round(time.perf_counter() - t0, 3)}
    return MemberFits(name, fold_of, selection, rest[:k], refit, rest[k + 1], seconds)


@dataclass
class MemberFits:
    """One member, fitted at every stage (see the module docstring).

    Attributes:
        name: the member's name.
        fold_of: window starts (rows of the dataset) -> the fold whose fit left them out.
        selection, folds, refit, production: the fitted members.
        seconds: fit seconds per stage.
        reference_names: the references it reads (the core), else ().
    """

    name: str
    fold_of: FoldLookup
    selection: Forecaster
    folds: list[Forecaster]
    refit: Forecaster
    production: Forecaster
    seconds: dict[str, float] = field(default_factory=dict)
    reference_names: tuple[str, ...] = ()
    fit: str = ""  # many series: how it was fitted (one fit per stage across every series)
    description_: dict[str, Any] | None = field(default=None, repr=False)  # kept by release()

    @property
    def reads_references(self) -> bool:
        """Whether the member reads references (the core): it forecasts after the members it reads."""
        return uses_references(self.selection)

    def stage(self, name: str) -> Forecaster:
        """The fit of stage ``name``: ``selection``, ``refit`` or ``production``."""
        return {"selection": self.selection, "refit": self.refit, "production": self.production}[name]

    def oof(self, starts: np.ndarray, context: np.ndarray, horizon: int, references: np.ndarray | None = None
            ) -> np.ndarray:
        """Out-of-fold forecasts [n, C, H] of the windows starting at ``starts`` (contexts [n, C, L] given).

        Each window is forecast by the fold fit that left its fold out. The
        context may be a shifted (backtest) context of the window: the same
        fold fit serves it, since the shifted target lies in the purge gap.
        """
        return predict_by_fold(self.folds, self.fold_of(starts), context, horizon, references)

    def oof_backtest(self, starts: np.ndarray, context: np.ndarray, horizon: int, steps: int) -> np.ndarray:
        """Out-of-fold forecasts of the backtest (shifted) contexts of the windows, their first ``steps`` steps."""
        return self.oof(starts, context, horizon)[:, :, :steps]

    def forecast(self, stage: str, context: np.ndarray, horizon: int, references: np.ndarray | None = None,
                 rows: slice = slice(None)) -> np.ndarray:
        """Stage ``stage``'s forecasts [n, C, horizon] of ``context`` [n, C, L] (``rows``: for a
        :class:`SeriesFits`, which forecast them when fitted)."""
        return predict_many(self.stage(stage), context, horizon, references)

    def backtest(self, stage: str, context: np.ndarray, horizon: int, steps: int, rows: slice = slice(None)
                 ) -> np.ndarray:
        """Stage ``stage``'s forecasts of the backtest (shifted) contexts, their first ``steps`` steps."""
        return predict_many(self.stage(stage), shift_context(context, steps), horizon)[:, :, :steps]

    def release(self) -> None:
        """Drop every fit but the production one (after its horizon is done), keeping its description."""
        self.description_ = self.describe()
        self.folds, self.selection, self.refit = [], self.production, self.production

    def describe(self) -> dict[str, Any]:
        """What the manifest keeps of the fits: choices and status per stage."""
        if self.description_ is not None:
            return self.description_
        out: dict[str, Any] = {"seconds": self.seconds, "folds": len(self.folds), **({"fit": self.fit} if self.fit else {})}
        for stage in ("selection", "refit", "production"):
            info = self.stage(stage).describe()  # the member's own fitted choices (kernel.contract.Member)
            if info:
                out[stage] = info
        if self.reference_names:
            out["references"] = list(self.reference_names)
        return out


def oof_references(fits: dict[str, MemberFits], names: tuple[str, ...], values: np.ndarray, context_length: int
                   ) -> PredictedReferences | None:
    """Out-of-fold forecasts of the reference members ``names`` for any historical window, by its start.

    Every reference member must share one fold plan (the classical plan);
    a window's references come from the fold fits that left its fold out.
    """
    names = tuple(n for n in names if n in fits)
    if not names:
        return None
    first = fits[names[0]]
    fitted = [{n: fits[n].folds[k] for n in names} for k in range(len(first.folds))]
    return PredictedReferences(names, values, context_length, fitted, first.fold_of)


def fit_member_stages(
    name: str,
    cfg: Config,
    data: Dataset,
    spec: TaskSpec,
    plans: Sequence[FoldPlan],
    references: PredictedReferences | None = None,
    progress: Callable[[str], None] | None = None,
) -> MemberFits:
    """Fit ``name`` at every stage for ``spec.horizon`` across every series of ``data`` (see the module docstring).

    Args:
        name: registry name.
        cfg: the run's config.
        data: the run's data (one series or many: a fit is trained on the windows of every series).
        spec: the task (horizon, periods, seed, ...); ``references`` is added
            for members that read them.
        plans: the fold plan of this member, one per series.
        references: out-of-fold reference forecasts (for the core).
        progress: called with a short label before each stage.

    Returns:
        The fitted stages.
    """
    say = progress or (lambda _label: None)
    L, H = spec.context_length, spec.horizon
    member = make_member(name, cfg)
    reads = uses_references(member)
    spec = replace(spec, references=references if reads else None)
    seconds: dict[str, float] = {}
    n_folds = plans[0].n_folds
    fold_of = functools.partial(data.fold_of, plans=plans)

    refit_on_trainval = cfg.task.refit == "train+val"
    if member.supports_fit_many:  # one pass over the data for every stage (the linear family)
        say("every stage in one pass")
        trains = [data.segments("train"), *(data.fold_segments(k, L + H, plans) for k in range(n_folds)),
                  data.segments("trainval"), data.segments("all")]
        return fit_in_one_pass(name, member, fold_of, trains, data.validation(), spec, refit_on_trainval)

    t0 = time.perf_counter()
    say("selection")
    later = n_folds + int(refit_on_trainval) + int(not reads)  # frozen fits below that train its chosen budget
    selection = member.fit(data.segments("train"), data.validation(), replace(spec, later_fits=later))
    seconds["selection"] = round(time.perf_counter() - t0, 3)

    folds = []
    t0 = time.perf_counter()
    for k in range(n_folds):
        say(f"fold {k + 1}/{n_folds}")
        folds.append(selection.frozen().fit(data.fold_segments(k, L + H, plans), None, spec))
    seconds["folds"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    if refit_on_trainval:
        say("refit on train+val")
        refit = selection.frozen().fit(data.segments("trainval"), None, spec)
    else:
        refit = selection
    seconds["refit"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    if reads:
        production = refit  # references on the test rows would not be out of fold: keep the history fit
    else:
        say("production fit on all rows")
        production = selection.frozen().fit(data.segments("all"), None, spec)
    seconds["production"] = round(time.perf_counter() - t0, 3)
    ref_names = selection.reference_names() if reads else ()
    return MemberFits(name, fold_of, selection, folds, refit, production, seconds, ref_names)


# ----------------------------------------------------------------------------- one fit per series


@dataclass
class SeriesJob:
    """One series' work for a member fitted series by series (what a worker receives)."""

    values: np.ndarray  # [T, C] scaled
    split: Split
    plan: FoldPlan
    starts: np.ndarray  # out-of-fold window starts (rows of the series)


def _with_backtest(member: Forecaster, context: np.ndarray, horizon: int, steps: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A member's forecasts of ``context`` and of its backtest (shifted) context."""
    return (predict_many(member, context, horizon),
            predict_many(member, shift_context(context, steps), horizon)[:, :, :steps])


def series_task(job: SeriesJob, name: str, cfg: Config, spec: TaskSpec, steps: int) -> dict[str, Any]:
    """Every stage of a member on one series; returns float32 forecasts and the production fit only.

    Keys: ``oof`` / ``oof_bt`` (the out-of-fold windows ``job.starts``),
    ``refit`` / ``refit_bt`` (every test window), ``selection`` (the same by
    the train-only fit, when ``stack.train_only`` scores it), ``production``
    / ``production_bt`` (the window ending at the series' end), ``fit`` (the
    production fit, stored for forecasts from new data), ``fallback`` (the
    selection fit fell back to seasonal naive), ``fold_fallbacks`` (how many
    fold fits did: short series leave folds few training points).
    """
    L, H = spec.context_length, spec.horizon
    y, sp, plan = job.values, job.split, job.plan
    selection = make_member(name, cfg).fit([Segment(y[: sp.train_end])], Segment(y[sp.val_start : sp.val_end]), spec)
    folds = [selection.frozen().fit(plan.train_segments(k, y, L + H), None, spec) for k in range(plan.n_folds)]
    refit = selection.frozen().fit([Segment(y[: sp.val_end])], None, spec) if cfg.task.refit == "train+val" else selection
    production = selection.frozen().fit([Segment(y)], None, spec)
    ctx = np.ascontiguousarray(gather_windows(y, job.starts, L, H)[0])
    fold_of = plan.fold_of(job.starts)
    test_ctx = np.ascontiguousarray(windows(y[sp.test_start : sp.test_end], L, H)[0])

    def fell_back(member: Forecaster) -> bool:
        return member.describe().get("channel_status", [{}])[0].get("status", "ok") != "ok"

    out = {"oof": predict_by_fold(folds, fold_of, ctx, H),
           "oof_bt": np.ascontiguousarray(predict_by_fold(folds, fold_of, shift_context(ctx, steps), H)[:, :, :steps]),
           "selection": predict_many(selection, test_ctx, H) if scores_train_only(cfg, False) else None,
           "fit": production, "fallback": fell_back(selection), "fold_fallbacks": sum(map(fell_back, folds))}
    out["refit"], out["refit_bt"] = _with_backtest(refit, test_ctx, H, steps)
    out["production"], out["production_bt"] = _with_backtest(production, np.ascontiguousarray(y[-L:].T[None]), H, steps)
    return out


@dataclass
class SeriesFits:
    """A member fitted series by series on many series: its tasks' forecasts (the fits stay in the tasks, but
    for the production fit of each series, which the run stores).

    ``forecast`` and ``backtest`` serve the same calls as :class:`MemberFits`': the stage's forecasts of the
    test windows (``refit``, ``selection``) or of each series' last window (``production``), by rows.
    """

    name: str
    fit: str
    n_folds: int
    results: dict[str, np.ndarray]
    series_fits: list[Forecaster]
    seconds: dict[str, float] = field(default_factory=dict)
    reference_names: tuple[str, ...] = ()
    folds: tuple = ()  # no fold fit is kept: it cannot serve references of windows it was not asked for
    reads_references: bool = False

    @classmethod
    def from_tasks(cls, name: str, res: list[dict[str, Any]], n_folds: int) -> SeriesFits:
        n_fb, n_fold_fb = sum(r["fallback"] for r in res), sum(r["fold_fallbacks"] for r in res)
        keys = ("oof", "oof_bt", "refit", "refit_bt", "selection", "production", "production_bt")
        results = {k: np.concatenate([r[k] for r in res]) for k in keys if res[0][k] is not None}
        return cls(name, f"fitted per series ({len(res)} tasks); {n_fb} fell back to seasonal naive, and {n_fold_fb} "
                   f"of {len(res) * n_folds} fold fits", n_folds, results, [r["fit"] for r in res])

    @property
    def production(self) -> list[Forecaster]:
        """What the run stores (:func:`hybrid.artifacts.store_fits`): one production fit per series."""
        return self.series_fits

    def oof(self, starts: np.ndarray, context: np.ndarray, horizon: int, references: np.ndarray | None = None
            ) -> np.ndarray:
        return self.results["oof"]

    def oof_backtest(self, starts: np.ndarray, context: np.ndarray, horizon: int, steps: int) -> np.ndarray:
        return self.results["oof_bt"]

    def forecast(self, stage: str, context: np.ndarray, horizon: int, references: np.ndarray | None = None,
                 rows: slice = slice(None)) -> np.ndarray:
        return self.results[stage][rows]

    def backtest(self, stage: str, context: np.ndarray, horizon: int, steps: int, rows: slice = slice(None)
                 ) -> np.ndarray:
        return self.results[f"{stage}_bt"][rows]

    def release(self) -> None:
        self.results = {}

    def describe(self) -> dict[str, Any]:
        return {"folds": self.n_folds, "seconds": self.seconds, "fit": self.fit}
