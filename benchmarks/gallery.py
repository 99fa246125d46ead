"""The gallery: hybrid against its own best member on every real series that ships offline, and the benchmark files.

    python benchmarks/gallery.py [--cases airpassengers,etth1] [--seed 0] [--no-core] [--table-only] [--horizons 192,720]
    /work/venvs/peers/bin/python benchmarks/gallery.py --peers [--cases ...]   # statsforecast, in its environment

Cases: ``benchmarks/gallery_cases.py`` (fixed before any combination rule was chosen). Each case is fitted with
``HybridForecaster`` as a user would (its classical members, a seasonal-naive period expert per detected period,
and the Time-LLM core where a fit with it costs under two minutes: the short series and taylor), members
refitted on train + validation, seed 0; every member, every combiner and the deployed ``hybrid`` are read from the
manifest's test scores (every test window, stride 1, scaled units). The ratio is ``hybrid`` over the best member
in hindsight. Records go to ``benchmarks/gallery.jsonl`` (one line per case, horizon and seed; a rerun replaces
its own lines) and the table between the gallery markers of BENCHMARKS.md.

``--peers`` (run with the peers environment's python, see ``benchmarks/peers.py``): statsforecast's AutoETS,
AutoARIMA and AutoTheta on the same windows. Each is fitted per channel on the scaled history (train +
validation, as hybrid's members are refitted), season length the dominant detected period (none above
``MAX_SF_SEASON``); each test window is
forecast with the library's ``forward`` from every row before its first target (the library's own use: no refit
per window). Their median is the elementwise median of the three forecasts. Records: ``benchmarks/gallery_peers.jsonl``.
The benchmark files' peers are too slow for every window this way; their rows stay empty (``benchmarks/peers.md``
has statsforecast on them, fitted on the training part).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import cpu_model  # noqa: E402
from gallery_cases import CASES, OUT_CSV, Case, case  # noqa: E402

RECORDS = ROOT / "benchmarks" / "gallery.jsonl"
PEER_RECORDS = ROOT / "benchmarks" / "gallery_peers.jsonl"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- gallery:begin -->", "<!-- gallery:end -->"
CORE_GROUPS = ("short",)  # the core joins where a fit with it costs under two minutes on 2 cores
CORE_CASES = ("taylor",)
COMBINERS = ("equal", "inverse_error", "best_single", "top_k", "greedy", "median", "router_vote", "router_select",
             "router_rules")
SF_MODELS = ("AutoETS", "AutoARIMA", "AutoTheta")
MAX_SF_SEASON = 52  # longer seasons (sunspots' 11-year cycle in months) make AutoARIMA's search run for hours


def with_core(c: Case, core: bool) -> bool:
    return core and (c.group in CORE_GROUPS or c.name in CORE_CASES)


def fit_case(c: Case, seed: int, core: bool) -> list[dict[str, Any]]:
    """Fit one case as a user would and read every test score from its manifest."""
    from hybrid.api import HybridForecaster

    members = (*c.members, "timellm") if with_core(c, core) else c.members
    model = HybridForecaster(config_file=c.config, sets=["runtime.progress=false", "task.period_experts=[seasonal_naive]",
                                                         *c.sets],
                             horizons=c.horizons, context_length=c.context_length, members=members, seed=seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model.fit(c.source(OUT_CSV), run_dir=Path(tmp) / "run")
    seconds = time.perf_counter() - t0
    manifest = model.manifest_
    rows = []
    for h in c.horizons:
        entry = manifest["results"][str(h)]
        metrics = entry["metrics"]
        test = {n: v["test"]["mse"] for n, v in metrics.items() if v.get("test")}
        names = [n for n in entry["combiner"]["members"]]
        best = min(names, key=test.__getitem__)
        bands = metrics["hybrid"]["test"].get("intervals", {})
        last = (entry.get("bands") or {}).get("hybrid", {}).get("last_fold", {})
        rows.append({
            "case": c.name, "group": c.group, "horizon": h, "seed": seed, "context_length": manifest["context_length"],
            "members": names, "core": "timellm" in names, "test_windows": manifest["windows"][str(h)]["test"],
            "test_mse": test, "oof_mse": {n: v["oof"]["mse"] for n, v in metrics.items() if v.get("oof")},
            "hybrid": test["hybrid"], "used": entry["combiner"]["used"], "best_member": best,
            "best_member_mse": test[best], "ratio": test["hybrid"] / test[best],
            "coverage": {lv: b["coverage"] for lv, b in bands.items()},
            "last_fold_coverage": {lv: b["coverage"] for lv, b in last.items()},
            "fit_seconds": round(seconds, 1), "combine_seconds": entry["seconds"].get("combine"),
            "router": manifest["config"]["router"], "machine": f"{cpu_model()}, Python {platform.python_version()}",
        })
    return rows


def peer_case(c: Case, seed: int) -> list[dict[str, Any]]:
    """statsforecast's AutoETS / AutoARIMA / AutoTheta and their median on the case's test windows."""
    import _peers_sf as sf

    from hybrid.config import load_config
    from hybrid.pipeline import prepare_data
    from kernel.data import dataset_name
    from kernel.protocol import windows

    rows = []
    for h in c.horizons:
        overrides = {"task": {"context_length": c.context_length, "horizons": [h], "seed": seed}}
        cfg = load_config(dataset_name(c.source(OUT_CSV)), c.config, overrides, list(c.sets))
        run = prepare_data(cfg, c.source(OUT_CSV), max(c.horizons))
        L, out = c.context_length, run.out_ch
        season = int(run.periods.dominant[0]) if run.periods.dominant else 1
        season = season if season <= MAX_SF_SEASON else 1
        history = run.scaled[: run.split.val_end]
        _, target = windows(run.segments("test")[0].values, L, h)
        first = run.split.test_start + L + np.arange(target.shape[0])  # each window's first target row
        forecasts: dict[str, np.ndarray] = {}
        seconds: dict[str, float] = {}
        for name in SF_MODELS:
            t0 = time.perf_counter()
            out_fc = np.empty(target[:, out].shape)
            for k, j in enumerate(out):
                model, _ = sf.fit_one(name, season, history[:, j])
                for i, row in enumerate(first):
                    out_fc[i, k] = sf.forward_one(model, run.scaled[None, :row, j], h)[0]
            forecasts[name] = out_fc
            seconds[name] = round(time.perf_counter() - t0, 1)
        forecasts["median"] = np.median(np.stack([forecasts[n] for n in SF_MODELS]), axis=0)
        y = np.asarray(target[:, out], np.float64)
        rows.append({"case": c.name, "horizon": h, "seed": seed, "season": season,
                     "mse": {f"sf:{n}": float(np.mean((f - y) ** 2)) for n, f in forecasts.items()},
                     "seconds": seconds})
    return rows


def write_records(path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace the lines of ``path`` with the same (case, horizon, seed) by ``new``; returns every record."""
    old = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    keys = {(r["case"], r["horizon"], r["seed"]) for r in new}
    records = [r for r in old if (r["case"], r["horizon"], r["seed"]) not in keys] + new
    order = {c.name: i for i, c in enumerate(CASES)}
    records.sort(key=lambda r: (order.get(r["case"], 99), r["horizon"], r["seed"]))
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(records: list[dict[str, Any]], peers: list[dict[str, Any]]) -> str:
    """The gallery table (Markdown) with the geometric mean of the ratio and the goals' counts."""
    peer = {(p["case"], p["horizon"], p["seed"]): p["mse"] for p in peers}
    lines = [
        "| case | L | H | test windows | best member (test, hindsight) | hybrid (deployed) | hybrid / best | "
        "best static | router vote | 80 % | 95 % | sf AutoETS | sf AutoARIMA | sf AutoTheta | sf median |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for r in records:
        t = r["test_mse"]
        statics = [n for n in COMBINERS[:6] if n in t]
        best_static = min(statics, key=t.__getitem__)
        p = peer.get((r["case"], r["horizon"], r["seed"]), {})
        cov = r["coverage"]
        ratios.append(r["ratio"])
        lines.append(
            f"| {r['case']}{' (+core)' if r['core'] else ''} | {r['context_length']} | {r['horizon']} | "
            f"{r['test_windows']} | {r['best_member']} {_f(r['best_member_mse'])} | {_f(r['hybrid'])} ({r['used']}) | "
            f"**{r['ratio']:.3f}** | {best_static} {_f(t[best_static])} | {_f(t.get('router_vote'))} | "
            f"{_f(cov.get('80'), 2)} | {_f(cov.get('95'), 2)} | {_f(p.get('sf:AutoETS'))} | "
            f"{_f(p.get('sf:AutoARIMA'))} | {_f(p.get('sf:AutoTheta'))} | {_f(p.get('sf:median'))} |")
    x = np.array(ratios)
    if len(x):
        cov80 = np.array([r["coverage"].get("80", np.nan) for r in records])
        lines += [
            "",
            f"{len(x)} cases. Geometric mean of hybrid / best member: **{np.exp(np.log(x).mean()):.4f}**; "
            f"at or below 1.005: {(x <= 1.005).sum()} of {len(x)}; above 1.02: {(x > 1.02).sum()} "
            f"(largest {x.max():.3f}). 80 % coverage within 70-90 %: {((cov80 >= 0.7) & (cov80 <= 0.9)).sum()} of "
            f"{len(x)}.",
        ]
    return "\n".join(lines)


def render(records: list[dict[str, Any]], peers: list[dict[str, Any]]) -> None:
    """Write the table between the gallery markers of BENCHMARKS.md."""
    text = BENCHMARKS_MD.read_text()
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    BENCHMARKS_MD.write_text(f"{head}{BEGIN}\n{table(records, peers)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="", help="comma-separated case names (default: every case)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-core", action="store_true", help="classical members only, everywhere")
    ap.add_argument("--peers", action="store_true", help="statsforecast on the short series (peers environment)")
    ap.add_argument("--table-only", action="store_true", help="rebuild the table from the records")
    ap.add_argument("--horizons", default="", help="comma-separated horizons instead of each case's own (e.g. the "
                    "benchmark files at 192,720)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    OUT_CSV.mkdir(parents=True, exist_ok=True)
    chosen = [case(n) for n in args.cases.split(",") if n] or list(CASES)
    if args.horizons:
        chosen = [dataclasses.replace(c, horizons=tuple(int(h) for h in args.horizons.split(","))) for c in chosen]
    if not args.table_only:
        for c in chosen:
            if args.peers:
                if c.group != "short":
                    continue
                write_records(PEER_RECORDS, peer_case(c, args.seed))
            else:
                rows = fit_case(c, args.seed, not args.no_core)
                write_records(RECORDS, rows)
                for r in rows:
                    print(f"{r['case']:22s} H={r['horizon']:<4d} hybrid {r['hybrid']:.5f} ({r['used']}) best "
                          f"{r['best_member']} {r['best_member_mse']:.5f} ratio {r['ratio']:.4f} "
                          f"{r['fit_seconds']:.0f} s", flush=True)
    records = [json.loads(x) for x in RECORDS.read_text().splitlines()] if RECORDS.exists() else []
    peers = [json.loads(x) for x in PEER_RECORDS.read_text().splitlines()] if PEER_RECORDS.exists() else []
    render([r for r in records if r["seed"] == args.seed], peers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
