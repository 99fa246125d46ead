"""How ``hybrid fit`` grows with the number of series: many series in long format on 2 local workers.

Synthetic hourly series (seeded): different lengths (240-480 rows) and start times, a daily cycle of random
amplitude and phase, a small trend and AR(1) noise of random size; so the file is a panel, not one wide table.
Each size is fitted in a fresh process (``hybrid fit`` through the CLI's own code, loky with
``runtime.n_jobs`` workers); ETS and ARIMA run one task per series, the linear family once across all series.

Reported per size: wall seconds of the whole fit (load, cross-fitting with 5 folds, combination, scoring every
test window, writing the run), seconds per member, peak RSS of the main process (the loky workers are separate
processes that hold one series at a time), test MSE of the hybrid and of the best member, and the log-log slope
of fit time against the number of series (1 = linear).

Usage:
    python benchmarks/panel_scaling.py --sizes 125,250,500,1000,2000 --out benchmarks/panel_scaling.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402

PERIOD = 24


def make_panel(n_series: int, seed: int = 0, min_rows: int = 240, max_rows: int = 480) -> pd.DataFrame:
    """``unique_id, ds, y`` rows of ``n_series`` synthetic hourly series (see the module docstring)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_series):
        n = int(rng.integers(min_rows, max_rows + 1))
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(hours=int(rng.integers(0, 500)))
        t = np.arange(n)
        noise = rng.normal(0, rng.uniform(0.2, 1.0), n)
        ar = np.zeros(n)
        for k in range(1, n):
            ar[k] = 0.7 * ar[k - 1] + noise[k]
        y = (rng.normal(10, 3) + rng.normal(0, 0.01) * t
             + rng.uniform(0.5, 3) * np.sin(2 * np.pi * t / PERIOD + rng.uniform(0, 2 * np.pi)) + ar)
        frames.append(pd.DataFrame({"unique_id": f"s{i:05d}", "ds": pd.date_range(start, periods=n, freq="h"),
                                    "y": y.round(4)}))
    return pd.concat(frames, ignore_index=True)


def _fit(args: list[str], run_dir: str, queue: mp.Queue) -> None:
    from hybrid.cli import main

    t0 = time.perf_counter()
    code = main([*args, "--run-dir", run_dir])
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"code": code, "wall_s": seconds, "peak_rss_mb": rss})


def run_size(n_series: int, members: str, n_jobs: int, L: int, H: int, folds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / f"panel{n_series}.csv"
        frame = make_panel(n_series)
        frame.to_csv(csv, index=False)
        args = ["fit", "--data", str(csv), "--context-length", str(L), "--horizon", str(H), "--members", members,
                "--set", "runtime.progress=false", "--set", f"runtime.n_jobs={n_jobs}", "--set", "runtime.backend=loky",
                "--set", f"stack.folds={folds}"]
        queue: mp.Queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_fit, args=(args, str(Path(tmp) / "run"), queue))
        proc.start()
        result = queue.get()
        proc.join(timeout=60)
        if proc.is_alive():  # the run is written and measured; a worker pool that will not shut down is not waited for
            proc.terminate()
        if result["code"] != 0:
            raise SystemExit(f"hybrid fit failed on {n_series} series (exit {result['code']})")
        manifest = json.loads((Path(tmp) / "run" / "manifest.json").read_text())
    entry = manifest["results"][str(H)]
    members_test = {n: entry["metrics"][n]["test"]["mse"] for n in entry["members"]}
    best = min(members_test, key=members_test.get)
    return {
        "series": n_series, "rows": int(manifest["n_rows"]), "wall_s": round(result["wall_s"], 2),
        "fit_seconds_total": manifest["fit_seconds_total"], "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "member_s": {n: entry["seconds"][n] for n in entry["members"]},
        "combine_s": entry["seconds"]["combine"], "test_s": entry["seconds"]["test"],
        "oof_windows": entry["oof_windows"], "test_windows": entry["test_windows"],
        "hybrid_test_mse": entry["metrics"]["hybrid"]["test"]["mse"], "router": entry["combiner"]["used"],
        "best_member": best, "best_member_test_mse": members_test[best], "load_avg": round(os.getloadavg()[0], 2),
    }


def slope(records: list[dict]) -> float:
    """Least-squares slope of log(fit seconds) on log(series)."""
    x = np.log([r["series"] for r in records])
    y = np.log([r["wall_s"] for r in records])
    return float(np.polyfit(x, y, 1)[0])


def to_markdown(records: list[dict], meta: dict) -> str:
    names = list(records[0]["member_s"])
    lines = [
        "# Fit time against the number of series (many series in long format), 2-core CPU",
        "",
        f"Generated by `benchmarks/panel_scaling.py` on {meta['cpu']} ({meta['cores']} cores), {meta['date']}. "
        f"Members `{meta['members']}`, L {meta['L']}, H {meta['H']}, {meta['folds']} cross-fitting folds, loky with "
        f"{meta['n_jobs']} workers; one fresh process per size, one run each (load avg is the machine's 1-minute load "
        "at the end of each fit). Synthetic hourly series of 240-480 rows with different starts (seed 0).",
        "",
        f"Command: `{meta['command']}`",
        "",
        "| series | rows | fit s | ms per series | " + " | ".join(f"{n} s" for n in names)
        + " | combine s | test s | peak RSS MB (main) | hybrid test MSE | best member (test MSE) | load avg |",
        "|---" * (10 + len(names)) + "|",
    ]
    for r in records:
        lines.append(
            f"| {r['series']} | {r['rows']:,} | {r['wall_s']:.1f} | {1000 * r['wall_s'] / r['series']:.0f} | "
            + " | ".join(f"{r['member_s'][n]:.1f}" for n in names)
            + f" | {r['combine_s']:.1f} | {r['test_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['hybrid_test_mse']:.4f} "
            f"({r['router']}) | {r['best_member']} ({r['best_member_test_mse']:.4f}) | {r['load_avg']} |"
        )
    if len(records) > 1:
        lines += ["", f"Log-log slope of fit seconds on the number of series: **{slope(records):.2f}** (1 = linear)."]
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["series"] for r in records], dtype=float)
    s = np.array([r["wall_s"] for r in records], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(n, s, "o-", label=f"hybrid fit (slope {slope(records):.2f})")
    ax.loglog(n, s[0] * n / n[0], "--", color="grey", label="linear growth from the smallest size")
    for name in records[0]["member_s"]:
        ax.loglog(n, [max(r["member_s"][name], 1e-2) for r in records], ":", marker=".", label=f"{name} (all stages)")
    ax.set_xticks(n, [str(int(x)) for x in n])
    ax.minorticks_off()
    ax.set_xlabel("number of series")
    ax.set_ylabel("seconds")
    ax.set_title("hybrid fit on many series, 2 loky workers")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="125,250,500,1000,2000")
    parser.add_argument("--members", default="seasonal_naive,linear,nlinear,dlinear,ets")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=48)
    parser.add_argument("--horizon", type=int, default=24)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/panel_scaling.md")
    parser.add_argument("--plot", default="benchmarks/plots/panel_scaling.png")
    parser.add_argument("--raw", default="", help="JSON lines of every size (appended)")
    parser.add_argument("--table-only", action="store_true",
                        help="rebuild the table and plot from --raw (the last record of each size) and stop")
    args = parser.parse_args()
    records = []
    if args.table_only:
        by_size = {r["series"]: r for r in map(json.loads, Path(args.raw).read_text().splitlines())}
        records = [by_size[n] for n in sorted(by_size)]
    for n in ([] if args.table_only else (int(x) for x in args.sizes.split(","))):
        rec = run_size(n, args.members, args.n_jobs, args.context_length, args.horizon, args.folds)
        print(json.dumps(rec), flush=True)
        records.append(rec)
        if args.raw:
            with open(args.raw, "a") as f:
                f.write(json.dumps(rec) + "\n")
    meta = {"cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "members": args.members,
            "L": args.context_length, "H": args.horizon, "folds": args.folds, "n_jobs": args.n_jobs,
            "command": "python benchmarks/panel_scaling.py " + " ".join(a for a in sys.argv[1:] if a != "--table-only")}
    Path(args.out).write_text(to_markdown(records, meta))
    if len(records) > 1:
        plot(records, Path(args.plot))
    print(f"wrote {args.out}" + (f" and {args.plot}" if len(records) > 1 else ""))


if __name__ == "__main__":
    main()
