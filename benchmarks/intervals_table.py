"""Test coverage, width and interval score of the conformal bands, from fitted runs' manifests.

For each run and horizon: the combined forecast (`hybrid`) beside the member with the lowest out-of-fold MSE
(chosen without the test set), at every level the run was fitted with. Scaled units (per-channel z-scores).

    python benchmarks/intervals_table.py benchmarks/out/runs/*/manifest.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    m = json.loads(path.read_text())
    out = []
    for H, r in m["results"].items():
        met = r["metrics"]
        members = [k for k in r["members"] if (met.get(k) or {}).get("oof", {}).get("mse") is not None]
        best = min(members, key=lambda k: met[k]["oof"]["mse"])
        for name in ("hybrid", best):
            iv = met[name]["test"].get("intervals") or {}
            cells = []
            for lv in sorted(iv, key=float):
                s = iv[lv]
                cells.append(f"{s['coverage']:.3f} / {s['width']:.3f} / {s['interval_score']:.3f}")
            label = name if name == "hybrid" else f"{name} (best out of fold)"
            out.append(f"| {m['dataset']} | {H} | {label} | " + " | ".join(cells) + " |")
    return out


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__)
        return 2
    print("| dataset | H | forecast | 80 %: coverage / width / interval score | 95 %: coverage / width / interval score |")
    print("|---|---|---|---|---|")
    for p in paths:
        print("\n".join(rows(Path(p))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
