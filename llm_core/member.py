"""The ``timellm`` pipeline member: fit, predict, save, load.

Channel independence: every channel of every window is one sample [L] -> [H].

Fusion (docs/architecture.md, "The Time-LLM core"): the member reads the forecasts of
classical reference members. It does not fit or own them: while fitting, the
pipeline hands it ``spec.references``, which gives any historical window's
reference forecasts from members fitted without that window's target
(cross-fitted, out of fold), so the core never learns to correct forecasts
that are better than what it will see later; at prediction time the caller
passes the references' forecasts of the windows (``predict(context,
references)``). They enter the core as prompt text (``core.classical_text``)
and as reference tokens (``core.references``).

Training (``llm_core.trainer``) uses AdamW on the trainable parts only, a
one-cycle or cosine schedule, gradient clipping and early stopping on the
validation windows (the best state is kept). The test part is never seen.
With ``core.budget: auto`` the fit with validation (the selection fit)
climbs a ladder of budgets first (``TimeLLM._climb``): a rung-0 budget per
variant (backbone, fused or plain, patch), the untrained start when no
variant beats it, else the best variant at growing samples per epoch while
validation improves.
:meth:`TimeLLM.frozen` gives a copy that trains the chosen variant, samples
per epoch and number of epochs from the chosen start, without validation
(refits on folds and train + val).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from kernel.contract import Member, Segment, TaskSpec, as_segments, check_context, not_fitted
from kernel.distributed import local_rank, local_world_size, world_size
from kernel.errors import HybridInputError
from kernel.protocol import WindowSet
from llm_core import ddp
from llm_core.backbone import load_backbone, word_token_ids
from llm_core.config import CoreConfig, ladder_variant
from llm_core.layers import TimeLLMNet, count_parameters, revin_stats
from llm_core.prompt import PromptCache, PromptEncoder, SampleCache
from llm_core.trainer import Samples, Trainer, TrainResult

log = logging.getLogger(__name__)

CPU_MAX_TRAIN = 1024  # auto: training samples per epoch on CPU
CPU_MAX_VAL = 1024  # auto: validation samples on CPU
CPU_VAL_STRIDE = 8  # auto: step between validation windows on CPU
CPU_MAX_MINUTES = 15.0  # auto: core.max_minutes on CPU, the whole cross-fitted core (no limit on a GPU)
PROMPT_MARGIN = 4  # extra prompt tokens over the longest measured prompt
PROMPT_PROBE = 512  # training samples whose prompts are measured for the prompt length
WEIGHTS_FILE, STATE_FILE = "timellm.safetensors", "timellm.json"
MIX_INIT_SAMPLES = 4096  # training samples for the least-squares starting mix of the references
MIX_CHOICE_SAMPLES = 8192  # validation samples (evenly spread) that choose the starting mix
LEAST_SQUARES = "least-squares mix"
EXPLAIN_PROTOTYPES, EXPLAIN_WORDS = 3, 3  # explain(): most-attended prototypes, nearest words each


def clamp_patch(period: int, context_length: int) -> int:
    """Patch length tied to a period: at least 4 steps, at most L // 8."""
    return int(min(max(period, 4), max(4, context_length // 8)))


def _spread(pool: np.ndarray, most: int) -> np.ndarray:
    """At most ``most`` entries of ``pool``, evenly spread (all when ``most`` <= 0)."""
    if 0 < most < len(pool):
        return pool[np.linspace(0, len(pool) - 1, most).round().astype(np.int64)]
    return pool


def _core_config(stored: dict[str, Any]) -> CoreConfig:
    """A :class:`CoreConfig` from its saved JSON form (lists back to tuples; keys it lacks take their defaults)."""
    return CoreConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})


def _gain(before: float, after: float) -> float:
    """Relative improvement of a validation loss from ``before`` to ``after`` (positive: ``after`` is lower)."""
    if not math.isfinite(before):
        return math.inf if math.isfinite(after) else 0.0
    if before <= 0:
        return math.inf if after < before else 0.0
    return (before - after) / before


def _trainable_copy(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the network's trainable state (the frozen backbone left out)."""
    return {k: v.detach().clone() for k, v in net.trainable_state().items()}


@dataclass
class _Plan:
    """What a fit trains on, settled before the network is built.

    Attributes:
        train_set, val_set: the windows (no validation: None).
        pool, vpool: training and validation sample indices.
        per_epoch: the configured samples per epoch (resolved).
        rng: the fit's generator (prompt probe, starting mix and sample order of a fixed-budget fit).
        ladder: whether the fit climbs the ladder of ``core.budget: auto``.
    """

    train_set: WindowSet
    val_set: WindowSet | None
    pool: np.ndarray
    vpool: np.ndarray | None
    per_epoch: int
    rng: np.random.Generator
    ladder: bool


@dataclass
class _Prepared:
    """A built core's samples and untrained start (``start_val``: its validation loss, None without a start mix)."""

    train: Samples
    val: Samples | None
    start_val: float | None
    names: tuple[str, ...]
    train_refs: SampleCache | None
    val_refs: SampleCache | None


@dataclass
class _Candidate:
    """One variant of the ladder: a set-up member, its budget at the last rung and its best rung so far.

    A variant with an untrained start (``prep.start_val``: the references' mix) is judged after a few steps off
    it; one without (plain) starts from scratch, so each of its rungs trains the whole early-stopped schedule.
    """

    label: str
    member: TimeLLM | None
    plan: _Plan
    prep: _Prepared
    start_state: dict[str, torch.Tensor]
    samples: int = 0
    epochs: int = 0
    best_val: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    best_record: dict[str, Any] = field(default_factory=dict)
    best_result: TrainResult | None = None
    last_val: float = math.inf
    last_seconds: float = 0.0
    last_epochs: int = 0  # epochs the last rung ran (early stopping or the deadline may end it before ``epochs``)
    steps: int = 0


class TimeLLM(Member):
    """Time-LLM core as a forecaster (see docs/architecture.md, "The Time-LLM core").

    Args:
        config: the ``core`` config section.
        period: a period expert's period (``timellm@24``): the patch length is
            tied to it and the stride is half of it.

    Fitted attributes: ``patch_len_``, ``stride_``, ``prompt_len_``,
    ``n_trainable_`` / ``n_frozen_`` (parameter counts), ``history_`` (loss
    per epoch), ``best_epoch_``, ``fit_seconds_``, ``reference_names_`` (the
    references read, in order), ``use_references_`` / ``use_classical_text_``,
    ``start_mix_`` (how the starting mix was chosen), ``steps_`` (optimiser
    steps the fit took, every rung included), ``config_`` (the config the
    network was built and trained with: ``config`` itself, or after the
    ladder the winning variant with ``budget: fixed``). After the ladder of
    ``core.budget: auto`` also ``ladder_`` (one record per rung and variant:
    ``variant``, ``rung``, ``samples_per_epoch``, ``schedule_epochs``,
    ``epochs`` trained, ``best_epoch``, ``best_val_loss``, ``seconds``) and
    ``ladder_winner_`` (the variant and rung kept, its best epoch and
    validation loss, and ``why``).
    """

    name = "timellm"
    horizon_agnostic = False
    uses_references = True
    stores_itself = True  # save(dir) / load(dir): JSON settings and safetensors weights

    def __init__(self, config: CoreConfig | None = None, period: int | None = None) -> None:
        self.config = config or CoreConfig()
        self.period = period
        self.fixed_epochs: int | None = None  # set by frozen(): train exactly this many epochs, no validation
        self.fixed_start: str | None = None  # set by frozen(): the starting mix chosen before

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        want = self.config.device
        if want not in ("auto", "cpu", "cuda"):
            raise HybridInputError(f"core.device must be auto, cpu or cuda; got {want!r}.")
        if want == "cuda" and not torch.cuda.is_available():
            raise HybridInputError("core.device is cuda but no CUDA device is available; use auto or cpu.")
        if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
            return torch.device("cuda", local_rank()) if world_size() > 1 else torch.device("cuda")  # torchrun: GPU per rank
        return torch.device("cpu")

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on CUDA (and on CPU with ``core.cpu_bf16``), else nothing."""
        if self.device_.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.config.cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def _threads(self) -> None:
        if self.device_.type == "cpu":
            # torchrun: the processes on this machine share its cores
            torch.set_num_threads(self.config.num_threads or max(1, (os.cpu_count() or 1) // local_world_size()))

    def _resolve_patch(self, periods: tuple[int, ...], context_length: int) -> tuple[int, int]:
        cfg = self.config
        if self.period is not None:
            p = clamp_patch(self.period, context_length)
            return p, max(1, p // 2)
        if cfg.patch_len == "auto":
            if not periods:
                log.warning("core.patch_len auto: no period was detected; using patch length 16, stride 8.")
                return 16, 8
            p = clamp_patch(periods[0], context_length)
            return p, max(1, p // 2)
        if isinstance(cfg.patch_len, str):
            raise HybridInputError(f"core.patch_len must be a positive integer or 'auto'; got {cfg.patch_len!r}.")
        if cfg.patch_len < 1 or cfg.stride < 1:
            raise HybridInputError(
                f"core.patch_len and core.stride must be positive integers; got {cfg.patch_len} and {cfg.stride}.")
        if cfg.patch_len > max(4, context_length // 2):  # a short context: fewer than two patches would fit
            p = clamp_patch(cfg.patch_len, context_length)
            log.warning("core.patch_len %d does not fit context_length %d; using patch length %d, stride %d.",
                        cfg.patch_len, context_length, p, max(1, p // 2))
            return p, max(1, p // 2)
        return int(cfg.patch_len), int(cfg.stride)

    def _build(self) -> None:
        """Backbone, prompt encoder, network and trainer from the fitted settings (``config_``)."""
        cfg = self.config_
        if cfg.backbone == "none":
            backbone, vocab, self.tokenizer_, d_llm = None, None, None, 0
        else:
            bb = load_backbone(cfg.backbone, cfg.llm_layers)
            backbone, self.tokenizer_, d_llm = bb.model, bb.tokenizer, bb.hidden_size
            self.llm_layers_ = bb.n_layers
            vocab = word_token_ids(bb.tokenizer, cfg.vocab_size)
        self.net_ = TimeLLMNet(
            context_length=self.context_length_,
            horizon=self.horizon_,
            patch_len=self.patch_len_,
            stride=self.stride_,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            d_keys=cfg.d_keys,
            num_prototypes=cfg.num_prototypes,
            d_ff=cfg.d_ff,
            dropout=cfg.dropout,
            attn_dropout=cfg.attn_dropout,
            backbone=backbone,
            d_llm=d_llm,
            vocab_ids=vocab,
            n_references=len(self.reference_names_) if self.use_references_ else 0,
            reference_skip=bool(cfg.reference_skip) and self.use_references_,
        ).to(self.device_)
        self.n_trainable_, self.n_frozen_ = count_parameters(self.net_)
        self.encoder_ = None
        if self.use_prompt_:
            self.encoder_ = PromptEncoder(
                self.tokenizer_, self.description_, self.context_length_, self.horizon_, cfg.top_k_lags,
                cfg.max_description_tokens, self.prompt_len_,
                self.reference_names_ if self.use_classical_text_ else (),
            )
        self.trainer_ = Trainer(self.net_, cfg, self.device_, self.autocast)

    def _settle_references(self, spec: TaskSpec) -> None:
        """Which references the core reads: ``core.reference_members`` that ``spec.references`` provides."""
        cfg = self.config
        wanted = tuple(cfg.reference_members) if (cfg.references or cfg.classical_text) else ()
        if len(set(wanted)) != len(wanted):
            raise HybridInputError(f"core.reference_members lists a member twice: {list(wanted)}.")
        source = spec.references
        given = tuple(source.names) if source is not None else ()
        if wanted and not given:
            log.warning("timellm: core.reference_members %s are asked for but no reference forecasts were handed "
                        "over; the core runs without references.", list(wanted))
        self.reference_names_ = tuple(n for n in given if n in wanted) if wanted else ()
        missing = [n for n in wanted if n not in self.reference_names_]
        if missing and given:
            log.warning("timellm: reference members %s are not available (failed or gated); the core reads %s.",
                        missing, list(self.reference_names_))
        self.reference_missing_ = missing
        self.use_references_ = bool(cfg.references) and bool(self.reference_names_)
        self.use_classical_text_ = bool(cfg.classical_text) and self.use_prompt_ and bool(self.reference_names_)
        if not (self.use_references_ or self.use_classical_text_):
            self.reference_names_ = ()

    def _reference_cache(self, spec: TaskSpec, starts: np.ndarray) -> SampleCache | None:
        """Reference forecasts [R, H] per sample of windows starting at ``starts`` (in the series)."""
        if not self.reference_names_:
            return None
        source, names, H = spec.references, self.reference_names_, self.horizon_
        assert source is not None
        pick = [source.names.index(n) for n in names]

        def compute(w: np.ndarray) -> np.ndarray:
            return source.forecasts(starts[w], H)[:, :, pick]  # [n, C, R, H]

        return SampleCache(compute, len(starts), self.n_channels_, (len(names), H))

    # ------------------------------------------------------------------ fit
    def fit(self, train: np.ndarray | Sequence[Segment], val: np.ndarray | Segment | None, spec: TaskSpec) -> Self:
        """Train on scaled ``train`` (array [T, C] or segments); early-stop on ``val``.

        With ``core.budget: auto`` and validation windows, the budget is found
        on ``val`` by the ladder (:meth:`_climb`); with ``fixed`` the fit
        trains up to ``core.epochs`` of ``core.max_train_windows`` samples. A
        frozen copy (:meth:`frozen`) trains its fixed number of epochs and
        ignores ``val``.

        Returns:
            self, fitted.
        """
        return self._fit(train, val, spec, self.fixed_epochs)

    def build(self, train: np.ndarray | Sequence[Segment], spec: TaskSpec) -> Self:
        """Set the core up for ``train`` and ``spec`` exactly as :meth:`fit` does, and train no epoch.

        The backbone is loaded, the patch, prompt and reference settings are
        chosen and the network holds the weights training would start from
        (with reference skip: the least-squares mix of the references, head
        at zero). The member can :meth:`predict` with them. For benchmarks
        and inspection (``benchmarks/core_speed.py`` times steps of it).

        Returns:
            self, built (``best_epoch_`` 0, empty ``history_``).
        """
        return self._fit(train, None, spec, stop_after=0)

    def _fit(self, train: np.ndarray | Sequence[Segment], val: np.ndarray | Segment | None, spec: TaskSpec,
             stop_after: int | None) -> Self:
        """:meth:`fit` with ``stop_after`` epochs and no validation (None: the budget of ``core.budget``)."""
        start = time.perf_counter()
        for stale in ("ladder_", "ladder_winner_"):
            self.__dict__.pop(stale, None)
        plan = self._plan(train, val, spec, stop_after)
        if plan.ladder:
            self._climb(plan, train, val, spec, start)
        else:
            prep = self._prepare(plan, spec, plan.rng)
            result = self.trainer_.fit(prep.train, plan.pool, plan.per_epoch, plan.rng, prep.val, plan.vpool,
                                       stop_after=stop_after, start_val=prep.start_val)
            self.history_, self.best_epoch_, self.steps_ = result.history, result.best_epoch, result.steps
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _plan(self, train: np.ndarray | Sequence[Segment], val: np.ndarray | Segment | None, spec: TaskSpec,
              stop_after: int | None, ladder: bool | None = None) -> _Plan:
        """Settings, windows, sample pools and the samples per epoch of a fit (nothing built yet).

        Args:
            train, val, spec, stop_after: as in :meth:`_fit`.
            ladder: whether the fit climbs the ladder (None: as ``core.budget`` and the budget decide).
        """
        cfg = self.config
        self.config_ = cfg
        self.device_ = self._device()
        self._threads()
        torch.manual_seed(spec.seed)
        rng = np.random.default_rng(spec.seed)
        L, H = spec.context_length, spec.horizon
        self.context_length_, self.horizon_, self.seed_ = L, H, spec.seed
        self.description_ = spec.description
        self.patch_len_, self.stride_ = self._resolve_patch(tuple(spec.periods), L)
        self.use_prompt_ = bool(cfg.prompt) and cfg.backbone != "none"
        self.prompt_len_ = self.llm_layers_ = 0
        self._settle_references(spec)

        train_set = WindowSet(as_segments(train), L, H)
        if len(train_set) == 0:
            raise ValueError(f"timellm: no training window of context_length {L} + horizon {H} fits in `train`.")
        self.n_channels_ = n_ch = train_set.n_channels
        on_gpu = self.device_.type == "cuda"
        pool = (np.arange(0, len(train_set), cfg.train_stride or 1)[:, None] * n_ch + np.arange(n_ch)).ravel()
        per_epoch = cfg.max_train_windows if cfg.max_train_windows >= 0 else (0 if on_gpu else CPU_MAX_TRAIN)
        per_epoch = len(pool) if per_epoch == 0 else min(per_epoch, len(pool))

        val_set = None
        if stop_after is None and val is not None:
            if isinstance(val, Segment | np.ndarray):
                val_segs = [val if isinstance(val, Segment) else Segment(np.asarray(val, dtype=np.float32))]
            else:  # several validation parts (many series): windows never span two of them
                val_segs = [v for v in val if len(v) >= L + H]
            val_set = WindowSet(val_segs, L, H)
            if len(val_set) == 0:
                val_set = None
        if stop_after is None and val_set is None:
            log.warning("timellm: no validation windows; training all %d epochs without early stopping.", cfg.epochs)
        vpool = None
        if val_set is not None:
            vstride = cfg.val_stride or (1 if on_gpu else CPU_VAL_STRIDE)
            vmax = cfg.max_val_windows if cfg.max_val_windows >= 0 else (0 if on_gpu else CPU_MAX_VAL)
            vpool = _spread((np.arange(0, len(val_set), vstride)[:, None] * n_ch + np.arange(n_ch)).ravel(), vmax)
        if ladder is None:
            ladder = self._ladder_applies(stop_after, val_set is not None, per_epoch)
        return _Plan(train_set, val_set, pool, vpool, per_epoch, rng, ladder)

    def _prepare(self, plan: _Plan, spec: TaskSpec, mix_rng: np.random.Generator, shared: _Prepared | None = None
                 ) -> _Prepared:
        """Build the network, the sample caches and the starting mix for ``plan``.

        Args:
            plan: from :meth:`_plan`.
            spec: the task (its references).
            mix_rng: draws the training samples of the least-squares starting mix.
            shared: another variant's preparation whose reference caches are reused when it reads the same
                references (the forecasts are computed once for every ladder variant).
        """
        cfg = self.config
        t0 = time.perf_counter()
        train_set, val_set, pool = plan.train_set, plan.val_set, plan.pool
        n_ch = self.n_channels_
        if shared is not None and shared.names == self.reference_names_:
            train_refs, val_refs = shared.train_refs, shared.val_refs
        else:
            train_refs = self._reference_cache(spec, train_set.starts)
            val_refs = self._reference_cache(spec, val_set.starts) if val_set is not None else None
        if self.use_prompt_:
            self.prompt_len_ = cfg.max_prompt_tokens  # temporary, for the encoder's construction
        self._build()
        train_samples = Samples(train_set.samples, refs=train_refs if self.use_references_ else None)
        val_samples = Samples(val_set.samples, refs=val_refs if self.use_references_ else None) if val_set else None
        if self.use_prompt_:
            self._measure_prompt(train_set, train_refs, pool, plan.rng)
            text = self.use_classical_text_
            train_samples.prompts = PromptCache(self.encoder_, lambda i: train_set.samples(i)[0],
                                                len(train_set) * n_ch, train_refs if text else None)
            if val_samples is not None:
                val_samples.prompts = PromptCache(self.encoder_, lambda i: val_set.samples(i)[0],
                                                  len(val_set) * n_ch, val_refs if text else None)
        log.info(
            "timellm: backbone %s (%d layers), patch %d/%d, prompt %d tokens, %s trainable / %s frozen "
            "parameters, %d of %d training samples per epoch, references %s, device %s",
            cfg.backbone, self.llm_layers_, self.patch_len_, self.stride_, self.prompt_len_,
            f"{self.n_trainable_:,}", f"{self.n_frozen_:,}", plan.per_epoch, len(pool),
            list(self.reference_names_) or "none", self.device_,
        )  # fmt: skip

        start_val = self._start_mix(train_samples, pool, val_samples, val_set, plan.vpool, mix_rng)
        self.setup_seconds_ = round(time.perf_counter() - t0, 3)
        return _Prepared(train_samples, val_samples, start_val, self.reference_names_, train_refs, val_refs)

    # ------------------------------------------------------------------ budget: the ladder
    def _ladder_applies(self, stop_after: int | None, has_val: bool, per_epoch: int) -> bool:
        """Whether this fit climbs the ladder of ``core.budget: auto`` (else it trains as ``fixed``)."""
        cfg = self.config
        if cfg.budget not in ("auto", "fixed"):
            raise HybridInputError(f"core.budget must be auto or fixed; got {cfg.budget!r}.")
        if cfg.budget == "fixed" or stop_after is not None:
            return False  # a frozen copy (or build()) trains the budget chosen before
        if cfg.ladder_samples < 1 or cfg.ladder_epochs < 1 or cfg.ladder_growth < 2 or cfg.ladder_tol < 0:
            raise HybridInputError(
                "core.ladder_samples and core.ladder_epochs must be at least 1, core.ladder_growth at least 2 and "
                f"core.ladder_tol not negative; got {cfg.ladder_samples}, {cfg.ladder_epochs}, {cfg.ladder_growth} "
                f"and {cfg.ladder_tol}.")  # fmt: skip
        why = None
        if not has_val:
            why = "no validation windows"
        elif cfg.epochs < 1:
            why = f"core.epochs is {cfg.epochs}"
        elif per_epoch <= cfg.ladder_samples:
            why = f"{per_epoch} samples per epoch are no more than rung 0's core.ladder_samples={cfg.ladder_samples}"
        if why is not None:
            log.info("timellm: core.budget auto trains as fixed (%s).", why)
            return False
        return True

    def _ladder_variants(self) -> list[tuple[str, CoreConfig]]:
        """The rung-0 candidates: ``core.ladder_variants`` as (label, config), ``configured`` resolved, each once."""
        cfg = self.config
        found = dict(ladder_variant(cfg, v) for v in (cfg.ladder_variants or ("configured",)))
        return list(found.items())

    def _deadline(self, started: float) -> float | None:
        """``time.perf_counter()`` value after which no rung or epoch of the ladder starts (None: no limit)."""
        minutes = self.config.max_minutes
        if minutes < 0:
            minutes = CPU_MAX_MINUTES if self.device_.type == "cpu" else 0
        return started + 60.0 * minutes if minutes > 0 else None

    def _agree(self, flag: bool) -> bool:
        """``flag`` on any rank (torchrun): a decision taken on time is the same on every rank."""
        return ddp.all_sum([float(flag)], self.device_)[0] > 0

    def _climb(self, plan: _Plan, train: np.ndarray | Sequence[Segment], val: np.ndarray | Segment | None,
               spec: TaskSpec, started: float) -> None:
        """The selection fit of ``core.budget: auto`` (docs/architecture.md, "The Time-LLM core").

        Every training of the ladder starts from the variant's untrained start
        (same seed), so that a frozen copy reproduces the winner with its
        variant, samples per epoch, schedule length and epoch count alone.

        1. Rung 0 trains each variant at the smallest budget that can judge it. A variant that starts from the
           references' mix (fused) trains ``ladder_epochs`` epochs of ``max(ladder_samples, max_train_windows //
           4)`` samples: do a few steps move it off its start for the better? A variant without one (plain) starts
           from scratch and trains the early-stopped schedule (``epochs`` of ``max_train_windows`` samples), then
           larger ones while it is on its way to the start (:meth:`_reach_start`). With
           more than one variant the better half goes on, samples x ``ladder_growth``, until one is left
           (successive halving). Variants that resolve to the same network (a period patch where no period was
           found) train once.
        2. When no variant beat the untrained start by more than ``ladder_tol`` at rung 0, the core is that start
           (best epoch 0): its frozen copies train nothing.
        3. Otherwise the best variant trains with early stopping (``epochs``, ``patience``) at ``ladder_growth``
           times its last samples per epoch (at least ``max_train_windows``), growing so while a rung improves the
           best validation loss by more than ``ladder_tol``, every training window is not yet used and
           ``max_minutes`` leaves time for the next rung and for the fold fits and refits that would train its
           budget (``spec.later_fits``; :meth:`_too_long`).
        4. The member is the best rung of that variant (``ladder_``, ``ladder_winner_``), where a last rung that
           improved by no more than ``ladder_tol`` does not count: its gain is not worth its cost in every later fit.
        """
        cfg = self.config
        deadline = self._deadline(started)
        self.later_fits_ = spec.later_fits
        self.ladder_: list[dict[str, Any]] = []
        cands: list[_Candidate] = []
        seen: dict[tuple[Any, ...], str] = {}
        n_pool = len(plan.pool)
        for label, vcfg in self._ladder_variants():
            member, mplan = self, plan
            if vcfg != cfg:
                member = type(self)(vcfg, self.period)
                member.name = self.name
                mplan = member._plan(train, val, spec, None, ladder=True)
            key = (vcfg.backbone, member.use_references_, member.use_classical_text_, member.patch_len_,
                   member.stride_)
            if key in seen:
                log.info("timellm ladder: variant %s builds the same core as %s; it trains once.", label, seen[key])
                continue
            seen[key] = label
            prep = member._prepare(mplan, spec, np.random.default_rng(spec.seed), cands[0].prep if cands else None)
            c = _Candidate(label, member, mplan, prep, _trainable_copy(member.net_))
            if prep.start_val is None:  # from scratch: the whole early-stopped schedule
                c.samples, c.epochs = min(n_pool, plan.per_epoch), cfg.epochs
            else:  # a few steps off the start
                c.samples, c.epochs = min(n_pool, max(cfg.ladder_samples, plan.per_epoch // 4)), cfg.ladder_epochs
            cands.append(c)

        start = min((c.prep.start_val for c in cands if c.prep.start_val is not None), default=None)
        rung, alive = 0, cands
        while True:
            for c in alive:
                self._rung(c, rung, None, spec.seed)
                if rung == 0 and c.prep.start_val is None and start is not None:
                    self._reach_start(c, start, deadline, started, spec.seed)
            if rung == 0 and start is not None:
                best = min(c.best_val for c in cands)
                if _gain(start, best) <= cfg.ladder_tol:
                    self._settle_at_start(cands, start, best, sum(c.steps for c in cands))
                    return
            if len(alive) == 1:
                break
            alive = sorted(alive, key=lambda c: c.best_val)[: (len(alive) + 1) // 2]
            if len(alive) == 1:
                break
            rung += 1
            for c in alive:
                c.samples = min(n_pool, c.samples * cfg.ladder_growth)
        (winner,) = alive
        chose = (f"the lowest validation loss at rung {rung} among {[c.label for c in cands]}" if len(cands) > 1
                 else "the only variant")  # fmt: skip
        for c in cands:
            if c is not winner and c.member is not self:
                c.member = None  # its network and backbone are not needed any more

        if winner.samples >= n_pool and winner.epochs == cfg.epochs:
            self._settle(winner, f"variant: {chose}; stopped growing: rung {rung} used every training sample "
                                 f"({n_pool})", sum(c.steps for c in cands))  # fmt: skip
            return
        ahead = min(n_pool, max(winner.samples * cfg.ladder_growth, plan.per_epoch))
        too_long = self._too_long(winner, ahead, cfg.epochs, deadline, started)
        if too_long:
            self._settle(winner, f"variant: {chose}; stopped growing: rung {rung + 1} {too_long}",
                         sum(c.steps for c in cands))
            return
        winner.samples, winner.epochs = ahead, cfg.epochs
        while True:
            rung += 1
            before = (winner.best_val, winner.best_state, winner.best_record, winner.best_result)
            now = time.perf_counter()  # the rung's share of the time left; the rest is its later fits'
            share = None if deadline is None else now + (deadline - now) / (1 + self.later_fits_)
            self._rung(winner, rung, share, spec.seed)
            gain = _gain(before[0], winner.last_val)
            if gain <= cfg.ladder_tol:  # not worth its cost: the cheaper best rung stays the budget
                winner.best_val, winner.best_state, winner.best_record, winner.best_result = before
                why = f"rung {rung} improved the best validation loss by {gain:.2%}, not more than {cfg.ladder_tol:.2%}"
                break
            if winner.samples >= n_pool:
                why = f"rung {rung} used every training sample ({n_pool})"
                break
            ahead = min(n_pool, winner.samples * cfg.ladder_growth)
            too_long = self._too_long(winner, ahead, winner.epochs, deadline, started)
            if too_long:
                why = f"rung {rung + 1} {too_long}"
                break
            winner.samples = ahead
        self._settle(winner, f"variant: {chose}; stopped growing: {why}", sum(c.steps for c in cands))

    def _too_long(self, c: _Candidate, samples: int, epochs: int, deadline: float | None, started: float) -> str:
        """Why training ``c`` at ``samples`` x ``epochs`` would not fit in ``core.max_minutes`` ("": it would).

        ``core.max_minutes`` bounds the whole cross-fitted core: the rung, and the ``later_fits_`` frozen copies
        (fold fits, refit) that would train its budget after the ladder if it won. Its time is estimated from
        ``c``'s last rung per epoch and sample, validation included (scaled with the samples, though its size is
        fixed); a frozen copy is counted as a whole rung, though it scores no validation and may stop at an
        earlier best epoch. So the estimate is high rather than low. A rung admitted here trains against its
        share of the time left (:meth:`_climb`), so a low estimate overruns the limit by about an epoch at most.
        Under torchrun the ranks agree.
        """
        if deadline is None:
            return ""
        rung = c.last_seconds / max(1, c.last_epochs) * epochs * samples / max(1, c.samples)
        needed = rung * (1 + self.later_fits_)
        if not self._agree(time.perf_counter() + needed > deadline):
            return ""
        return (f"(about {rung:.1f} s, and as much again for each of the {self.later_fits_} fold fits and refits that "
                f"would train its budget) would end after core.max_minutes ({(deadline - started) / 60:g})")

    def _reach_start(self, c: _Candidate, start: float, deadline: float | None, started: float, seed: int) -> None:
        """Rung 0 of a variant trained from scratch, after its first schedule: does it reach the untrained start?

        While it has not beaten the start by ``ladder_tol``, it trains again at ``ladder_growth`` times the samples
        per epoch: once, and then only while its last step up closed at least the gap left to the start (one more
        step at that pace would reach it), every training sample is not yet used and ``max_minutes`` allows it
        with its later fits (:meth:`_too_long`).
        Where training from scratch cannot catch the references' mix, this costs two short schedules.
        """
        cfg = self.config
        target, n_pool = start * (1 - cfg.ladder_tol), len(c.plan.pool)
        previous: float | None = None
        while c.last_val > target and c.samples < n_pool:
            if previous is not None and previous - c.last_val < c.last_val - target:
                return
            ahead = min(n_pool, c.samples * cfg.ladder_growth)
            if self._too_long(c, ahead, c.epochs, deadline, started):
                return
            previous, c.samples = c.last_val, ahead
            self._rung(c, 0, None, seed)

    def _rung(self, c: _Candidate, rung: int, deadline: float | None, seed: int) -> None:
        """Train candidate ``c`` from its untrained start: ``c.epochs`` epochs (the schedule's length) of ``c.samples``."""
        member = c.member
        assert member is not None
        member.net_.load_state_dict(c.start_state, strict=False)
        torch.manual_seed(seed)
        trainer = Trainer(member.net_, dataclasses.replace(member.config, epochs=c.epochs), member.device_,
                          member.autocast)
        t0 = time.perf_counter()
        result = trainer.fit(c.prep.train, c.plan.pool, c.samples, np.random.default_rng(seed), c.prep.val,
                             c.plan.vpool, start_val=c.prep.start_val, deadline=deadline)
        seconds = time.perf_counter() - t0
        record = {
            "variant": c.label, "rung": rung, "samples_per_epoch": int(c.samples), "schedule_epochs": int(c.epochs),
            "epochs": sum(1 for h in result.history if h["epoch"] > 0), "best_epoch": int(result.best_epoch),
            "best_val_loss": float(result.best_val), "seconds": round(seconds, 3),
        }  # fmt: skip
        self.ladder_.append(record)
        log.info("timellm ladder: %s", record)
        c.steps += result.steps
        c.last_val, c.last_seconds, c.last_epochs = result.best_val, seconds, record["epochs"]
        if result.best_val < c.best_val:
            c.best_val, c.best_state, c.best_record, c.best_result = (
                result.best_val, _trainable_copy(member.net_), record, result)

    def _settle_at_start(self, cands: list[_Candidate], start_val: float, best: float, steps: int) -> None:
        """The core is its untrained start (best epoch 0); the cheapest variant (``none`` first) keeps it."""
        cfg = self.config
        keep = [c for c in cands if c.prep.start_val is not None]
        c = min(keep, key=lambda c: (c.label.split(":")[0] != "none", c.prep.start_val))
        c.best_state, c.best_val = c.start_state, float(c.prep.start_val)
        c.best_result = TrainResult([{"epoch": 0, "val_loss": c.best_val, "seconds": 0.0}], 0, c.best_val)
        c.best_record = {"variant": c.label, "rung": 0, "samples_per_epoch": int(c.samples),
                         "schedule_epochs": int(c.epochs)}
        why = (f"no variant beat the untrained start by more than {cfg.ladder_tol:.2%} at rung 0 (best validation "
               f"loss {best:.6g}, start {start_val:.6g}): the core is its untrained start")  # fmt: skip
        log.info("timellm: core.budget auto: %s (best epoch 0); the fold fits and the refit train nothing.", why)
        self._settle(c, why, steps)

    def _settle(self, c: _Candidate, why: str, steps: int) -> None:
        """Make this member candidate ``c`` at its best rung; record the ladder's outcome (``steps``: all rungs')."""
        if c.member is not self:
            assert c.member is not None
            self.__dict__.update({k: v for k, v in vars(c.member).items() if k.endswith("_") and k != "ladder_"})
        self.net_.load_state_dict(c.best_state, strict=False)
        self.net_.eval()
        rec, result = c.best_record, c.best_result
        self.history_, self.best_epoch_, self.steps_ = result.history, int(result.best_epoch), steps
        self.config_ = dataclasses.replace(c.member.config, budget="fixed", max_train_windows=rec["samples_per_epoch"],
                                           epochs=rec["schedule_epochs"])
        self.ladder_winner_ = {
            "variant": c.label, "rung": rec["rung"], "samples_per_epoch": rec["samples_per_epoch"],
            "schedule_epochs": rec["schedule_epochs"], "best_epoch": self.best_epoch_,
            "best_val_loss": float(result.best_val), "later_fits": self.later_fits_, "why": why,
        }  # fmt: skip

    def _measure_prompt(self, train_set: WindowSet, refs: SampleCache | None, pool: np.ndarray,
                        rng: np.random.Generator) -> None:
        """Prompt length: the longest prompt over a sample of training windows, plus a margin."""
        cfg = self.config
        probe = rng.choice(pool, size=min(PROMPT_PROBE, len(pool)), replace=False)
        probe_refs = refs.get(probe) if (refs is not None and self.use_classical_text_) else None
        longest = self.encoder_.measure(train_set.samples(probe)[0], probe_refs)
        if longest + PROMPT_MARGIN > cfg.max_prompt_tokens:
            log.warning("timellm: prompts of up to %d tokens are cut to core.max_prompt_tokens=%d.",
                        longest, cfg.max_prompt_tokens)  # fmt: skip
        self.prompt_len_ = self.encoder_.prompt_len = min(cfg.max_prompt_tokens, longest + PROMPT_MARGIN)

    def _start_mix(self, train: Samples, pool: np.ndarray, val: Samples | None, val_set: WindowSet | None,
                   vpool: np.ndarray | None, rng: np.random.Generator) -> float | None:
        """Set the network's starting mix of the references; return its validation loss (epoch 0).

        The least-squares mix is fitted on training samples. Without a fixed
        start, the start is chosen on validation among that mix and each
        reference alone, so that the fused core starts no worse on validation
        than its best reference; a frozen copy takes the start chosen before.
        """
        net = self.net_
        self.start_mix_ = None
        if net.reference_mix is None:
            return None
        sample = rng.choice(pool, size=min(MIX_INIT_SAMPLES, len(pool)), replace=False)
        x, y, _, _, refs = train.batch(sample)
        net.init_reference_mix(torch.from_numpy(x), torch.from_numpy(refs), torch.from_numpy(y))
        candidates = {LEAST_SQUARES: net.reference_mix.detach().clone()}
        for i, name in enumerate(self.reference_names_):
            candidates[name] = torch.nn.functional.one_hot(torch.tensor(i), len(self.reference_names_)).float()
        if self.fixed_start is not None:
            if self.fixed_start not in candidates:
                raise ValueError(f"timellm: the fixed start {self.fixed_start!r} is not among {list(candidates)}.")
            with torch.no_grad():
                net.reference_mix.copy_(candidates[self.fixed_start])
            self.start_mix_ = {"chosen": self.fixed_start, "fixed": True}
            return None
        if val is None or val_set is None or vpool is None:
            self.start_mix_ = {"chosen": LEAST_SQUARES, "val_mse": None}
            return None
        n_val = len(val_set) * self.n_channels_
        dense = np.linspace(0, n_val - 1, min(n_val, MIX_CHOICE_SAMPLES)).round().astype(np.int64)
        xv, yv, _, _, rv = val.batch(dense)
        tx, tr = torch.from_numpy(xv), torch.from_numpy(rv)
        scores = {k: float(np.mean((net.reference_mix_forecast(tx, tr, mix).numpy() - yv) ** 2))
                  for k, mix in candidates.items()}
        chosen = min(scores, key=scores.__getitem__)
        with torch.no_grad():
            net.reference_mix.copy_(candidates[chosen])
        self.start_mix_ = {"chosen": chosen, "val_mse": scores, "samples": len(dense)}
        start_val = self.trainer_.score(val, vpool)
        log.info("timellm epoch 0 (untrained head): starting mix %s on validation %s",
                 chosen, {k: round(v, 4) for k, v in scores.items()})  # fmt: skip
        return start_val

    def frozen(self) -> Self:
        """An unfitted copy that trains the epoch count chosen here, from the start chosen here, without validation.

        The copy's config is the fitted one (``config_``): after the ladder of
        ``core.budget: auto``, the winning variant's backbone, samples per
        epoch and schedule length, with ``budget: fixed``.
        """
        if not hasattr(self, "best_epoch_"):
            raise not_fitted(self.name)
        twin = type(self)(getattr(self, "config_", self.config), self.period)
        twin.name = self.name
        twin.fixed_epochs = int(self.best_epoch_)
        twin.fixed_start = (self.start_mix_ or {}).get("chosen")
        return twin

    # ------------------------------------------------------------------ predict
    def _check_references(self, references: np.ndarray | None, context: np.ndarray) -> np.ndarray | None:
        if not self.reference_names_:
            return None
        n, c, _ = context.shape
        want = (n, c, len(self.reference_names_), self.horizon_)
        if references is None:
            raise ValueError(f"timellm reads the forecasts of {', '.join(self.reference_names_)}; pass "
                             f"`references` of shape {list(want)} (the pipeline does).")
        references = np.asarray(references, dtype=np.float32)[..., : self.horizon_]
        if references.shape != want:
            raise ValueError(f"`references` must have shape {list(want)}; got {list(references.shape)}.")
        return references.reshape(n * c, *want[2:])

    def predict(self, context: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        """Forecast ``context`` [N, C, L] -> [N, C, H] float32 (scaled units).

        Args:
            context: the windows.
            references: the reference members' forecasts of the same windows
                [N, C, R, H] (R = ``len(reference_names_)``), when the core
                reads references.
        """
        if not hasattr(self, "net_"):
            raise not_fitted(self.name)
        context = check_context(context, self.context_length_)
        self._threads()
        n, c, L = context.shape
        x = context.reshape(n * c, L)
        refs = self._check_references(references, context)  # [N*C, R, H] or None
        ids = mask = None
        if self.use_prompt_:
            ids, mask = self.encoder_.encode(x, refs if self.use_classical_text_ else None)
        out = self.trainer_.forward(x, ids, mask, refs if self.use_references_ else None)
        return out.reshape(n, c, self.horizon_)

    # ------------------------------------------------------------------ explanation
    def prompt_text(self, context: np.ndarray, references: np.ndarray | None = None) -> list[str]:
        """The prompt the core reads for each channel of ``context`` [1, C, L] (before the cut to prompt_len_)."""
        context = check_context(context, self.context_length_)
        n, c, L = context.shape
        if not self.use_prompt_:
            return ["(no prompt: core.prompt is false or core.backbone is none)"] * (n * c)
        refs = self._check_references(references, context) if self.use_classical_text_ else None
        return self.encoder_.full_texts(context.reshape(n * c, L), refs)

    @torch.no_grad()
    def explain(self, context: np.ndarray, references: np.ndarray | None = None) -> list[str]:
        """Per channel of ``context`` [1, C, L]: the most-attended text prototypes and their nearest words.

        Attention is the reprogramming cross-attention, averaged over heads and
        patches; a prototype's words are the vocabulary words whose frozen
        embeddings have the highest cosine similarity with it.
        """
        context = check_context(context, self.context_length_)
        net = self.net_
        rows = context.shape[0] * context.shape[1]
        if net.head_is_zero():
            mix = ", ".join(f"{n} {w:+.3f}" for n, w in zip(self.reference_names_, net.reference_mix.tolist(),
                                                            strict=True))
            start = (self.start_mix_ or {}).get("chosen", LEAST_SQUARES)
            line = (f"the checkpoint chosen on validation is the untrained start (epoch 0): the mix of the references "
                    f"({start}: {mix}); the backbone and the prompt do not change this forecast")  # fmt: skip
            return [line] * rows
        if net.backbone is None or self.tokenizer_ is None:
            return ["(no text prototypes: core.backbone is none)"] * rows
        x = torch.from_numpy(np.ascontiguousarray(context.reshape(-1, self.context_length_))).to(self.device_)
        mean, std = revin_stats(x)
        z = (x - mean) / std
        words = net.backbone.get_input_embeddings().weight[net.vocab_ids].float()  # [V, D]
        protos = net.prototypes.float()(words.t()).t()  # [K, D]
        rp = net.reprogram.float()
        q = rp.query(net.patch.float()(z))  # [M, P, h*dk]
        m, p, _ = q.shape
        q = q.view(m, p, rp.n_heads, rp.d_keys).transpose(1, 2)  # [M, h, P, dk]
        k = rp.key(protos).view(-1, rp.n_heads, rp.d_keys).transpose(0, 1)  # [h, K, dk]
        att = torch.softmax(q @ k.transpose(1, 2).unsqueeze(0) / rp.d_keys**0.5, dim=-1)  # [M, h, P, K]
        weight = att.mean(dim=(1, 2))  # [M, K]
        sim = torch.nn.functional.normalize(protos, dim=1) @ torch.nn.functional.normalize(words, dim=1).t()  # [K, V]
        nearest = sim.topk(min(EXPLAIN_WORDS, sim.shape[1]), dim=1).indices  # [K, w]
        vocab = net.vocab_ids.cpu().tolist()
        out = []
        for row in range(m):
            top = weight[row].topk(min(EXPLAIN_PROTOTYPES, weight.shape[1]))
            parts = []
            for share, kid in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                toks = self.tokenizer_.convert_ids_to_tokens([vocab[j] for j in nearest[kid].tolist()])
                parts.append(f"prototype {kid} ({share:.1%}): " + ", ".join(t.lstrip("#Ġ▁") for t in toks))
            out.append("; ".join(parts))
        return out

    # ------------------------------------------------------------------ persistence
    _FITTED = (
        "context_length_", "horizon_", "seed_", "description_", "patch_len_", "stride_", "use_prompt_",
        "prompt_len_", "llm_layers_", "n_trainable_", "n_frozen_", "history_", "best_epoch_", "fit_seconds_",
        "use_references_", "use_classical_text_", "reference_missing_", "start_mix_", "n_channels_", "steps_",
        "ladder_", "ladder_winner_",
    )  # fmt: skip

    def save(self, directory: Path) -> None:
        """Write the trainable weights (safetensors) and settings (JSON) to ``directory``.

        The frozen backbone is not saved; :meth:`load` reloads it from its
        package. ``config`` is the fitted config the network is rebuilt from
        (``config_``: the ladder's winning variant), ``requested_config`` the
        one the member was made with.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net_.trainable_state().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        meta = {
            "name": self.name,
            "period": self.period,
            "config": dataclasses.asdict(getattr(self, "config_", self.config)),
            "requested_config": dataclasses.asdict(self.config),
            "fitted": {k: getattr(self, k) for k in self._FITTED if hasattr(self, k)},
            "reference_names": list(self.reference_names_),
            "fixed": {"epochs": self.fixed_epochs, "start": self.fixed_start},
        }
        (directory / STATE_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Rebuild a fitted member saved by :meth:`save` (the backbone comes from its package)."""
        directory = Path(directory)
        meta = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        fitted = _core_config(meta["config"])
        self = cls(_core_config(meta.get("requested_config", meta["config"])), period=meta["period"])
        self.config_ = fitted
        self.name = meta["name"]
        for k, v in meta["fitted"].items():
            setattr(self, k, v)
        self.reference_names_ = tuple(meta.get("reference_names", ()))
        self.fixed_epochs, self.fixed_start = meta["fixed"]["epochs"], meta["fixed"]["start"]
        self.device_ = self._device()
        self._threads()
        self._build()
        self.llm_layers_ = meta["fitted"]["llm_layers_"]
        state = load_file(str(directory / WEIGHTS_FILE), device=str(self.device_))
        missing, unexpected = self.net_.load_state_dict(state, strict=False)
        wrong = [k for k in missing if not k.startswith("backbone.")] + list(unexpected)
        if wrong:
            raise ValueError(f"timellm weights in {directory} do not match the network: {wrong[:5]}")
        self.net_.eval()
        return self

    _DESCRIBED = ("best_epoch_", "start_mix_", "n_trainable_", "n_frozen_", "ladder_", "ladder_winner_", "steps_")

    def reference_names(self) -> tuple[str, ...]:
        """The references this fit reads, in the order ``predict`` takes them (() before fit)."""
        return tuple(getattr(self, "reference_names_", ()))

    def describe(self) -> dict[str, Any]:
        """What the manifest records of this fit: those of ``_DESCRIBED`` it has, without the trailing ``_``."""
        return {k.rstrip("_"): getattr(self, k) for k in self._DESCRIBED if hasattr(self, k)}
