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
:meth:`TimeLLM.frozen` gives a copy that trains the chosen number of epochs
from the chosen start, without validation (refits on folds and train + val).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from kernel.contract import Segment, TaskSpec, as_segments, check_context, not_fitted
from kernel.distributed import local_rank, local_world_size, world_size
from kernel.errors import HybridInputError
from kernel.protocol import WindowSet
from llm_core.backbone import load_backbone, word_token_ids
from llm_core.config import CoreConfig
from llm_core.layers import TimeLLMNet, count_parameters, revin_stats
from llm_core.prompt import PromptCache, PromptEncoder, SampleCache
from llm_core.trainer import Samples, Trainer

log = logging.getLogger(__name__)

CPU_MAX_TRAIN = 1024  # auto: training samples per epoch on CPU
CPU_MAX_VAL = 1024  # auto: validation samples on CPU
CPU_VAL_STRIDE = 8  # auto: step between validation windows on CPU
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


class TimeLLM:
    """Time-LLM core as a forecaster (see docs/architecture.md, "The Time-LLM core").

    Args:
        config: the ``core`` config section.
        period: a period expert's period (``timellm@24``): the patch length is
            tied to it and the stride is half of it.

    Fitted attributes: ``patch_len_``, ``stride_``, ``prompt_len_``,
    ``n_trainable_`` / ``n_frozen_`` (parameter counts), ``history_`` (loss
    per epoch), ``best_epoch_``, ``fit_seconds_``, ``reference_names_`` (the
    references read, in order), ``use_references_`` / ``use_classical_text_``,
    ``start_mix_`` (how the starting mix was chosen).
    """

    name = "timellm"
    horizon_agnostic = False
    uses_references = True

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
        """Backbone, prompt encoder, network and trainer from the fitted settings."""
        cfg = self.config
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

        A frozen copy (:meth:`frozen`) trains its fixed number of epochs and
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
        """:meth:`fit` with ``stop_after`` epochs and no validation (None: up to ``core.epochs``, early-stopped)."""
        cfg = self.config
        start = time.perf_counter()
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

        t0 = time.perf_counter()
        train_refs = self._reference_cache(spec, train_set.starts)
        val_refs = self._reference_cache(spec, val_set.starts) if val_set is not None else None
        if self.use_prompt_:
            self.prompt_len_ = cfg.max_prompt_tokens  # temporary, for the encoder's construction
        self._build()
        train_samples = Samples(train_set.samples, refs=train_refs if self.use_references_ else None)
        val_samples = Samples(val_set.samples, refs=val_refs if self.use_references_ else None) if val_set else None
        if self.use_prompt_:
            self._measure_prompt(train_set, train_refs, pool, rng)
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
            f"{self.n_trainable_:,}", f"{self.n_frozen_:,}", per_epoch, len(pool),
            list(self.reference_names_) or "none", self.device_,
        )  # fmt: skip

        start_val = self._start_mix(train_samples, pool, val_samples, val_set, vpool, rng)
        self.setup_seconds_ = round(time.perf_counter() - t0, 3)
        result = self.trainer_.fit(train_samples, pool, per_epoch, rng, val_samples, vpool,
                                   stop_after=stop_after, start_val=start_val)
        self.history_, self.best_epoch_ = result.history, result.best_epoch
        self.fit_seconds_ = time.perf_counter() - start
        return self

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
        """An unfitted copy that trains the epoch count chosen here, from the start chosen here, without validation."""
        if not hasattr(self, "best_epoch_"):
            raise not_fitted(self.name)
        twin = type(self)(self.config, self.period)
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
        "use_references_", "use_classical_text_", "reference_missing_", "start_mix_", "n_channels_",
    )  # fmt: skip

    def save(self, directory: Path) -> None:
        """Write the trainable weights (safetensors) and settings (JSON) to ``directory``.

        The frozen backbone is not saved; :meth:`load` reloads it from its package.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net_.trainable_state().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        meta = {
            "name": self.name,
            "period": self.period,
            "config": dataclasses.asdict(self.config),
            "fitted": {k: getattr(self, k) for k in self._FITTED},
            "reference_names": list(self.reference_names_),
            "fixed": {"epochs": self.fixed_epochs, "start": self.fixed_start},
        }
        (directory / STATE_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Rebuild a fitted member saved by :meth:`save` (the backbone comes from its package)."""
        directory = Path(directory)
        meta = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        config = dict(meta["config"])
        config["reference_members"] = tuple(config.get("reference_members", ()))
        self = cls(CoreConfig(**config), period=meta["period"])
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

    def describe(self) -> dict[str, Any]:
        """Fit details for the manifest."""
        return {
            "best_epoch": getattr(self, "best_epoch_", None),
            "start_mix": getattr(self, "start_mix_", None),
            "references": list(getattr(self, "reference_names_", ())),
            "n_trainable": getattr(self, "n_trainable_", None),
            "n_frozen": getattr(self, "n_frozen_", None),
            "fixed_epochs": self.fixed_epochs,
        }
