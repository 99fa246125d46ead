"""Training-step time of the core without a backbone (the ladder's ``none`` variants) on a CPU.

One batch of ``core.batch_size`` random samples (L 512) is pushed through
``--steps`` optimisation steps (forward, backward, gradient clipping, AdamW)
of the network ``core.budget: auto`` trains most (``backbone none``, plain,
patch 16 / stride 8), after ``--warmup`` steps, ``--runs`` times in
alternation; the median is reported for each horizon and three ways:

- before: torch's dropout modules and attention, as the core had them (each
  mask drawn one random number per element);
- now: the core as it is (its masks drawn by ``llm_core.layers.cpu_dropout``,
  the same rates);
- no attention dropout: ``core.attn_dropout`` 0 (torch's fused attention runs).

The steps run under bf16 autocast as a fit does on a CPU (``core.cpu_bf16``, on by default); ``--fp32`` runs
them without. The steps' data are random: only the time is measured.

Usage:
    python benchmarks/core_step.py [--horizons 96,336] [--steps 200] [--runs 3] [--fp32] [--out FILE (appended)]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model  # noqa: E402

from llm_core.config import CoreConfig  # noqa: E402
from llm_core.layers import Dropout, SelfAttention, TimeLLMNet  # noqa: E402

L, PATCH = 512, 16


def torch_masks(net: TimeLLMNet) -> TimeLLMNet:
    """The network with torch's own dropout modules and attention in place of the core's (the same parameters)."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Dropout):
                setattr(module, name, torch.nn.Dropout(child.p))
            elif isinstance(child, SelfAttention):
                plain = torch.nn.MultiheadAttention(child.embed_dim, child.num_heads, dropout=child.dropout,
                                                    batch_first=True)
                plain.load_state_dict(child.state_dict())
                setattr(module, name, plain)
    return net


def step_ms(horizon: int, way: str, steps: int, warmup: int, bf16: bool) -> float:
    """Milliseconds per training step of a fresh network (seed 0) built ``way``: before, now or no_attn."""
    cfg = CoreConfig()
    torch.manual_seed(0)
    net = TimeLLMNet(context_length=L, horizon=horizon, patch_len=PATCH, stride=PATCH // 2, d_model=cfg.d_model,
                     n_heads=cfg.n_heads, d_keys=cfg.d_keys, num_prototypes=cfg.num_prototypes, d_ff=cfg.d_ff,
                     dropout=cfg.dropout, attn_dropout=0.0 if way == "no_attn" else cfg.attn_dropout,
                     backbone=None)  # fmt: skip
    if way == "before":
        net = torch_masks(net)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    x, y = torch.randn(cfg.batch_size, L), torch.randn(cfg.batch_size, horizon)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--horizons", default="96,336")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast (a fit's core.cpu_bf16: false)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = CoreConfig().batch_size
    load = os.getloadavg()[0]
    lines = [f"Machine: {cpu_model()}, {os.cpu_count()} cores, 1-minute load {load:.2f} at the start; "
             f"torch {torch.__version__}, {args.threads} threads; batch {batch}, L {L}, patch {PATCH}; "
             f"{'fp32' if args.fp32 else 'bf16 autocast (as a fit)'}; median of {args.runs} runs of {args.steps} "
             "steps.", "",
             "| H | before: torch's masks, ms/step | now: the core's masks, ms/step | speed-up | "
             "core.attn_dropout 0, ms/step | s per 65,536 samples now |", "|---|---|---|---|---|---|"]  # fmt: skip
    ways = ("before", "now", "no_attn")
    for h in (int(v) for v in args.horizons.split(",")):
        runs: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(args.runs):
            for w in ways:
                runs[w].append(step_ms(h, w, args.steps, args.warmup, not args.fp32))
        before, now, no_attn = (statistics.median(runs[w]) for w in ways)
        lines.append(f"| {h} | {before:.2f} | {now:.2f} | {before / now:.2f}x | {no_attn:.2f} | "
                     f"{now * 65536 / batch / 1e3:.1f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with args.out.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
