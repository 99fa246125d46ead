"""Replay the router's deployment check on out-of-fold scores only: is the one-standard-error rule the better rule?

The check (``router/fitting.py``) deploys the learned vote only if its
leave-one-fold-out (LOFO) MSE beats equal weights, the best single member and
the best static combiner pooled (by ``min_gain``), on a majority of the folds,
and by ``min_t`` standard errors of its per-fold gains; otherwise the static
fallback is used. A looser rule keeps the pooled condition alone. Which rule
deploys the better combination is a question about data the rule has not
seen, so this script answers it by nesting: for every held-out fold k of every
run, each rule decides on the other folds (the fallback too is chosen there)
and its decision is scored on fold k. Summed over k, that is each rule's
nested out-of-fold MSE.

Nothing here reads a test score: the fits compute them (the pipeline always
does), and this script keeps only ``results[H]["router"]["check"]`` of each
manifest, the out-of-fold check.

Caveats: the vote's settings (L2, shrinkage) were chosen by LOFO over all
folds, fold k included, for both rules alike; the fits here use the classical
members only (the trained cores of the weather benchmark take 20-30 minutes per
horizon on 2 cores).

Usage:
    python benchmarks/deployment_rule.py [--datasets etth1,ettm1,exchange,weather] [--horizons 96,192,336,720]
        [--seeds 0] [--members seasonal_naive,linear,nlinear,dlinear,ets]
        [--raw benchmarks/deployment_rule.jsonl] [--out benchmarks/deployment_rule.md]

Each finished fit appends one JSON line per horizon to ``--raw``; the report is
rebuilt from every line (``--table-only`` rebuilds it without fitting).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_SPEC = importlib.util.spec_from_file_location("_suite", ROOT / "benchmarks" / "suite.py")
suite = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(suite)

from router.config import RouterConfig  # noqa: E402
from router.fitting import deployment_check  # noqa: E402

# the static combiners the suite's recorded runs of that time had (greedy and median came later, issue 31)
STATIC_MODES = ("equal", "inverse_error", "best_single", "top_k")

CONFIGS = {"weather": "weather-benchmark"}  # weather as the literature reads it, as in the suite's weather tables


def fit_checks(dataset: str, horizons: list[int], seed: int, members: list[str], sets: list[str]) -> list[dict]:
    """Fit the hybrid on one dataset and return each horizon's out-of-fold check (no test score)."""
    from hybrid.api import HybridForecaster

    model = HybridForecaster(config_file=CONFIGS.get(dataset), sets=["runtime.progress=false", *sets],
                             horizons=tuple(horizons), seed=seed, members=tuple(members))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model.fit(str(suite.DATA / suite.FILES[dataset]), run_dir=Path(tmp) / "run")
    seconds = time.perf_counter() - t0
    rows = []
    for h in horizons:
        entry = model.manifest_["results"][str(h)]
        if "router" not in entry:
            continue  # one member left: nothing was routed
        check = entry["router"]["check"]
        rows.append({"dataset": dataset, "horizon": h, "seed": seed, "members": entry["combiner"]["members"],
                     "vote": check["vote"], "static": check["static"], "fit_seconds": round(seconds, 1)})
    return rows


def decide(row: dict, folds: list[str], rule: str) -> str:
    """``vote`` or the static fallback, decided by the router's check (``rule``: its ``check``) on ``folds`` only."""
    vote, static = row["vote"], row["static"]
    n = {f: static["fold_windows"][f] for f in folds}

    def pooled(by_fold: dict[str, float]) -> float:
        return sum(by_fold[f] * n[f] for f in folds) / sum(n.values())

    fallback = min(static["by_fold"], key=lambda m: pooled(static["by_fold"][m]))
    rivals = [static["by_fold"][m] for m in dict.fromkeys(("equal", "best_single", fallback))]
    gain = np.array([min(r[f] for r in rivals) - vote["by_fold"][f] for f in folds])
    cfg = RouterConfig(min_gain=vote["min_gain"], check=rule, min_fold_wins=vote["min_fold_wins"], min_t=vote["min_t"])
    passed = deployment_check(pooled(vote["by_fold"]), min(pooled(r) for r in rivals), gain, cfg)[0]
    return "vote" if passed else fallback


def nested(row: dict, rule: str) -> tuple[float, list[str]]:
    """Nested out-of-fold MSE of a rule's decisions, and the decision made for each held-out fold."""
    sizes = row["static"]["fold_windows"]
    total, decisions = 0.0, []
    for k in sizes:
        choice = decide(row, [f for f in sizes if f != k], rule)
        scores = row["vote"]["by_fold"] if choice == "vote" else row["static"]["by_fold"][choice]
        total += scores[k] * sizes[k]
        decisions.append(choice)
    return total / sum(sizes.values()), decisions


def report(rows: list[dict]) -> str:
    lines = [
        "# The deployment check replayed out of fold",
        "",
        "Generated by `benchmarks/deployment_rule.py` (see its docstring for the method). For every held-out fold each",
        "rule decides on the other folds; the decision is scored on the held-out fold. `one_se`: the shipped check",
        "(pooled gain, most folds, one standard error); `pooled`: the pooled gain alone. No test score is read.",
        "",
        "| dataset | H | seed | members | nested OOF MSE, one_se | nested OOF MSE, pooled | pooled / one_se - 1 "
        "| vote deployed (of folds): one_se / pooled | the run deployed | replayed on all folds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for r in rows:
        (a, da), (b, db) = nested(r, "one_se"), nested(r, "pooled")
        ratios.append(b / a - 1.0)
        lines.append(
            f"| {r['dataset']} | {r['horizon']} | {r['seed']} | {len(r['members'])} | {a:.5f} | {b:.5f} | "
            f"{100 * (b / a - 1):+.2f} % | {da.count('vote')} / {db.count('vote')} of {len(da)} | "
            f"{'vote' if r['vote']['passed'] else r['static']['fallback']} | "
            f"{decide(r, list(r['static']['fold_windows']), 'one_se')} |")
    x = np.array(ratios)
    lines += [
        "",
        f"Runs: {len(x)}. The pooled rule lower: {(x < 0).sum()}, higher: {(x > 0).sum()}, the same: {(x == 0).sum()}. "
        f"Mean change {100 * x.mean():+.3f} % (median {100 * np.median(x):+.3f} %, "
        f"largest gain {100 * x.min():+.3f} %, largest loss {100 * x.max():+.3f} %)." if len(x) else "No runs.",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in sorted({r['command'] for r in rows if 'command' in r})),
        "",
    ]
    return "\n".join(lines)


def rederive(records: list[dict], min_gain: float = RouterConfig.min_gain) -> list[dict]:
    """What ``hybrid`` is under the pooled check, in every suite run recorded with ``router.mode: vote``.

    The pooled check needs only pooled out-of-fold MSEs, which the suite records (``oof_mse``) for the vote and
    every static combiner; the deployed forecast is then the vote's or the fallback's, whose test scores are
    recorded too. Runs where the recorded hybrid is neither (another router mode) and runs that already used the
    pooled check (``router_check`` in the hybrid's record; records without it ran the one_se check) are skipped.
    """
    pooled_check = RouterConfig(min_gain=min_gain, check="pooled")
    runs: dict[tuple, dict[str, dict]] = {}
    for r in records:
        if r.get("version") == suite.VERSION and "oof_mse" in r:
            runs.setdefault((r["dataset"], r["horizon"], r["seed"]), {})[r["model"]] = r
    out = []
    for (table, h, seed), m in sorted(runs.items()):
        if not all(m.get(k, {}).get("oof_mse") is not None for k in (*STATIC_MODES, "router_vote", "hybrid")):
            continue  # no out-of-fold score recorded for a combination
        if m["hybrid"].get("router_check", "one_se") != "one_se":
            continue  # already run under the pooled check
        fallback = min(STATIC_MODES, key=lambda k: m[k]["oof_mse"])
        baseline = min(m[k]["oof_mse"] for k in ("equal", "best_single", fallback))
        passed = deployment_check(m["router_vote"]["oof_mse"], baseline, np.zeros(0), pooled_check)[0]
        pooled = "vote" if passed else fallback
        one_se = m["hybrid"].get("used") or ("vote" if m["hybrid"]["mse"] == m["router_vote"]["mse"] else fallback)
        source = {k: m["router_vote" if k == "vote" else k] for k in {pooled, one_se}}
        if one_se not in ("vote", fallback) or source[one_se]["mse"] != m["hybrid"]["mse"]:
            continue  # the recorded hybrid is not the vote or the fallback: not a vote run
        out.append({"table": table, "horizon": h, "seed": seed, "one_se": one_se, "pooled": pooled,
                    "mse_one_se": m["hybrid"]["mse"], "mse_pooled": source[pooled]["mse"],
                    "best_member": min(v["mse"] for k, v in m.items() if k not in (*STATIC_MODES, "hybrid")
                                       and not k.startswith("router_"))})
    return out


def rederive_report(rows: list[dict]) -> str:
    """Test MSE of the hybrid under each check, per suite table and horizon (means over the recorded seeds)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["table"], r["horizon"]), []).append(r)
    lines = [
        "## The suite's runs re-decided under the pooled check",
        "",
        "Reported after the check was chosen on the replay above. From `benchmarks/results.json`: the pooled check",
        "needs only the pooled out-of-fold MSEs the suite records, and the vote's and the fallback's test scores are",
        "recorded too, so this is what each run's `hybrid` would have been, not a new run. Test MSE, mean over seeds.",
        "",
        "| suite table | H | seeds | hybrid, one_se (as run) | hybrid, pooled | changed runs | used, one_se -> pooled "
        "| best member (test, hindsight) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (table, h), rs in groups.items():
        changed = ", ".join(f"{r['one_se']} -> {r['pooled']}" for r in rs if r["one_se"] != r["pooled"])
        lines.append(
            f"| {table} | {h} | {len(rs)} | {np.mean([r['mse_one_se'] for r in rs]):.4f} | "
            f"{np.mean([r['mse_pooled'] for r in rs]):.4f} | {sum(r['one_se'] != r['pooled'] for r in rs)} | "
            f"{changed or '-'} | {np.mean([r['best_member'] for r in rs]):.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="etth1,ettm1,exchange,weather")
    ap.add_argument("--horizons", default="96,192,336,720")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--members", default="seasonal_naive,linear,nlinear,dlinear,ets")
    ap.add_argument("--set", action="append", default=["task.period_experts=[seasonal_naive]"],
                    help="config override, repeatable")
    ap.add_argument("--raw", default=str(ROOT / "benchmarks" / "deployment_rule.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "deployment_rule.md"))
    ap.add_argument("--table-only", action="store_true", help="rebuild the report from --raw and stop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    raw, out = Path(args.raw), Path(args.out)
    if not args.table_only:
        missing = [d for d in args.datasets.split(",") if not (suite.DATA / suite.FILES[d]).exists()]
        if missing:
            print(f"error: data for {missing} not found in {suite.DATA}; this benchmark needs ../shared/data",
                  file=sys.stderr)
            return 2
        command = "python benchmarks/deployment_rule.py " + " ".join(sys.argv[1:] if argv is None else argv)
        for dataset in args.datasets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows = fit_checks(dataset, [int(h) for h in args.horizons.split(",")], seed,
                                  args.members.split(","), args.set)
                with raw.open("a", encoding="utf-8") as f:
                    for row in rows:
                        f.write(json.dumps({**row, "command": command}) + "\n")
                print(f"{dataset} seed {seed}: {len(rows)} horizons, {rows[0]['fit_seconds'] if rows else 0} s",
                      flush=True)
                write_report(raw, out)
    if args.table_only:
        write_report(raw, out)
    return 0


def write_report(raw: Path, out: Path) -> None:
    """The replay of every line of ``raw``, then the suite's recorded runs re-decided."""
    rows = [json.loads(x) for x in raw.read_text().splitlines() if x.strip()]
    rederived = rederive(json.loads((ROOT / "benchmarks" / "results.json").read_text()))
    out.write_text(report(rows) + "\n" + rederive_report(rederived))


if __name__ == "__main__":
    raise SystemExit(main())
