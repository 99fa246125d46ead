"""Training loop of the Time-LLM core: batches, optimiser, schedule, early stopping.

The trainer knows nothing about where samples come from: a :class:`Samples`
gives context rows, targets, cached prompt ids and reference forecasts for
sample indices. It trains the network's trainable parts with AdamW, a
one-cycle / cosine / constant schedule and gradient clipping, scores every
epoch on validation samples and keeps the best state (epoch 0, the untrained
start, is a candidate when the network starts from a reference mix). With
``stop_after`` it trains exactly that many epochs of the same schedule and
scores nothing (a refit with the epoch count chosen earlier). With a
``deadline`` (the core's ``budget: auto`` ladder) it stops after the epoch
during which the deadline passed, keeping the best state so far.

Under torchrun (several processes) training is data-parallel
(:mod:`llm_core.ddp`): each rank takes its shard of every epoch's samples,
gradients are averaged over the ranks, validation losses summed, so every
rank keeps the same state. ``core.batch_size`` is the batch of one step over
all the ranks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from kernel.errors import HybridInputError
from llm_core import ddp
from llm_core.config import CoreConfig
from llm_core.layers import TimeLLMNet
from llm_core.prompt import PromptCache, SampleCache

log = logging.getLogger(__name__)


@dataclass
class Samples:
    """A fixed set of samples (one channel of one window each) the network reads.

    Attributes:
        rows: sample indices [m] -> (context rows [m, L], targets [m, H]).
        prompts: cached prompt ids (None: no prompt).
        refs: cached reference forecasts [m, R, H] (None: no references).
    """

    rows: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    prompts: PromptCache | None = None
    refs: SampleCache | None = None

    def batch(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None,
                                                np.ndarray | None]:
        """x [m, L], y [m, H], prompt ids and mask [m, P] (or None), references [m, R, H] (or None)."""
        x, y = self.rows(index)
        ids = mask = None
        if self.prompts is not None:
            ids, mask = self.prompts.get(index)
        refs = self.refs.get(index) if self.refs is not None else None
        return x, y, ids, mask, refs


@dataclass
class TrainResult:
    """What training did: the loss per epoch, the chosen epoch, its validation loss, the optimiser steps taken."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val: float = math.inf
    steps: int = 0


class Trainer:
    """Trains and runs one :class:`TimeLLMNet` on one device.

    Args:
        net: the network (its backbone frozen).
        config: the ``core`` section (batch sizes, optimiser, schedule, patience, progress).
        device: where the network lives.
        autocast: a context manager factory for mixed precision (bf16 or none).
    """

    def __init__(self, net: TimeLLMNet, config: CoreConfig, device: torch.device,
                 autocast: Callable[[], AbstractContextManager]) -> None:
        self.net, self.config, self.device, self.autocast = net, config, device, autocast

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def forward(self, x: np.ndarray, ids: np.ndarray | None, mask: np.ndarray | None,
                refs: np.ndarray | None) -> np.ndarray:
        """Samples x [m, L] (+ prompt ids [m, P], references [m, R, H]) -> forecasts [m, H] float32, eval mode."""
        net = self.net
        out = np.empty((x.shape[0], net.horizon), dtype=np.float32)
        bs = self.config.eval_batch_size

        def tensor(a: np.ndarray, i: int) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a[i : i + bs])).to(self.device)

        if refs is not None and net.head_is_zero():
            # The head is zero (the checkpoint chosen on validation is the untrained start): the forecast is the
            # reference mix alone and the backbone cannot change it, so it is not run.
            for i in range(0, x.shape[0], bs):
                out[i : i + bs] = net.reference_mix_forecast(tensor(x, i), tensor(refs, i)).cpu().numpy()
            return out
        was_training = net.training
        net.eval()
        with self.autocast():
            kv = net.prototype_kv()  # computed once for every batch
            for i in range(0, x.shape[0], bs):
                ib = tensor(ids, i) if ids is not None else None
                mb = tensor(mask, i) if mask is not None else None
                rb = tensor(refs, i) if refs is not None else None
                out[i : i + bs] = net(tensor(x, i), ib, mb, kv=kv, refs=rb).float().cpu().numpy()
        net.train(was_training)
        return out

    def score(self, samples: Samples, index: np.ndarray) -> float:
        """MSE of the network on the samples ``index``."""
        x, y, ids, mask, refs = samples.batch(index)
        return float(np.mean((self.forward(x, ids, mask, refs) - y) ** 2))

    def _val_loss(self, samples: Samples, index: np.ndarray, rank: int, world: int) -> float:
        """:meth:`score` of ``index``; with several ranks each scores its share and the squared errors are summed."""
        if world == 1:
            return self.score(samples, index)
        mine = index[rank::world]
        sse = 0.0
        if len(mine):
            x, y, ids, mask, refs = samples.batch(mine)
            sse = float(np.sum((self.forward(x, ids, mask, refs).astype(np.float64) - y) ** 2))
        total, count = ddp.all_sum([sse, float(len(mine) * self.net.horizon)], self.device)
        return total / count

    # ------------------------------------------------------------------ training
    def _optimiser(self, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, object, list[torch.nn.Parameter]]:
        cfg = self.config
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = max(2, steps_per_epoch * cfg.epochs)
        if cfg.schedule == "onecycle" and abs(cfg.pct_start * total - 1.0) < 1e-9:
            total += 1  # OneCycleLR divides by its warm-up in steps, pct_start * total - 1: zero here (e.g. 5 x 0.2)
        if cfg.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=cfg.pct_start)
        elif cfg.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
        elif cfg.schedule == "constant":
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        else:
            raise HybridInputError(f"core.schedule must be onecycle, cosine or constant; got {cfg.schedule!r}.")
        return opt, sched, params

    def fit(self, train: Samples, pool: np.ndarray, per_epoch: int, rng: np.random.Generator,
            val: Samples | None = None, vpool: np.ndarray | None = None, stop_after: int | None = None,
            start_val: float | None = None, deadline: float | None = None) -> TrainResult:
        """Train; keep the state of the best validation epoch (or of the last epoch with ``stop_after``).

        Args:
            train: training samples; pool: the sample indices to draw from.
            per_epoch: samples drawn (without replacement) per epoch.
            rng: the fit's random generator (the order of the samples).
            val, vpool: validation samples and the indices scored each epoch.
            stop_after: train exactly this many epochs (of the schedule set by
                ``config.epochs``) without scoring.
            start_val: the validation loss of the untrained start, when it is
                a checkpoint candidate (epoch 0).
            deadline: a ``time.perf_counter()`` value; when scoring, no epoch
                starts after it (None: no limit). Under torchrun the ranks
                agree: training stops when any rank is past it.
        """
        cfg, net = self.config, self.net
        result = TrainResult()
        epochs = cfg.epochs if stop_after is None else min(stop_after, cfg.epochs)
        scoring = stop_after is None and val is not None and vpool is not None
        best_state = None
        if scoring and start_val is not None:
            result.best_val = start_val
            best_state = {k: v.detach().clone() for k, v in net.trainable_state().items()}
            result.history.append({"epoch": 0, "val_loss": start_val, "seconds": 0.0})
        if epochs < 1:
            net.eval()
            return result
        rank, world = ddp.join(self.device)
        model = ddp.wrap(net, self.device) if world > 1 else net
        batch = max(1, cfg.batch_size // world)  # per rank; one step covers batch * world samples
        if cfg.batch_size % world:
            log.warning("timellm: core.batch_size %d is not a multiple of the %d ranks; each step takes %d samples.",
                        cfg.batch_size, world, batch * world)
        opt, sched, params = self._optimiser(math.ceil(per_epoch // world / batch))  # steps per epoch on each rank
        bad = 0
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            net.train()
            order = ddp.shard(rng.permutation(pool)[:per_epoch], rank, world)  # same permutation on every rank
            total, count = 0.0, 0
            bar = tqdm(range(0, len(order), batch), desc=f"timellm epoch {epoch}/{epochs}",
                       disable=not cfg.progress or rank != 0, leave=False)
            for i in bar:
                x, y, ids, mask, refs = train.batch(order[i : i + batch])
                tx, ty = torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)
                ti = torch.from_numpy(ids).to(self.device) if ids is not None else None
                tm = torch.from_numpy(mask).to(self.device) if mask is not None else None
                tr = torch.from_numpy(refs).to(self.device) if refs is not None else None
                with self.autocast():
                    out = model(tx, ti, tm, refs=tr)
                loss = torch.nn.functional.mse_loss(out.float(), ty)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                result.steps += 1
                total += loss.item() * len(x)
                count += len(x)
                bar.set_postfix(loss=f"{total / count:.4f}")
            bar.close()
            total, count = ddp.all_sum([total, count], self.device) if world > 1 else (total, count)
            record = {"epoch": epoch, "train_loss": total / max(count, 1)}
            if scoring:
                record["val_loss"] = self._val_loss(val, vpool, rank, world)
            record["seconds"] = time.perf_counter() - t0
            result.history.append(record)
            log.info("timellm epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items()})
            if not scoring:
                result.best_epoch = epoch
                continue
            if record["val_loss"] < result.best_val:
                result.best_val, result.best_epoch, bad = record["val_loss"], epoch, 0
                best_state = {k: v.detach().clone() for k, v in net.trainable_state().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    log.info("timellm: early stop after epoch %d (best epoch %d).", epoch, result.best_epoch)
                    break
            if deadline is not None and epoch < epochs and self._past(deadline, world):
                log.info("timellm: the time budget is spent after epoch %d (best epoch %d).", epoch, result.best_epoch)
                break
        if best_state is not None:
            net.load_state_dict(best_state, strict=False)
        elif scoring:
            result.best_epoch = len(result.history)
        net.eval()
        return result

    def _past(self, deadline: float, world: int) -> bool:
        """Whether ``deadline`` has passed (on any rank, so that every rank stops after the same epoch)."""
        late = float(time.perf_counter() >= deadline)
        if world > 1:
            late = ddp.all_sum([late], self.device)[0]
        return late > 0
