"""Reproduce the accuracy tables of BENCHMARKS.md.

    python benchmarks/suite.py [--datasets etth1,ettm1,exchange] [--horizons 96,192,336,720]
                               [--seeds 0,1,2] [--members ...] [--set section.key=value ...]

Runs ``HybridForecaster.fit`` and ``evaluate`` for every dataset and seed (all
horizons in one fit), each fit in a fresh process so that its peak memory is
its own. Writes ``benchmarks/results.json`` (one record per dataset, horizon,
seed, model and code version), a plot per dataset
(``benchmarks/plots/<dataset>.png``) and the tables between the ``suite``
markers of BENCHMARKS.md, after every fit; records of datasets and seeds not
run this time are kept, and records of the previous design (version
``v1-validation``: router and static weights learned on the validation part,
members fitted on train only) stay beside the current ones (``v2-crossfit``)
for the before / after table. The test set chooses nothing.

Per model a record holds the test MSE / MAE (members refitted on train + val,
as deployed), the out-of-fold MSE, the train-only test MSE of members, and
for ``hybrid`` the coverage and width of its 80 / 95 % bands.
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
sys.path.insert(0, str(ROOT / "benchmarks"))  # _machine beside this script (benchmarks/ is not a package)
from _machine import cpu_model  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
FILES = {"etth1": "ETTh1.csv", "ettm1": "ETTm1.csv.gz", "exchange": "exchange_rate.csv", "weather": "weather.csv.gz"}
# Published numbers at input length 512 (BENCHMARKS.md, "Published numbers"): MSE by horizon.
PUBLISHED = {
    "etth1": {
        "Time-LLM (LLaMA-7B, paper)": {96: 0.362, 192: 0.398, 336: 0.430, 720: 0.442},
        "PatchTST": {96: 0.370, 192: 0.413, 336: 0.422, 720: 0.447},
        "DLinear": {96: 0.375, 192: 0.405, 336: 0.439, 720: 0.472},
        "GPT4TS (GPT-2)": {96: 0.376, 192: 0.416, 336: 0.442, 720: 0.477},
    },
    "ettm1": {"Time-LLM (LLaMA-7B, paper)": {96: 0.272, 192: 0.310, 336: 0.352, 720: 0.383}},
    # the -9999 sentinels left in as numbers (read with --config weather-benchmark); Time-LLM drops the last batch
    "weather": {"Time-LLM (LLaMA-7B, paper)": {96: 0.147, 192: 0.189, 336: 0.262, 720: 0.304},
                "PatchTST": {96: 0.149}},
}
BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"
VERSION = "v2-crossfit"  # this code's records; "v1-validation": the design before cross-fitting


def published(table: str) -> dict[str, dict[int, float]]:
    """The published numbers a suite table is compared with: its dataset's.

    The ``weather-core*`` tables (``--label``: weather read as the literature
    reads it, with the core trained longer) are weather; ``weather-interpolated``
    is a different task and has none.
    """
    return PUBLISHED.get("weather" if table.startswith("weather-core") else table, {})


def machine() -> str:
    cpu = cpu_model()
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {gpu}, Python {platform.python_version()}"


def _one_fit(dataset: str, horizons: list[int], seed: int, members: list[str] | None, sets: list[str],
             run_root: str, queue: mp.Queue, config: str | None = None) -> None:
    sys.path.insert(0, str(ROOT))
    from hybrid.api import HybridForecaster

    task: dict = {"horizons": tuple(horizons), "seed": seed}
    if members:
        task["members"] = tuple(members)
    t0 = time.perf_counter()
    model = HybridForecaster(config_file=config, sets=["runtime.progress=false", *sets], **task)
    model.fit(str(DATA / FILES[dataset]), run_dir=Path(run_root) / f"{dataset}-seed{seed}", overwrite=True)
    seconds = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    manifest = model.manifest_
    by_h: dict[str, dict[str, float]] = {}
    for h in map(str, horizons):  # wall time per horizon: every member at every stage, the combination, the test
        sec = manifest["results"][h]["seconds"]
        by_h[h] = {"horizon_seconds": sec["total"],
                   "core_seconds": sum(v for n, v in sec.items() if n.startswith("timellm"))}
    queue.put({"evaluation": model.evaluate(), "fit_seconds": seconds, "peak_rss_mb": rss_mb,
               "members": list(manifest["members"]), "by_horizon": by_h,
               "router_check": manifest["config"]["router"]["check"],
               "combiner": {h: manifest["results"][h]["combiner"] for h in map(str, horizons)}})


def run_fit(dataset: str, horizons: list[int], seed: int, members: list[str] | None, sets: list[str],
            run_root: Path, config: str | None = None) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_one_fit, args=(dataset, horizons, seed, members, sets, str(run_root), queue, config))
    proc.start()
    import queue as queue_module

    while True:  # a child that dies never puts its result: do not wait for it forever
        try:
            result = queue.get(timeout=5)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"fit of {dataset} seed {seed} failed (exit {proc.exitcode})") from None
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"fit of {dataset} seed {seed} failed (exit {proc.exitcode})")
    return result


def records_from(dataset: str, seed: int, result: dict, command: str) -> list[dict]:
    out = []
    for h, by_model in result["evaluation"]["horizons"].items():
        horizon = str(h)  # evaluate() keys horizons by int; the manifest's tables by str
        comb = result["combiner"][horizon]
        for model, scores in by_model.items():
            test = scores.get("test") or {}
            if not test:
                continue
            rec = {
                "version": VERSION, "dataset": dataset, "horizon": int(horizon), "seed": seed, "model": model,
                "mse": test["mse"], "mae": test["mae"], "oof_mse": (scores.get("oof") or {}).get("mse"),
                "fit_seconds": round(result["fit_seconds"], 1), "peak_rss_mb": round(result["peak_rss_mb"], 1),
                **{k: round(v, 1) for k, v in result.get("by_horizon", {}).get(horizon, {}).items()},
                "command": command,
            }
            train_only = scores.get("test_train_only")
            if train_only and train_only is not test:
                rec["train_only_mse"], rec["train_only_mae"] = train_only["mse"], train_only["mae"]
            if model == "hybrid":
                rec["used"], rec["fallback"] = comb["used"], comb["fallback"]
                rec["router_check"] = result["router_check"]  # records without it ran the one_se check
                for level, b in (test.get("intervals") or {}).items():
                    rec[f"coverage_{level}"], rec[f"width_{level}"] = b["coverage"], b["width"]
                    rec[f"interval_score_{level}"] = b["interval_score"]
            out.append(rec)
    return out


def version(r: dict) -> str:
    return r.get("version", "v1-validation")


def is_peer_record(r: dict) -> bool:
    """Records written by ``benchmarks/peers.py`` (``sf:AutoETS``, ``nf:PatchTST``, ``hybrid:hybrid``, ...)."""
    return ":" in r["model"]


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Records of ``old`` whose (version, dataset, seed, horizon) ``new`` does not cover, then ``new``.

    Keyed by horizon too, so that one horizon per process (the way long runs are split) adds to the earlier
    horizons of the same seed instead of dropping them. peers.py's records are kept.
    """
    def key(r: dict) -> tuple:
        return version(r), r["dataset"], r["seed"], r["horizon"]

    done = {key(r) for r in new}
    return [r for r in old if is_peer_record(r) or key(r) not in done] + new


def before_after(records: list[dict], dataset: str) -> list[str]:
    """The previous design against this one, same dataset: best member in hindsight, equal weights, hybrid."""
    lines: list[str] = []
    old = [r for r in records if r["dataset"] == dataset and version(r) == "v1-validation"]
    new = [r for r in records if r["dataset"] == dataset and version(r) == VERSION]
    if not old or not new:
        return lines
    horizons = sorted({r["horizon"] for r in new} & {r["horizon"] for r in old})

    def mean(rows: list[dict], model: str, h: int, key: str = "mse") -> float | None:
        sel = [r[key] for r in rows if r["model"] == model and r["horizon"] == h and r.get(key) is not None]
        return float(np.mean(sel)) if sel else None

    def best(rows: list[dict], h: int) -> tuple[str, float]:
        members = {r["model"] for r in rows if r.get("oof_mse") is not None or version(r) != VERSION} - {
            "equal", "inverse_error", "best_single", "top_k", "hybrid", "router_vote", "router_select", "router_rules"}
        scored = {m: mean(rows, m, h) for m in members}
        m = min((k for k in scored if scored[k] is not None), key=lambda k: scored[k])
        return m, scored[m]

    lines += [f"Before (v1: weights learned on the validation part, members fitted on train) and after (v2: "
              f"cross-fitted stacking, members refitted on train + val), {dataset}, test MSE:", "",
              "| | " + " | ".join(str(h) for h in horizons) + " |", "|---|" + "---|" * len(horizons)]
    for label, rows in (("v1", old), ("v2", new)):
        cells = []
        for h in horizons:
            m, v = best(rows, h)
            cells.append(f"{v:.3f} ({m})")
        lines.append(f"| {label} best member in hindsight | " + " | ".join(cells) + " |")
        for model in ("equal", "hybrid"):
            vals = [mean(rows, model, h) for h in horizons]
            lines.append(f"| {label} {model} | " + " | ".join("" if v is None else f"{v:.3f}" for v in vals) + " |")
    lines.append("")
    return lines


def tables(records: list[dict]) -> str:
    lines: list[str] = []
    current = [r for r in records if version(r) == VERSION]
    for dataset in sorted({r["dataset"] for r in current}):
        rows = [r for r in current if r["dataset"] == dataset]
        horizons = sorted({r["horizon"] for r in rows})
        by_h = {h: sorted({r["seed"] for r in rows if r["horizon"] == h}) for h in horizons}
        if all(v == by_h[horizons[0]] for v in by_h.values()):
            seeds = f"seeds {by_h[horizons[0]]}"
        else:  # a later seed at some horizons only
            seeds = "seeds " + ", ".join(f"{v} at {h}" for h, v in by_h.items())
        models = list(dict.fromkeys(r["model"] for r in rows))
        lines += [f"### {dataset} (test MSE / MAE, mean ± std over {seeds}; members refitted on train + val)",
                  "", "| model | " + " | ".join(str(h) for h in horizons) + " | avg MSE |",
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
        for model in models:  # the train-only fits of the members (what published deep models report)
            vals = [[r["train_only_mse"] for r in rows if r["model"] == model and r["horizon"] == h
                     and "train_only_mse" in r] for h in horizons]
            if all(vals):
                cells = [f"{np.mean(v):.3f}" for v in vals]
                lines.append(f"| {model} (train-only fit) | " + " | ".join(cells) +
                             f" | {np.mean([np.mean(v) for v in vals]):.3f} |")
        used = [[f"{r['used']}" for r in rows if r["model"] == "hybrid" and r["horizon"] == h] for h in horizons]
        lines.append("| *what hybrid used (per seed)* | " + " | ".join(", ".join(u) for u in used) + " | |")
        for name, by_h in published(dataset).items():
            if not any(h in by_h for h in horizons):
                continue  # nothing published at this table's horizons (PatchTST: 96 only)
            cells = [f"{by_h[h]:.3f}" if h in by_h else "" for h in horizons]
            avg = f"{np.mean([by_h[h] for h in horizons]):.3f}" if all(h in by_h for h in horizons) else ""
            lines.append(f"| *published: {name}* | " + " | ".join(cells) + f" | {avg} |")
        cost: dict[tuple[int, str], tuple[float, float, list[int]]] = {}  # one entry per fit process
        for r in rows:
            key = (r["seed"], r.get("command", ""))
            c = cost.setdefault(key, (r["fit_seconds"], r["peak_rss_mb"], []))
            if r["horizon"] not in c[2]:
                c[2].append(r["horizon"])
        commands = sorted({r.get("command", "(not recorded)") for r in rows})
        lines += ["", "Command: " + "; ".join(f"`{c}`" for c in commands), "",
                  "Fit cost per fit process (all its horizons, all members): " + "; ".join(
                      f"seed {s}, H {'/'.join(map(str, sorted(c[2])))}: {c[0]:.0f} s, peak RSS {c[1]:.0f} MB"
                      for (s, _), c in sorted(cost.items())), ""]
        timed = [r for r in rows if "horizon_seconds" in r and r["model"] == "hybrid"]
        if timed:
            lines += ["| horizon | fit + evaluate s per seed (median) | of which the core | seeds |", "|---|---|---|---|"]
            for h in horizons:
                sel = [r for r in timed if r["horizon"] == h]
                if sel:
                    lines.append(f"| {h} | {np.median([r['horizon_seconds'] for r in sel]):.0f} | "
                                 f"{np.median([r['core_seconds'] for r in sel]):.0f} | {len(sel)} |")
            lines.append("")
        hyb = [r for r in rows if r["model"] == "hybrid" and "coverage_80" in r]
        if hyb:
            lines += ["| horizon | 80 % coverage | 80 % width | 95 % coverage | 95 % width | seeds |",
                      "|---|---|---|---|---|---|"]
            for h in horizons:
                sel = [r for r in hyb if r["horizon"] == h]
                if sel:
                    lines.append(f"| {h} | {np.mean([r['coverage_80'] for r in sel]):.3f} | "
                                 f"{np.mean([r['width_80'] for r in sel]):.3f} | "
                                 f"{np.mean([r['coverage_95'] for r in sel]):.3f} | "
                                 f"{np.mean([r['width_95'] for r in sel]):.3f} | {len(sel)} |")
            lines.append("")
        lines += before_after(records, dataset)
        lines += [f"![{dataset}](benchmarks/plots/{dataset}.png)", ""]
    return "\n".join(lines)


def plot(records: list[dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    current = [r for r in records if version(r) == VERSION]
    for dataset in sorted({r["dataset"] for r in current}):
        rows = [r for r in current if r["dataset"] == dataset]
        horizons = sorted({r["horizon"] for r in rows})
        fig, ax = plt.subplots(figsize=(10, 4.8))
        colours = plt.cm.tab20(np.linspace(0, 1, 20))
        combiners = {"equal", "inverse_error", "best_single", "top_k", "greedy", "median"}
        for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
            ys = [np.mean([r["mse"] for r in rows if r["model"] == model and r["horizon"] == h] or [np.nan])
                  for h in horizons]
            style = dict(lw=1, alpha=0.85, color=colours[i % 20])  # one colour per line; combiners dash-dotted
            if model in combiners or model.startswith("router_"):
                style["ls"] = "-."
            if model == "hybrid":
                style = dict(lw=2.5, color="black")
            ax.plot(horizons, ys, marker="o", label=model, **style)
        for name, by_h in published(dataset).items():
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
    parser.add_argument("--config", default=None, help="extra config layer: a YAML file or a shipped name "
                        "(weather: weather-benchmark for the literature's treatment)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"))
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "out" / "runs"))
    parser.add_argument("--fresh", action="store_true", help="drop the records already in --out")
    parser.add_argument("--label", default="", help="the table the records go to (default: the dataset), e.g. "
                        "weather-core-p64 for weather with another core budget; one dataset only")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"benchmark data not found at {DATA}", file=sys.stderr)
        return 2
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    horizons = [int(h) for h in args.horizons.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    members = [m.strip() for m in args.members.split(",") if m.strip()] or None
    if args.label and len(datasets) != 1:
        print(f"--label names one table; got {len(datasets)} datasets: run one dataset per --label", file=sys.stderr)
        return 2
    out = Path(args.out)
    records: list[dict] = json.loads(out.read_text()) if out.exists() and not args.fresh else []
    command = ("python benchmarks/suite.py --datasets {dataset} "
               f"--horizons {args.horizons} --seeds {args.seeds}"
               + (f" --members {args.members}" if members else "")
               + (f" --config {args.config}" if args.config else "")
               + "".join(f" --set {s}" for s in args.set)
               + (f" --label {args.label}" if args.label else ""))
    plots = Path(args.markdown).parent / "benchmarks" / "plots"  # where the markdown's image links point
    t_all = time.perf_counter()
    for dataset in datasets:
        for seed in seeds:
            t0 = time.perf_counter()
            result = run_fit(dataset, horizons, seed, members, args.set, Path(args.runs), args.config)
            records = merge(records, records_from(args.label or dataset, seed, result, command.format(dataset=dataset)))
            print(f"{dataset} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
            # written after every fit, so that a long sweep can be stopped and its finished parts kept
            out.write_text(json.dumps(records, indent=1) + "\n")
            own = [r for r in records if not is_peer_record(r)]  # the peers have their own report (peers.md)
            plot(own, plots)
            update_markdown(Path(args.markdown), f"Machine: {machine()}.\n\n" + tables(own))
    print(f"wall time {(time.perf_counter() - t_all) / 60:.1f} min")
    print(tables([r for r in records if not is_peer_record(r)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
