"""Reproduce the accuracy tables of BENCHMARKS.md.

    python benchmarks/suite.py [--datasets etth1,ettm1,exchange] [--horizons 96,192,336,720]
                               [--seeds 0,1,2] [--members ...] [--set section.key=value ...]

Runs ``HybridForecaster.fit`` and ``evaluate`` for every dataset and seed (all
horizons in one fit), each fit in a fresh process so that its peak memory is
its own. Writes ``benchmarks/results.json`` (one record per dataset, horizon,
seed and model), a plot per dataset (``benchmarks/plots/<dataset>.png``) and
the tables between the ``suite`` markers of BENCHMARKS.md, after every fit;
records of datasets and seeds not run this time are kept. The test set
chooses nothing: every number comes from a run whose choices were made on
validation.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = {"etth1": "ETTh1.csv", "ettm1": "ETTm1.csv.gz", "exchange": "exchange_rate.csv"}
# Published numbers at input length 512 (../shared/ANCHORS.md): MSE by horizon.
PUBLISHED = {
    "etth1": {
        "Time-LLM (LLaMA-7B, paper)": {96: 0.362, 192: 0.398, 336: 0.430, 720: 0.442},
        "PatchTST": {96: 0.370, 192: 0.413, 336: 0.422, 720: 0.447},
        "DLinear": {96: 0.375, 192: 0.405, 336: 0.439, 720: 0.472},
        "GPT4TS (GPT-2)": {96: 0.376, 192: 0.416, 336: 0.442, 720: 0.477},
    },
    "ettm1": {"Time-LLM (LLaMA-7B, paper)": {96: 0.272, 192: 0.310, 336: 0.352, 720: 0.383}},
}
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {gpu}, Python {platform.python_version()}"


def _one_fit(dataset: str, horizons: list[int], seed: int, members: list[str] | None, sets: list[str],
             run_root: str, queue: mp.Queue) -> None:
    sys.path.insert(0, str(ROOT))
    from hybrid.api import HybridForecaster

    task: dict = {"horizons": tuple(horizons), "seed": seed}
    if members:
        task["members"] = tuple(members)
    t0 = time.perf_counter()
    model = HybridForecaster(sets=["runtime.progress=false", *sets], **task)
    model.fit(str(DATA / FILES[dataset]), run_dir=Path(run_root) / f"{dataset}-seed{seed}")
    seconds = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    manifest = model.manifest_
    by_h: dict[str, dict[str, float]] = {}
    for h in map(str, horizons):  # wall time per horizon: every member's fit + predict, and the router
        members_s = {n: info["fit_seconds"].get(h, 0.0) + info["predict_seconds"].get(h, 0.0)
                     for n, info in manifest["members"].items()}
        router_s = (manifest["combiner"].get(h, {}).get("router") or {}).get("seconds", 0.0)
        by_h[h] = {"horizon_seconds": sum(members_s.values()) + router_s,
                   "core_seconds": sum(v for n, v in members_s.items() if n.startswith("timellm"))}
    queue.put({"evaluation": model.evaluate(), "fit_seconds": seconds, "peak_rss_mb": rss_mb,
               "members": list(manifest["members"]), "by_horizon": by_h})


def run_fit(dataset: str, horizons: list[int], seed: int, members: list[str] | None, sets: list[str],
            run_root: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_one_fit, args=(dataset, horizons, seed, members, sets, str(run_root), queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"fit of {dataset} seed {seed} failed (exit {proc.exitcode})")
    return result


def records_from(dataset: str, seed: int, result: dict, command: str) -> list[dict]:
    out = []
    for horizon, by_model in result["evaluation"]["horizons"].items():
        for model, scores in by_model.items():
            out.append({
                "dataset": dataset, "horizon": int(horizon), "seed": seed, "model": model,
                "mse": scores["test"]["mse"], "mae": scores["test"]["mae"],
                "val_mse": scores["val"]["mse"],
                "fit_seconds": round(result["fit_seconds"], 1), "peak_rss_mb": round(result["peak_rss_mb"], 1),
                **{k: round(v, 1) for k, v in result.get("by_horizon", {}).get(horizon, {}).items()},
                "command": command,
            })
    return out


def is_peer_record(r: dict) -> bool:
    """Records written by ``benchmarks/peers.py`` (``sf:AutoETS``, ``nf:PatchTST``, ``hybrid:hybrid``, ...)."""
    return ":" in r["model"]


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Records of ``old`` whose (dataset, seed) ``new`` does not cover, then ``new``; peers.py's records are kept."""
    done = {(r["dataset"], r["seed"]) for r in new}
    return [r for r in old if is_peer_record(r) or (r["dataset"], r["seed"]) not in done] + new


def tables(records: list[dict]) -> str:
    lines: list[str] = []
    for dataset in sorted({r["dataset"] for r in records}):
        rows = [r for r in records if r["dataset"] == dataset]
        horizons = sorted({r["horizon"] for r in rows})
        seeds = sorted({r["seed"] for r in rows})
        models = list(dict.fromkeys(r["model"] for r in rows))
        lines += [f"### {dataset} (test MSE / MAE, mean ± std over seeds {seeds})", "",
                  "| model | " + " | ".join(str(h) for h in horizons) + " | avg MSE |",
                  "|---|" + "---|" * (len(horizons) + 1)]
        for model in models:
            cells, avgs = [], []
            for h in horizons:
                sel = [r for r in rows if r["model"] == model and r["horizon"] == h]
                if not sel:
                    cells.append("")
                    continue
                mse = np.array([r["mse"] for r in sel])
                mae = np.array([r["mae"] for r in sel])
                avgs.append(mse.mean())
                spread = f" ± {mse.std():.3f}" if len(sel) > 1 else ""
                cells.append(f"{mse.mean():.3f}{spread} / {mae.mean():.3f}")
            avg = f"{np.mean(avgs):.3f}" if len(avgs) == len(horizons) else ""
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {avg} |")
        for name, by_h in PUBLISHED.get(dataset, {}).items():
            cells = [f"{by_h[h]:.3f}" if h in by_h else "" for h in horizons]
            avg = f"{np.mean([by_h[h] for h in horizons]):.3f}" if all(h in by_h for h in horizons) else ""
            lines.append(f"| *published: {name}* | " + " | ".join(cells) + f" | {avg} |")
        cost = {}
        for r in rows:
            cost.setdefault(r["seed"], (r["fit_seconds"], r["peak_rss_mb"]))
        commands = sorted({r.get("command", "(not recorded)") for r in rows})
        lines += ["", "Command: " + "; ".join(f"`{c}`" for c in commands), "",
                  "Fit cost per seed (all horizons, all members, one process): " + "; ".join(
                      f"seed {s}: {c[0]:.0f} s, peak RSS {c[1]:.0f} MB" for s, c in sorted(cost.items())), ""]
        timed = [r for r in rows if "horizon_seconds" in r and r["model"] == "hybrid"]
        if timed:
            lines += ["| horizon | fit + evaluate s per seed (median) | of which the core | seeds |", "|---|---|---|---|"]
            for h in horizons:
                sel = [r for r in timed if r["horizon"] == h]
                if sel:
                    lines.append(f"| {h} | {np.median([r['horizon_seconds'] for r in sel]):.0f} | "
                                 f"{np.median([r['core_seconds'] for r in sel]):.0f} | {len(sel)} |")
            lines.append("")
        lines += [f"![{dataset}](benchmarks/plots/{dataset}.png)", ""]
    return "\n".join(lines)


def plot(records: list[dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    for dataset in sorted({r["dataset"] for r in records}):
        rows = [r for r in records if r["dataset"] == dataset]
        horizons = sorted({r["horizon"] for r in rows})
        fig, ax = plt.subplots(figsize=(10, 4.8))
        colours = plt.cm.tab20(np.linspace(0, 1, 20))
        combiners = {"equal", "inverse_error", "best_single"}
        for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
            ys = [np.mean([r["mse"] for r in rows if r["model"] == model and r["horizon"] == h] or [np.nan])
                  for h in horizons]
            style = dict(lw=1, alpha=0.85, color=colours[i % 20])  # one colour per line; combiners dash-dotted
            if model in combiners or model.startswith("router_"):
                style["ls"] = "-."
            if model == "hybrid":
                style = dict(lw=2.5, color="black")
            ax.plot(horizons, ys, marker="o", label=model, **style)
        for name, by_h in PUBLISHED.get(dataset, {}).items():
            if all(h in by_h for h in horizons):
                ax.plot(horizons, [by_h[h] for h in horizons], ls="--", lw=1, label=f"{name} (published)")
        ax.set(xlabel="horizon", ylabel="test MSE (scaled)", title=f"{dataset}, input 512", xticks=horizons)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(out_dir / f"{dataset}.png", dpi=110)
        plt.close(fig)


def update_markdown(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{body}\n{END}", text, flags=re.S)
    path.write_text(new)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="etth1,ettm1,exchange")
    parser.add_argument("--horizons", default="96,192,336,720")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--members", default="", help="comma-separated; default: the config's members")
    parser.add_argument("--set", action="append", default=[], help="config override, repeatable")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "out" / "runs"))
    parser.add_argument("--fresh", action="store_true", help="drop the records already in --out")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"benchmark data not found at {DATA}", file=sys.stderr)
        return 2
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    horizons = [int(h) for h in args.horizons.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    members = [m.strip() for m in args.members.split(",") if m.strip()] or None
    out = Path(args.out)
    records: list[dict] = json.loads(out.read_text()) if out.exists() and not args.fresh else []
    command = ("python benchmarks/suite.py --datasets {dataset} "
               f"--horizons {args.horizons} --seeds {args.seeds}"
               + (f" --members {args.members}" if members else "")
               + "".join(f" --set {s}" for s in args.set))
    t_all = time.perf_counter()
    for dataset in datasets:
        for seed in seeds:
            t0 = time.perf_counter()
            result = run_fit(dataset, horizons, seed, members, args.set, Path(args.runs))
            records = merge(records, records_from(dataset, seed, result, command.format(dataset=dataset)))
            print(f"{dataset} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
            # written after every fit, so that a long sweep can be stopped and its finished parts kept
            out.write_text(json.dumps(records, indent=1) + "\n")
            own = [r for r in records if not is_peer_record(r)]  # the peers have their own report (peers.md)
            plot(own, ROOT / "benchmarks" / "plots")
            update_markdown(Path(args.markdown), f"Machine: {machine()}.\n\n" + tables(own))
    print(f"wall time {(time.perf_counter() - t_all) / 60:.1f} min")
    print(tables([r for r in records if not is_peer_record(r)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
