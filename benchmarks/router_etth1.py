"""The router against its baselines on ETTh1 (input 512, H = 96 and 336).

Protocol (docs/architecture.md): ETT split (12/4/4 months), per-channel standard scaling
fitted on train, L = 512, every stride-1 validation and test window, all 7
channels (features M). Members are fitted on train; the static combiners and
the router (every mode) are fitted on validation windows only; the router is
checked on the last 25 % of the validation windows (after a gap of H
windows), then refitted on all of them. Test MSE / MAE are on scaled values.

``router_<mode>`` rows are what each learned mode does on test, before any
fallback; ``hybrid`` is what the pipeline deploys with ``router.mode = vote``
(the vote, or its fallback when the held-back check failed).

Usage:
    python benchmarks/router_etth1.py [--data /work/shared/data/ETTh1.csv]
        [--members seasonal_naive,seasonal_naive@168,linear,nlinear,dlinear]
        [--horizons 96 336] [--out benchmarks/router_etth1.md]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hybrid.config import load_config  # noqa: E402
from hybrid.pipeline import fit_run  # noqa: E402

MEMBERS = "seasonal_naive,seasonal_naive@168,linear,nlinear,dlinear"
STATIC = ("equal", "inverse_error", "best_single")
MODES = ("router_vote", "router_select", "router_rules")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ETTh1.csv"))
    ap.add_argument("--members", default=MEMBERS)
    ap.add_argument("--horizons", type=int, nargs="+", default=[96, 336])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "router_etth1.md"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    members = [m.strip() for m in args.members.split(",") if m.strip()]
    cfg = load_config("ETTh1", overrides={
        "task": {"context_length": 512, "horizons": args.horizons, "members": members},
        "router": {"mode": "vote"},
        "runtime": {"progress": False},
    })
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = fit_run(cfg, args.data, Path(tmp) / "run")
    seconds = time.perf_counter() - t0
    m = result.manifest

    lines = [
        "# Router on ETTh1 (input 512)",
        "",
        f"Produced by `python benchmarks/router_etth1.py` on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}, CPU only); whole fit (members, combiners, router, "
        f"both horizons): {seconds:.0f} s.",
        "",
        "Protocol: ETT 12/4/4-month split, per-channel z-scoring fitted on train, all 7 channels, every "
        "stride-1 test window (2785 at H=96, 2545 at H=336); MSE / MAE on scaled values. The router sees "
        "validation windows only. `router_*` rows: each learned mode on test, before any fallback. "
        "`hybrid`: what the pipeline deploys (`router.mode = vote`, or its fallback if the held-back check "
        "failed). One seed (the members and the router are deterministic given the data).",
        "",
    ]
    header = "| combiner / member | " + " | ".join(f"H={H} MSE | H={H} MAE" for H in args.horizons) + " |"
    lines += [header, "|---|" + "---|---|" * len(args.horizons)]
    names = [*members, *STATIC, *MODES, "hybrid"]
    best_member = {}
    for H in args.horizons:
        met = m["metrics"][str(H)]
        best_member[H] = min((n for n in members if n in met), key=lambda n: met[n]["test"]["mse"])
    for name in names:
        cells = []
        for H in args.horizons:
            s = m["metrics"][str(H)].get(name)
            if s is None:
                cells += ["failed", ""]
                continue
            mse = f"{s['test']['mse']:.4f}"
            if name == best_member[H]:
                mse = f"**{mse}**"
            cells += [mse, f"{s['test']['mae']:.4f}"]
        label = name
        if name == "hybrid":
            fb = {H: m["metrics"][str(H)]["hybrid"].get("fallback") for H in args.horizons}
            label += " (vote" + "".join(f"; H={H} fell back to {f}" for H, f in fb.items() if f) + ")"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Bold: the best single member on test (for reference; the pipeline chooses on validation).", ""]

    lines += ["## Held-back validation check (MSE on the last 25 % of validation windows)", "",
              "| H | mode | router | equal | best single (chosen on the first part) | passed | fallback |",
              "|---|---|---|---|---|---|---|"]
    for H in args.horizons:
        check = m["combiner"][str(H)].get("router", {}).get("check", {})
        for mode, c in check.items():
            lines.append(f"| {H} | {mode} | {c.get('holdout_mse', float('nan')):.4f} | "
                         f"{c.get('holdout_mse_equal', float('nan')):.4f} | "
                         f"{c.get('holdout_mse_best_single', float('nan')):.4f} ({c.get('best_single', '-')}) | "
                         f"{'yes' if c.get('passed') else 'no'} | {c.get('fallback') or '-'} |")
    lines += ["", "## Goal: router vote at or below the best single member and below equal weights", ""]
    for H in args.horizons:
        met = m["metrics"][str(H)]
        vote, eq = met["router_vote"]["test"]["mse"], met["equal"]["test"]["mse"]
        best = met[best_member[H]]["test"]["mse"]
        chosen = met["best_single"]["test"]["mse"]
        verdict = []
        verdict.append(("below" if vote < eq else "NOT below") + f" equal weights ({vote:.4f} vs {eq:.4f})")
        verdict.append(("at or below" if vote <= best else "NOT at or below")
                       + f" the best single member on test, {best_member[H]} ({best:.4f})")
        verdict.append(("at or below" if vote <= chosen else "NOT at or below")
                       + f" the validation-chosen best_single ({chosen:.4f})")
        lines.append(f"- H={H}: router vote is " + "; ".join(verdict) + ".")
    lines += ["", "## Router timing", ""]
    for H in args.horizons:
        r = m["combiner"][str(H)].get("router", {})
        lines.append(f"- H={H}: features + check + refit + scoring {r.get('seconds', float('nan')):.1f} s, "
                     f"{len(r.get('features', []))} features per window and channel.")
    lines.append("")
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
