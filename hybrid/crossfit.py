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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hybrid.config import Config
from hybrid.members import make_member, uses_references
from kernel.contract import Forecaster, Segment, TaskSpec
from kernel.data import Series
from kernel.periods import Periods
from kernel.protocol import FoldPlan, Scaler, Split, gather_windows
from kernel.references import PredictedReferences

logger = logging.getLogger(__name__)

PREDICT_CHUNK = 1024  # windows per predict call when forecasting many windows


@dataclass
class RunData:
    """The series of one run, scaled, split and described.

    Attributes:
        series: the validated series (original units).
        split: the train / validation / test borders.
        scaler: per-channel scaling fitted on the training part.
        scaled: [T, C] float32, every row scaled.
        periods: detected on the training part.
        out_ch: the output channels (scored and combined).
    """

    series: Series
    split: Split
    scaler: Scaler
    scaled: np.ndarray
    periods: Periods
    out_ch: list[int]

    @property
    def history_end(self) -> int:
        return self.split.val_end

    def segment(self, part: str) -> Segment:
        """``train``, ``val``, ``trainval`` (the history), ``test`` or ``all`` as a placed segment."""
        s = self.split
        start, end = {
            "train": (s.train_start, s.train_end),
            "val": (s.val_start, s.val_end),
            "trainval": (s.train_start, s.val_end),
            "test": (s.test_start, s.test_end),
            "all": (0, self.scaled.shape[0]),
        }[part]
        return Segment(self.scaled[start:end], start)


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


def fit_in_one_pass(name: str, member: Forecaster, plan: FoldPlan, trains: list[list[Segment]], val: Any,
                    spec: TaskSpec, refit_on_trainval: bool) -> MemberFits:
    """Every stage of ``member`` from one ``fit_many`` call (one pass over the data for the linear family; the
    others fit the first and frozen copies on the rest): ``trains`` is [train, fold 0 ... fold K-1 of ``plan``,
    train+val, every row]; without ``refit_on_trainval`` the selection fit serves the test part."""
    t0 = time.perf_counter()
    selection, *rest = member.fit_many(trains, val, spec)
    k = plan.n_folds
    refit = rest[k] if refit_on_trainval else selection
    seconds = {"all stages": round(time.perf_counter() - t0, 3)}
    return MemberFits(name, plan, selection, rest[:k], refit, rest[k + 1], seconds)


@dataclass
class MemberFits:
    """One member, fitted at every stage (see the module docstring).

    Attributes:
        name: the member's name.
        plan: the fold plan its fold fits follow.
        selection, folds, refit, production: the fitted members.
        seconds: fit seconds per stage.
        reference_names: the references it reads (the core), else ().
    """

    name: str
    plan: FoldPlan
    selection: Forecaster
    folds: list[Forecaster]
    refit: Forecaster
    production: Forecaster
    seconds: dict[str, float] = field(default_factory=dict)
    reference_names: tuple[str, ...] = ()
    description_: dict[str, Any] | None = field(default=None, repr=False)  # kept by release()

    @property
    def reads_references(self) -> bool:
        return bool(self.reference_names)

    def stage(self, name: str) -> Forecaster:
        """The fit of stage ``name``: ``selection``, ``refit`` or ``production``."""
        return {"selection": self.selection, "refit": self.refit, "production": self.production}[name]

    def oof(self, values: np.ndarray, starts: np.ndarray, context: np.ndarray, horizon: int,
            references: np.ndarray | None = None) -> np.ndarray:
        """Out-of-fold forecasts [n, C, H] of the windows starting at ``starts`` (contexts [n, C, L] given).

        Each window is forecast by the fold fit that left its fold out. The
        context may be a shifted (backtest) context of the window: the same
        fold fit serves it, since the shifted target lies in the purge gap.
        """
        return predict_by_fold(self.folds, self.plan.fold_of(starts), context, horizon, references)

    def release(self) -> None:
        """Drop every fit but the production one (after its horizon is done), keeping its description."""
        self.description_ = self.describe()
        self.folds, self.selection, self.refit = [], self.production, self.production

    def describe(self) -> dict[str, Any]:
        """What the manifest keeps of the fits: choices and status per stage."""
        if self.description_ is not None:
            return self.description_
        out: dict[str, Any] = {"seconds": self.seconds, "folds": len(self.folds)}
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
    plan = fits[names[0]].plan
    n_folds = plan.n_folds
    fitted = [{n: fits[n].folds[k] for n in names} for k in range(n_folds)]
    return PredictedReferences(names, values, context_length, fitted, plan.fold_of)


def stage_references(fits: dict[str, MemberFits], names: tuple[str, ...], stage: str, context: np.ndarray,
                     horizon: int) -> np.ndarray | None:
    """The reference members' ``stage`` fits' forecasts of ``context`` [N, C, L] -> [N, C, R, H] (None: no names)."""
    if not names:
        return None
    return np.stack([predict_many(fits[n].stage(stage), context, horizon) for n in names], axis=2)


def fit_member_stages(
    name: str,
    cfg: Config,
    data: RunData,
    spec: TaskSpec,
    plan: FoldPlan,
    references: PredictedReferences | None = None,
    progress: Callable[[str], None] | None = None,
) -> MemberFits:
    """Fit ``name`` at every stage for ``spec.horizon`` (see the module docstring).

    Args:
        name: registry name.
        cfg: the run's config.
        data: the run's data.
        spec: the task (horizon, periods, seed, ...); ``references`` is added
            for members that read them.
        plan: the fold plan of this member.
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

    refit_on_trainval = cfg.task.refit == "train+val"
    if member.supports_fit_many:  # one pass over the data for every stage (the linear family)
        say("every stage in one pass")
        trains = [[data.segment("train")], *(plan.train_segments(k, data.scaled, L + H) for k in range(plan.n_folds)),
                  [data.segment("trainval")], [data.segment("all")]]
        return fit_in_one_pass(name, member, plan, trains, data.segment("val"), spec, refit_on_trainval)

    t0 = time.perf_counter()
    say("selection")
    selection = member.fit([data.segment("train")], data.segment("val"), spec)
    seconds["selection"] = round(time.perf_counter() - t0, 3)

    folds = []
    t0 = time.perf_counter()
    for k in range(plan.n_folds):
        say(f"fold {k + 1}/{plan.n_folds}")
        folds.append(selection.frozen().fit(plan.train_segments(k, data.scaled, L + H), None, spec))
    seconds["folds"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    if refit_on_trainval:
        say("refit on train+val")
        refit = selection.frozen().fit([data.segment("trainval")], None, spec)
    else:
        refit = selection
    seconds["refit"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    if reads:
        production = refit  # references on the test rows would not be out of fold: keep the history fit
    else:
        say("production fit on all rows")
        production = selection.frozen().fit([data.segment("all")], None, spec)
    seconds["production"] = round(time.perf_counter() - t0, 3)
    ref_names = selection.reference_names() if reads else ()
    return MemberFits(name, plan, selection, folds, refit, production, seconds, ref_names)


def window_contexts(values: np.ndarray, starts: np.ndarray, context_length: int, horizon: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Contexts [n, C, L] and targets [n, C, H] of the windows starting at ``starts`` (copies)."""
    ctx, tgt = gather_windows(values, starts, context_length, horizon)
    return np.ascontiguousarray(ctx), np.ascontiguousarray(tgt)
