"""Vote reports for two test windows of a fitted run: where one member's weight is highest and lowest.

The run is asked for its forecast (``hybrid forecast --data``) at evenly spread cut-offs inside the
test part, each time from a temporary copy of the data cut at that row (deleted afterwards; nothing
of the data is written into the repository). The member's mean weight over the output channels is
recorded with every forecast's scaled MSE against what followed; the reports (Markdown + PNG) of the
two extreme windows are written under ``--out``, with a table of every cut-off.

    python benchmarks/vote_showcase.py --run-dir RUN --data ../shared/data/weather.csv.gz \
        --member timellm --horizon 96 --cutoffs 24 --out benchmarks/vote_weather
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hybrid.pipeline import forecast_run  # noqa: E402
from hybrid.report import write_report  # noqa: E402
from kernel.protocol import Scaler  # noqa: E402


def read_lines(path: Path) -> list[str]:
    """The file's lines as published (header first), line endings kept."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return f.readlines()


def by_channel(cells: list[tuple[np.ndarray, np.ndarray]], member: str) -> list[str]:
    """Does the member's weight on a channel follow where it beats every other member on that channel?

    ``cells`` holds, per cut-off, the member's weight per channel and its MSE minus the best other
    member's per channel (negative: it won that channel over that window).
    """
    if not cells:
        return []
    w = np.concatenate([c[0] for c in cells])
    edge = np.concatenate([c[1] for c in cells])
    won = edge < 0
    # within-channel: each channel's weights and edges centred over the cut-offs, so that a channel
    # where the member is always strong does not carry the correlation on its own
    W = np.stack([c[0] for c in cells])
    E = np.stack([c[1] for c in cells])
    within = np.corrcoef((W - W.mean(0)).ravel(), (E - E.mean(0)).ravel())[0, 1]
    lines = [f"Per channel and cut-off ({won.size} cells): {member} beat every other member on {won.sum()} of them. "
             f"Its mean weight was {w[won].mean():.3f} where it did and {w[~won].mean():.3f} where it did not; "
             f"correlation between its weight and its edge (its MSE - the best other member's): "
             f"{np.corrcoef(w, edge)[0, 1]:.2f} over all cells, {within:.2f} within channels "
             "(each channel centred over the cut-offs: does its weight on a channel rise in the windows where it "
             "does better there?). Negative means more weight where it wins.", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--data", required=True, help="the file the run was fitted on")
    parser.add_argument("--member", default="timellm")
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--cutoffs", type=int, default=24, help="evenly spread cut-offs in the test part")
    parser.add_argument("--out", default="benchmarks/vote_showcase")
    args = parser.parse_args()

    run_dir, out = Path(args.run_dir), Path(args.out)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    lines = read_lines(Path(args.data))
    header, rows = lines[0], lines[1:]
    if len(rows) != manifest["n_rows"]:
        raise SystemExit(f"{args.data} has {len(rows)} rows; the run was fitted on {manifest['n_rows']}: "
                         "use the file the run was fitted on (with data.duplicates: keep rows map one to one).")
    H, test_start = args.horizon, manifest["split"]["test_start"]
    cutoffs = np.linspace(test_start, len(rows) - H, args.cutoffs).astype(int)
    scaler = Scaler.from_dict(manifest["scaler"])
    out_idx = [manifest["columns"].index(c) for c in manifest["output_columns"]]
    sub = Scaler(scaler.mean[out_idx], scaler.scale[out_idx])

    records, results = [], {}
    cells: list[tuple[np.ndarray, np.ndarray]] = []  # per cut-off: the member's weight and edge per channel
    with tempfile.TemporaryDirectory() as tmp:
        for k, cut in enumerate(cutoffs):
            path = Path(tmp) / f"cut{cut}.csv"
            path.write_text(header + "".join(rows[:cut]), encoding="utf-8", newline="")
            result = forecast_run(run_dir, H, str(path))
            path.unlink()
            after = np.array([[float(x) for x in r.strip().split(",")[1:]] for r in rows[cut:cut + H]])
            target = sub.transform(after[:, out_idx])  # [H, Co] scaled

            def mse(f: np.ndarray, target: np.ndarray = target) -> float:
                return float(np.mean((sub.transform(f.T) - target) ** 2))

            per_channel = {n: np.mean((sub.transform(f.T) - target) ** 2, axis=0) for n, f in result.members.items()}
            if args.member in per_channel:
                others = np.min([v for n, v in per_channel.items() if n != args.member], axis=0)
                cells.append((result.channel_weights[args.member], per_channel[args.member] - others))

            rec = {"cutoff_row": int(cut), "end_of_context": str(result.history.index[-1]),
                   "weight": result.weights.get(args.member, 0.0),
                   "mse_hybrid": mse(result.frame[manifest["output_columns"]].to_numpy().T),
                   **{f"mse_{n}": mse(f) for n, f in result.members.items()}}
            records.append(rec)
            results[int(cut)] = result
            print(f"{k + 1}/{len(cutoffs)} row {cut}: {args.member} weight {rec['weight']:.3f}, "
                  f"hybrid {rec['mse_hybrid']:.3f}, {args.member} {rec.get('mse_' + args.member, float('nan')):.3f}",
                  flush=True)

    hi = max(records, key=lambda r: r["weight"])
    lo = min(records, key=lambda r: r["weight"])
    out.mkdir(parents=True, exist_ok=True)
    for label, rec in (("high", hi), ("low", lo)):
        written = write_report(results[rec["cutoff_row"]], run_dir, out / f"{args.member}-weight-{label}")
        print(f"{label} weight ({rec['weight']:.3f}, row {rec['cutoff_row']}): " + ", ".join(map(str, written)))

    names = [k for k in records[0] if k.startswith("mse_")]
    table = ["| cut-off row | context ends | " + f"{args.member} weight | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for r in records:
        table.append(f"| {r['cutoff_row']} | {r['end_of_context']} | {r['weight']:.3f} | "
                     + " | ".join(f"{r[n]:.3f}" for n in names) + " |")
    w = np.array([r["weight"] for r in records])
    own = np.array([r.get(f"mse_{args.member}", np.nan) for r in records])
    hyb = np.array([r["mse_hybrid"] for r in records])
    summary = [f"# Vote reports: {args.member}'s weight across the test part", "",
               f"Run: `{run_dir}` (dataset {manifest['dataset']}, H = {H}); written by "
               f"`python benchmarks/vote_showcase.py --run-dir RUN --data {args.data} --member {args.member} "
               f"--horizon {H} --cutoffs {args.cutoffs} --out {args.out}`.", "",
               f"{args.member}'s mean weight over the output channels: min {w.min():.3f}, median "
               f"{np.median(w):.3f}, max {w.max():.3f}. Correlation over the {len(w)} cut-offs between its weight "
               f"and (its MSE - the hybrid's MSE): {np.corrcoef(w, own - hyb)[0, 1]:.2f} "
               "(negative: more weight where it does better than the combination).", "",
               *by_channel(cells, args.member),
               f"- high weight: row {hi['cutoff_row']} -> [report]({args.member}-weight-high/report.md)",
               f"- low weight: row {lo['cutoff_row']} -> [report]({args.member}-weight-low/report.md)", "",
               "Scaled MSE of each forecast over the next H steps, every output channel:", "", *table, ""]
    (out / "README.md").write_text("\n".join(summary))
    print(f"wrote {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
