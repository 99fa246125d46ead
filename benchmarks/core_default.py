"""What the core does under the default config: the variant and budget its ladder chose on validation, its cost, its score.

    python benchmarks/core_default.py --data taylor,ETTh1.csv [--horizon 96] [--seed 0]
    python benchmarks/core_default.py --from-run runs/weather-96 [--from-run ...]   # record a finished run
    python benchmarks/core_default.py --table-only

Each dataset is fitted exactly as ``hybrid fit --data X --horizon H`` fits it (the default config, every default
member, ``core.budget: auto``), except that a benchmark file's own config (``--config weather-benchmark`` for
weather) is named where the README names one. Read from the run's manifest: the core's ladder (each variant and
rung, its validation loss and seconds) and the variant, rung and best epoch kept; the core's fit seconds against
the whole fit; the test MSE of the core, of the best classical member and of ``hybrid`` (every test window,
scaled values). Records: ``benchmarks/core_default.jsonl`` (a rerun replaces its line); the table goes between the
markers in BENCHMARKS.md. The test set chooses nothing here: the ladder chose on validation during the fit.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import cpu_model  # noqa: E402

RECORDS = ROOT / "benchmarks" / "core_default.jsonl"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- core-default:begin -->", "<!-- core-default:end -->"
DATA = ROOT.parent / "shared" / "data"
CONFIGS = {"weather": "weather-benchmark"}  # the README's command for a benchmark file
CORE = "timellm"


def fit(data: str, horizon: int, seed: int, run_dir: Path) -> float:
    """``hybrid fit`` as a user types it; returns wall seconds."""
    source = str(DATA / data) if (DATA / data).is_file() else data
    cmd = ["hybrid", "fit", "--data", source, "--horizon", str(horizon), "--run-dir", str(run_dir), "--overwrite",
           "--seed", str(seed), "--set", "runtime.progress=false"]
    stem = Path(data).name.split(".")[0].lower().split("_")[0]
    if stem in CONFIGS:
        cmd += ["--config", CONFIGS[stem]]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def record(run_dir: Path, wall: float | None) -> dict[str, Any]:
    """One record from a finished run's manifest."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (h, entry), = manifest["results"].items()
    test = {n: v["test"]["mse"] for n, v in entry["metrics"].items() if v.get("test")}
    members = entry["combiner"]["members"]
    classical = [n for n in members if n != CORE]
    best = min(classical, key=test.__getitem__)
    selection = entry["members"].get(CORE, {}).get("selection", {})
    seconds = manifest["members"].get(CORE, {}).get("fit_seconds", {}).get(h, {})
    return {
        "dataset": manifest["dataset"], "horizon": int(h), "seed": manifest["seed"],
        "context_length": manifest["context_length"], "core_member": CORE in members,
        "ladder": selection.get("ladder"), "winner": selection.get("ladder_winner"),
        "best_epoch": selection.get("best_epoch"), "start_mix": (selection.get("start_mix") or {}).get("chosen"),
        "core_seconds": round(sum(seconds.values()), 1), "fit_seconds": manifest.get("fit_seconds_total"),
        "wall_seconds": None if wall is None else round(wall, 1),
        "test_mse": {"core": test.get(CORE), "best_classical": test[best], "hybrid": test["hybrid"]},
        "best_classical": best, "used": entry["combiner"]["used"],
        "machine": f"{cpu_model()}, Python {platform.python_version()}",
    }


def save(rec: dict[str, Any]) -> None:
    rows = [json.loads(x) for x in RECORDS.read_text().splitlines()] if RECORDS.exists() else []
    key = (rec["dataset"], rec["horizon"], rec["seed"])
    rows = [r for r in rows if (r["dataset"], r["horizon"], r["seed"]) != key] + [rec]
    RECORDS.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _variant(rec: dict[str, Any]) -> str:
    winner = rec.get("winner") or {}
    if not rec.get("ladder"):
        return "no ladder (fixed budget)"
    text = f"{winner.get('variant', '?')}, rung {winner.get('rung', '?')}, {winner.get('samples_per_epoch', '?')} samples"
    return text + (" (untrained start kept)" if "untrained start" in winner.get("why", "") else "")


def table() -> str:
    rows = [json.loads(x) for x in RECORDS.read_text().splitlines()] if RECORDS.exists() else []
    out = ["| dataset | H | seed | variant kept (validation) | best epoch | core s / fit s | core | best classical "
           "| hybrid |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["horizon"], r["seed"])):
        t = r["test_mse"]
        out.append(f"| {r['dataset']} | {r['horizon']} | {r['seed']} | {_variant(r)} | {r['best_epoch']} | "
                   f"{r['core_seconds']:.0f} / {r['fit_seconds']:.0f} | {t['core']:.4f} | "
                   f"{r['best_classical']} {t['best_classical']:.4f} | {t['hybrid']:.4f} ({r['used']}) |")
    return "\n".join(out)


def write_table() -> None:
    text = BENCHMARKS_MD.read_text()
    if BEGIN not in text:
        raise SystemExit(f"BENCHMARKS.md has no {BEGIN} marker")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    BENCHMARKS_MD.write_text(f"{head}{BEGIN}\n{table()}\n{END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="", help="comma-separated built-in names or files in ../shared/data")
    ap.add_argument("--horizon", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from-run", action="append", default=[], help="record a finished run directory instead")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if not args.table_only:
        for run in args.from_run:
            save(record(Path(run), None))
        for data in filter(None, args.data.split(",")):
            run_dir = ROOT / "benchmarks" / "out" / "core_default" / f"{Path(data).name.split('.')[0]}-{args.horizon}"
            wall = fit(data, args.horizon, args.seed, run_dir)
            save(record(run_dir, wall))
    write_table()
    print(table())


if __name__ == "__main__":
    main()
