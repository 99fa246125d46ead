"""The ``timellm`` pipeline member: fit, predict, save, load.

Channel independence: every channel of every window is one sample [L] -> [H].

Fusion (DESIGN.md, core items 4 and 5): the classical members named in
``core.reference_members`` are fitted on the training part (or taken already
fitted from ``spec.extra["fitted_members"]``), and every training, validation
and test window gets their forecasts of that window, computed from the
window's own context with one batched ``predict`` per member and cached for
every epoch. They enter the core as prompt text (``core.classical_text``) and
as reference tokens (``core.references``). The fitted reference members are
saved with the core.
Training uses AdamW on the trainable parts only, a one-cycle or cosine
schedule, gradient clipping and early stopping on the validation windows
(the best state is kept and reloaded). The test part is never seen here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Self

import joblib
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hybrid.contract import TaskSpec, check_context
from hybrid.errors import HybridInputError
from hybrid.protocol import windows
from llm_core.backbone import load_backbone, word_token_ids
from llm_core.config import CoreConfig
from llm_core.layers import TimeLLMNet, count_parameters, revin_stats
from llm_core.prompt import PromptCache, PromptEncoder, ReferenceCache

log = logging.getLogger(__name__)

CPU_MAX_TRAIN = 1024  # auto: training samples per epoch on CPU
CPU_MAX_VAL = 1024  # auto: validation samples on CPU
CPU_VAL_STRIDE = 8  # auto: step between validation windows on CPU
PROMPT_MARGIN = 4  # extra prompt tokens over the longest measured prompt
WEIGHTS_FILE, STATE_FILE = "timellm.safetensors", "timellm.json"
MIX_INIT_SAMPLES = 4096  # training samples for the starting mix of the references
MIX_CHOICE_SAMPLES = 8192  # validation samples (evenly spread) that choose the starting mix
REFERENCES_FILE = "references.joblib"  # the fitted reference members, saved with the core
EXPLAIN_PROTOTYPES, EXPLAIN_WORDS = 3, 3  # explain(): most-attended prototypes, nearest words each


def clamp_patch(period: int, context_length: int) -> int:
    """Patch length tied to a period: at least 4 steps, at most L // 8."""
    return int(min(max(period, 4), max(4, context_length // 8)))


class TimeLLM:
    """Time-LLM core as a forecaster (see DESIGN.md, "The Time-LLM core").

    Args:
        config: the ``core`` config section.
        period: a period expert's period (``timellm@24``): the patch length is
            tied to it and the stride is half of it.

    Fitted attributes: ``patch_len_``, ``stride_``, ``prompt_len_``,
    ``n_trainable_`` / ``n_frozen_`` (parameter counts), ``history_`` (loss
    per epoch), ``best_epoch_``, ``fit_seconds_``, ``references_`` (name ->
    fitted reference member), ``use_references_`` / ``use_classical_text_``,
    ``reference_seconds_`` (fit and forecast seconds of the references).
    """

    name = "timellm"
    horizon_agnostic = False

    def __init__(self, config: CoreConfig | None = None, period: int | None = None) -> None:
        self.config = config or CoreConfig()
        self.period = period

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        want = self.config.device
        if want not in ("auto", "cpu", "cuda"):
            raise HybridInputError(f"core.device must be auto, cpu or cuda; got {want!r}.")
        if want == "cuda" and not torch.cuda.is_available():
            raise HybridInputError("core.device is cuda but no CUDA device is available; use auto or cpu.")
        return torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")

    def _autocast(self) -> Any:
        if self.device_.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        if self.config.cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def _threads(self) -> None:
        if self.device_.type == "cpu":
            torch.set_num_threads(self.config.num_threads or os.cpu_count() or 1)

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
        if not 1 <= cfg.patch_len <= context_length or cfg.stride < 1:
            raise HybridInputError(
                f"core.patch_len must be in 1..{context_length} and core.stride >= 1; got {cfg.patch_len} and {cfg.stride}."
            )
        return int(cfg.patch_len), int(cfg.stride)

    def _build(self) -> None:
        """Backbone, prompt encoder and network from the fitted settings."""
        cfg = self.config
        if cfg.backbone == "none":
            backbone, vocab = None, None
            self.tokenizer_ = None
            d_llm = 0
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
            n_references=len(self.references_) if self.use_references_ else 0,
            reference_skip=bool(cfg.reference_skip) and self.use_references_,
        ).to(self.device_)
        self.n_trainable_, self.n_frozen_ = count_parameters(self.net_)
        self.encoder_ = None
        if self.use_prompt_:
            self.encoder_ = PromptEncoder(
                self.tokenizer_,
                self.description_,
                self.context_length_,
                self.horizon_,
                cfg.top_k_lags,
                cfg.max_description_tokens,
                self.prompt_len_,
                tuple(self.references_) if self.use_classical_text_ else (),
            )

    # ------------------------------------------------------------------ references
    def _fit_references(self, train: np.ndarray, val: np.ndarray | None, spec: TaskSpec) -> None:
        """Fit (or take from ``spec.extra["fitted_members"]``) the members of ``core.reference_members``.

        The members are built with ``spec.extra["config"]`` (the run's full
        config) when given, else with the default config around this core's
        section. A member that fails is dropped with a warning and recorded in
        ``reference_failed_``.
        """
        from hybrid.config import Config
        from hybrid.members import make_member, parse_member

        cfg = self.config
        names = tuple(cfg.reference_members) if (cfg.references or cfg.classical_text) else ()
        if len(set(names)) != len(names):
            raise HybridInputError(f"core.reference_members lists a member twice: {list(names)}.")
        for name in names:
            if parse_member(name)[0] == "timellm":
                raise HybridInputError(
                    f"core.reference_members must name classical members; got {name!r}. "
                    "Use e.g. linear, nlinear, ets, arima."
                )
        given: dict[str, Any] = dict(spec.extra.get("fitted_members") or {})
        full = spec.extra.get("config") or Config(core=cfg)
        plain = dataclasses.replace(spec, extra={})
        self.references_: dict[str, Any] = {}
        self.reference_failed_: dict[str, str] = {}
        self.reference_seconds_: dict[str, float] = {}
        for name in names:
            t0 = time.perf_counter()
            member = given.get(name)
            try:
                if member is None:
                    member = make_member(name, full).fit(train, val, plain)
                else:
                    log.info("timellm: reference member %s was already fitted by the pipeline; reusing it.", name)
            except HybridInputError:
                raise
            except Exception as exc:  # a failing reference never stops the core, but it is said
                log.warning("timellm: reference member %s failed (%s: %s); the core goes on without it.",
                            name, type(exc).__name__, exc)  # fmt: skip
                self.reference_failed_[name] = f"{type(exc).__name__}: {exc}"
                continue
            self.references_[name] = member
            self.reference_seconds_[f"fit_{name}"] = round(time.perf_counter() - t0, 3)
        self.use_references_ = bool(cfg.references) and bool(self.references_)
        self.use_classical_text_ = bool(cfg.classical_text) and self.use_prompt_ and bool(self.references_)
        if not self.use_references_ and not self.use_classical_text_:
            self.references_ = {}  # nothing reads them: do not keep or save them

    def _reference_forecasts(self, context: np.ndarray) -> np.ndarray | None:
        """The reference members' forecasts of ``context`` [N, C, L] -> [N, C, R, H] float32 (None: no references)."""
        if not self.references_:
            return None
        return np.stack([m.predict(context)[:, :, : self.horizon_] for m in self.references_.values()], axis=2).astype(
            np.float32, copy=False
        )

    # ------------------------------------------------------------------ fit
    def fit(self, train: np.ndarray, val: np.ndarray | None, spec: TaskSpec) -> Self:
        """Train on scaled ``train`` [T, C]; early-stop on ``val`` [T', C].

        Returns:
            self, fitted.
        """
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
        if cfg.prompt and cfg.backbone == "none":
            log.info("core.backbone none: the prompt is not used (there is no language model to read it).")
        self.prompt_len_ = 0
        self.llm_layers_ = 0
        train = np.asarray(train, dtype=np.float32)
        self._fit_references(train, val, spec)
        ctx, tgt = windows(train, L, H)  # [N, C, L], [N, C, H] views
        n_win, n_ch = ctx.shape[:2]
        on_gpu = self.device_.type == "cuda"

        stride = cfg.train_stride or 1
        pool = (np.arange(0, n_win, stride)[:, None] * n_ch + np.arange(n_ch)).ravel()  # sample ids
        per_epoch = cfg.max_train_windows
        if per_epoch < 0:
            per_epoch = 0 if on_gpu else CPU_MAX_TRAIN
        per_epoch = len(pool) if per_epoch == 0 else min(per_epoch, len(pool))

        val_ctx = val_tgt = None
        if val is not None and len(val) >= L + H:
            val_ctx, val_tgt = windows(np.asarray(val, dtype=np.float32), L, H)
            vstride = cfg.val_stride or (1 if on_gpu else CPU_VAL_STRIDE)
            vpool = (np.arange(0, len(val_ctx), vstride)[:, None] * n_ch + np.arange(n_ch)).ravel()
            vmax = cfg.max_val_windows
            if vmax < 0:
                vmax = 0 if on_gpu else CPU_MAX_VAL
            if 0 < vmax < len(vpool):
                vpool = vpool[np.linspace(0, len(vpool) - 1, vmax).round().astype(np.int64)]
        else:
            log.warning("timellm: no validation windows; training all %d epochs without early stopping.", cfg.epochs)

        # references of each window from its own context, computed once for every epoch
        t0 = time.perf_counter()
        members = list(self.references_.values())
        train_refs = ReferenceCache(members, ctx, H) if members else None
        val_refs = ReferenceCache(members, val_ctx, H) if members and val_ctx is not None else None
        if val_refs is not None:
            val_refs.fill_windows(vpool // n_ch)
        if self.use_prompt_:
            # prompt length: the longest prompt over a sample of training windows, plus a margin
            self.prompt_len_ = cfg.max_prompt_tokens  # temporary, for the encoder's construction
        self._build()
        if self.use_prompt_:
            probe = rng.choice(pool, size=min(512, len(pool)), replace=False)
            probe_refs = train_refs.get(probe) if self.use_classical_text_ else None
            longest = self.encoder_.measure(ctx[probe // n_ch, probe % n_ch], probe_refs)
            if longest + PROMPT_MARGIN > cfg.max_prompt_tokens:
                log.warning("timellm: prompts of up to %d tokens are cut to core.max_prompt_tokens=%d.",
                            longest, cfg.max_prompt_tokens)  # fmt: skip
            self.prompt_len_ = self.encoder_.prompt_len = min(cfg.max_prompt_tokens, longest + PROMPT_MARGIN)
            text_refs = self.use_classical_text_
            train_cache = PromptCache(self.encoder_, ctx, train_refs if text_refs else None)
            val_cache = PromptCache(self.encoder_, val_ctx, val_refs if text_refs else None) if val_ctx is not None else None
            if val_cache is not None:
                val_cache.fill(vpool)
        self.reference_seconds_["forecast_setup"] = round(time.perf_counter() - t0, 3)
        log.info(
            "timellm: backbone %s (%d layers), patch %d/%d, prompt %d tokens, %s trainable / %s frozen "
            "parameters, %d of %d training samples per epoch, device %s",
            cfg.backbone, self.llm_layers_, self.patch_len_, self.stride_, self.prompt_len_,
            f"{self.n_trainable_:,}", f"{self.n_frozen_:,}", per_epoch, len(pool), self.device_,
        )  # fmt: skip

        net = self.net_
        if net.reference_mix is not None:  # start from the best linear mix of the references (stacking)
            sample = rng.choice(pool, size=min(MIX_INIT_SAMPLES, len(pool)), replace=False)
            w, c = sample // n_ch, sample % n_ch
            net.init_reference_mix(
                torch.from_numpy(ctx[w, c]), torch.from_numpy(train_refs.get(sample)), torch.from_numpy(tgt[w, c])
            )
            log.info(
                "timellm: least-squares mix of the references on training samples: %s",
                dict(zip(self.references_, net.reference_mix.tolist(), strict=True)),
            )
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = math.ceil(per_epoch / cfg.batch_size)
        if cfg.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=cfg.lr, total_steps=max(2, steps * cfg.epochs), pct_start=cfg.pct_start
            )
        elif cfg.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps * cfg.epochs))
        elif cfg.schedule == "constant":
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        else:
            raise HybridInputError(f"core.schedule must be onecycle, cosine or constant; got {cfg.schedule!r}.")

        best, best_state, bad = math.inf, None, 0
        self.history_: list[dict[str, float]] = []
        self.best_epoch_ = 0
        self.start_mix_ = None
        if net.reference_mix is not None and val_ctx is not None:
            # Epoch 0 is a candidate checkpoint: the zero head plus a starting mix of the references. The starting
            # mix is chosen on validation among the least-squares mix (fitted on training samples above) and each
            # reference alone, so that the fused core starts no worse on validation than its best reference.
            # The head is zero, so these forecasts need no backbone pass.
            n_val = len(val_ctx) * n_ch
            dense = np.linspace(0, n_val - 1, min(n_val, MIX_CHOICE_SAMPLES)).round().astype(np.int64)
            val_refs.fill_windows(dense // n_ch)
            xv, rv = torch.from_numpy(val_ctx[dense // n_ch, dense % n_ch]), torch.from_numpy(val_refs.get(dense))
            yv = val_tgt[dense // n_ch, dense % n_ch]
            candidates = {"least-squares mix": net.reference_mix.detach().clone()}
            for i, name in enumerate(self.references_):
                candidates[name] = torch.nn.functional.one_hot(torch.tensor(i), len(self.references_)).float()
            scores = {
                k: float(np.mean((net.reference_mix_forecast(xv, rv, mix).numpy() - yv) ** 2))
                for k, mix in candidates.items()
            }
            chosen = min(scores, key=scores.__getitem__)
            with torch.no_grad():
                net.reference_mix.copy_(candidates[chosen])
            self.start_mix_ = {"chosen": chosen, "val_mse": scores, "samples": len(dense)}
            w, c = vpool // n_ch, vpool % n_ch
            pred = self._forward_samples(
                val_ctx[w, c], *(val_cache.get(vpool) if self.use_prompt_ else (None, None)), val_refs.get(vpool)
            )
            best = float(np.mean((pred - val_tgt[w, c]) ** 2))
            best_state = {k: v.detach().clone() for k, v in net.trainable_state().items()}
            self.history_.append({"epoch": 0, "val_loss": best, "seconds": 0.0})
            log.info("timellm epoch 0 (untrained head): starting mix %s on validation %s; val_loss %.4f",
                     chosen, {k: round(v, 4) for k, v in scores.items()}, best)  # fmt: skip
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            net.train()
            order = rng.permutation(pool)[:per_epoch]
            t_ref = time.perf_counter()
            if train_refs is not None:
                train_refs.fill_windows(order // n_ch)  # one predict per member per epoch, for new windows only
            if self.use_prompt_:
                train_cache.fill(order)  # one tokenizer call per epoch, for new windows only
            self.reference_seconds_["forecast_train"] = self.reference_seconds_.get("forecast_train", 0.0) + round(
                time.perf_counter() - t_ref, 3
            )
            total, count = 0.0, 0
            bar = tqdm(
                range(0, per_epoch, cfg.batch_size),
                desc=f"timellm epoch {epoch}/{cfg.epochs}",
                disable=not cfg.progress,
                leave=False,
            )
            for i in bar:
                idx = order[i : i + cfg.batch_size]
                w, c = idx // n_ch, idx % n_ch
                x = torch.from_numpy(ctx[w, c]).to(self.device_)
                y = torch.from_numpy(tgt[w, c]).to(self.device_)
                ids = mask = refs = None
                if self.use_prompt_:
                    ids_np, mask_np = train_cache.get(idx)
                    ids, mask = torch.from_numpy(ids_np).to(self.device_), torch.from_numpy(mask_np).to(self.device_)
                if self.use_references_:
                    refs = torch.from_numpy(train_refs.get(idx)).to(self.device_)  # [B, R, H]
                with self._autocast():
                    out = net(x, ids, mask, refs=refs)
                loss = torch.nn.functional.mse_loss(out.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                count += len(idx)
                bar.set_postfix(loss=f"{total / count:.4f}")
            bar.close()
            record = {"epoch": epoch, "train_loss": total / max(count, 1)}
            if val_ctx is not None:
                w, c = vpool // n_ch, vpool % n_ch
                pred = self._forward_samples(
                    val_ctx[w, c],
                    *(val_cache.get(vpool) if self.use_prompt_ else (None, None)),
                    val_refs.get(vpool) if self.use_references_ else None,
                )
                record["val_loss"] = float(np.mean((pred - val_tgt[w, c]) ** 2))
            record["seconds"] = time.perf_counter() - t0
            self.history_.append(record)
            log.info("timellm epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items()})
            if val_ctx is None:
                continue
            if record["val_loss"] < best:
                best, bad, self.best_epoch_ = record["val_loss"], 0, epoch
                best_state = {k: v.detach().clone() for k, v in net.trainable_state().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    log.info("timellm: early stop after epoch %d (best epoch %d).", epoch, self.best_epoch_)
                    break
        if best_state is not None:
            net.load_state_dict(best_state, strict=False)
        else:
            self.best_epoch_ = len(self.history_)
        net.eval()
        self.fit_seconds_ = time.perf_counter() - start
        return self

    # ------------------------------------------------------------------ predict
    @torch.no_grad()
    def _forward_samples(
        self, x: np.ndarray, ids: np.ndarray | None, mask: np.ndarray | None, refs: np.ndarray | None = None
    ) -> np.ndarray:
        """Samples x [M, L] (+ prompt ids [M, Pp], references [M, R, H]) -> forecasts [M, H] float32, in eval mode."""
        net = self.net_
        out = np.empty((x.shape[0], self.horizon_), dtype=np.float32)
        bs = self.config.eval_batch_size
        if refs is not None and net.head_is_zero():
            # The head is zero (the checkpoint chosen on validation is the untrained start): the forecast is the
            # reference mix alone and the backbone cannot change it, so it is not run.
            for i in range(0, x.shape[0], bs):
                xb, rb = (torch.from_numpy(np.ascontiguousarray(a[i : i + bs])) for a in (x, refs))
                out[i : i + bs] = net.reference_mix_forecast(xb.to(self.device_), rb.to(self.device_)).cpu().numpy()
            return out
        was_training = net.training
        net.eval()
        with self._autocast():
            kv = net.prototype_kv()  # computed once for every batch
            for i in range(0, x.shape[0], bs):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + bs])).to(self.device_)
                ib = mb = rb = None
                if ids is not None:
                    ib = torch.from_numpy(ids[i : i + bs]).to(self.device_)
                    mb = torch.from_numpy(mask[i : i + bs]).to(self.device_)
                if refs is not None:
                    rb = torch.from_numpy(np.ascontiguousarray(refs[i : i + bs])).to(self.device_)
                out[i : i + bs] = net(xb, ib, mb, kv=kv, refs=rb).float().cpu().numpy()
        net.train(was_training)
        return out

    def predict(self, context: np.ndarray) -> np.ndarray:
        """Forecast ``context`` [N, C, L] -> [N, C, H] float32 (scaled units)."""
        if not hasattr(self, "net_"):
            raise RuntimeError("timellm: call fit (or load) before predict.")
        context = check_context(context, self.context_length_)
        self._threads()
        n, c, L = context.shape
        x = context.reshape(n * c, L)
        refs = self._reference_forecasts(context)  # [N, C, R, H] or None
        if refs is not None:
            refs = refs.reshape(n * c, *refs.shape[2:])  # [N*C, R, H]
        ids = mask = None
        if self.use_prompt_:
            ids, mask = self.encoder_.encode(x, refs if self.use_classical_text_ else None)
        return self._forward_samples(x, ids, mask, refs if self.use_references_ else None).reshape(n, c, self.horizon_)

    # ------------------------------------------------------------------ explanation
    def prompt_text(self, context: np.ndarray) -> list[str]:
        """The prompt the core reads for each channel of ``context`` [1, C, L] (before the cut to prompt_len_)."""
        context = check_context(context, self.context_length_)
        n, c, L = context.shape
        if not self.use_prompt_:
            return ["(no prompt: core.prompt is false or core.backbone is none)"] * (n * c)
        refs = self._reference_forecasts(context) if self.use_classical_text_ else None
        if refs is not None:
            refs = refs.reshape(n * c, *refs.shape[2:])
        return self.encoder_.full_texts(context.reshape(n * c, L), refs)

    @torch.no_grad()
    def explain(self, context: np.ndarray) -> list[str]:
        """Per channel of ``context`` [1, C, L]: the most-attended text prototypes and their nearest words.

        Attention is the reprogramming cross-attention, averaged over heads and
        patches; a prototype's words are the vocabulary words whose frozen
        embeddings have the highest cosine similarity with it.
        """
        context = check_context(context, self.context_length_)
        net = self.net_
        if net.head_is_zero():
            mix = ", ".join(f"{n} {w:+.3f}" for n, w in zip(self.references_, net.reference_mix.tolist(), strict=True))
            start = (self.start_mix_ or {}).get("chosen", "least-squares mix")
            line = (f"the checkpoint chosen on validation is the untrained start (epoch 0): the mix of the references "
                    f"({start}: {mix}); the backbone and the prompt do not change this forecast")  # fmt: skip
            return [line] * (context.shape[0] * context.shape[1])
        if net.backbone is None or self.tokenizer_ is None:
            return ["(no text prototypes: core.backbone is none)"] * (context.shape[0] * context.shape[1])
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
        "use_references_", "use_classical_text_", "reference_failed_", "reference_seconds_", "start_mix_",
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
        }
        meta["reference_members"] = list(self.references_)
        if self.references_:
            joblib.dump(self.references_, directory / REFERENCES_FILE)
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
        self.use_references_ = self.use_classical_text_ = False  # runs saved before the fusion
        self.reference_failed_, self.reference_seconds_, self.start_mix_ = {}, {}, None
        for k, v in meta["fitted"].items():
            setattr(self, k, v)
        self.references_ = {}
        if meta.get("reference_members"):
            refs = joblib.load(directory / REFERENCES_FILE)
            self.references_ = {n: refs[n] for n in meta["reference_members"]}
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
