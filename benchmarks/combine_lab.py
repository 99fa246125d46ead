"""The combination lab: replay combination rules on stored member forecasts, without refitting a member.

``dump`` fits every member of a gallery case once (``hybrid.pipeline.HorizonFitter.collect``)
and stores, per horizon, the out-of-fold windows (folds, contexts, targets, every member's
out-of-fold forecasts and backtests) and the test windows (contexts, targets, every
member's refit forecasts and backtests) in ``benchmarks/out/lab/<case>-h<H>.npz`` (ignored
by git: they are large and rebuilt by this script).

``nested`` judges a combination rule without the test part: for every held-out fold k, the
whole rule (sound set, static combiners, router, deployment decision) is learned on the
other folds' windows and scored on fold k's. The score of a rule is its nested out-of-fold
MSE over every held-out fold, divided by the nested MSE of the best member in hindsight
(the member with the lowest MSE over the held-out windows). That is how the rules of
``router.fitting`` were chosen (BENCHMARKS.md, "Robust combination"); the test part is read
by ``test`` only, once the rule was fixed.

Usage:
    python benchmarks/combine_lab.py dump --cases airpassengers,ausbeer [--core]
    python benchmarks/combine_lab.py nested --variants base,robust [--cases ...]
    python benchmarks/combine_lab.py test --variants robust [--cases ...]
    python benchmarks/combine_lab.py time --cases etth1      # seconds of the combination step, default config
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gallery_cases import CASES, OUT_CSV, case  # noqa: E402

from hybrid.config import Config, load_config  # noqa: E402
from hybrid.crossfit import predict_many  # noqa: E402
from hybrid.deployment import COMBINED, deploy  # noqa: E402
from hybrid.stacking import OOFWindows, sanity_gate  # noqa: E402
from kernel.data import dataset_name  # noqa: E402
from router.features import shift_context  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "lab"
CORE = "timellm"
MAX_TEST = 2048  # test windows stored per case (evenly spread): the lab's test scores are a sample; gallery.py scores all


def case_config(c: Any, core: bool, extra: list[str] | None = None) -> Config:
    members = list(c.members) + ([CORE] if core else [])
    sets = ["runtime.progress=false", "task.period_experts=[seasonal_naive]", *c.sets, *(extra or [])]
    overrides = {"task": {"context_length": c.context_length, "horizons": list(c.horizons),
                          "members": members, "seed": 0}}
    return load_config(dataset_name(c.source(OUT_CSV)), c.config, overrides, sets)


def dump(name: str, core: bool, extra: list[str]) -> list[Path]:
    """Fit every member of case ``name`` and store its out-of-fold and test forecasts per horizon."""
    from hybrid.members import expand_period_experts, make_member, uses_references
    from hybrid.pipeline import HorizonFitter, check_config, fold_plans, prepare_data

    c = case(name)
    OUT_CSV.mkdir(parents=True, exist_ok=True)
    cfg = case_config(c, core, extra)
    horizons = check_config(cfg)
    L, H_max = cfg.task.context_length, max(horizons)
    run = prepare_data(cfg, c.source(OUT_CSV), H_max)
    names = expand_period_experts(cfg.task.members, cfg.task.period_experts, run.periods.dominant, L)
    has_core = any(uses_references(make_member(n, cfg)) for n in names)
    plans, core_plans = fold_plans(cfg, run, H_max, has_core)
    paths = []
    cache: dict = {}
    for H in horizons:
        t0 = time.perf_counter()
        fitter = HorizonFitter(cfg, run, H, plans, core_plans, names, cache, cache_horizon=H_max)
        got = fitter.collect()
        fit_s = time.perf_counter() - t0
        out = run.out_ch
        test_starts = run.test_starts(L, H)
        keep = np.unique(np.linspace(0, len(test_starts) - 1, min(MAX_TEST, len(test_starts))).round().astype(int))
        test_ctx, test_tgt = run.windows(test_starts[keep], L, H)
        fc = fitter._stage_forecasts("refit", test_ctx, slice(None))
        bt_ctx = shift_context(test_ctx, got.steps)
        arrays: dict[str, np.ndarray] = {
            "oof_starts": got.oof.starts, "oof_folds": got.oof.folds,
            "oof_context": got.oof.context[:, out], "oof_target": got.oof.target,
            "test_context": test_ctx[:, out], "test_target": np.asarray(test_tgt[:, out], np.float32),
            "baseline": got.baseline,
        }
        for m in got.members:
            arrays[f"oof_fc:{m}"] = got.oof.forecasts[m]
            arrays[f"test_fc:{m}"] = fc[m][:, out]
            if m in got.oof.backtests:
                arrays[f"oof_bt:{m}"] = got.oof.backtests[m]
                arrays[f"test_bt:{m}"] = predict_many(fitter.fits[m].refit, bt_ctx, H)[:, out, :got.steps]
        meta = {"case": name, "horizon": H, "context_length": L, "members": got.members,
                "classical": got.classical, "channels": got.channels, "steps": got.steps,
                "periods": list(run.periods.dominant), "core": core, "fit_seconds": round(fit_s, 1),
                "extra": extra, "n_rows": run.series.n_rows,
                "offset": (run.scaler.mean[out] / run.scaler.scale[out]).tolist()}
        arrays["meta"] = np.array(json.dumps(meta))
        path = OUT / f"{name}{'-core' if core else ''}-h{H}.npz"
        np.savez(path, **arrays)
        paths.append(path)
        logging.info("%s H=%d: %d members, %d oof windows, %d test windows, %.0f s", name, H, len(got.members),
                     len(got.oof.starts), test_ctx.shape[0], fit_s)
    return paths


def offsets(meta: dict) -> np.ndarray:
    """Each output channel's training mean / std (the bands' level spread), cached beside the dumps."""
    cache = OUT / "offsets.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    key = meta["case"]
    if key not in known:
        from hybrid.pipeline import prepare_data

        c = case(key)
        cfg = case_config(c, False, meta.get("extra"))
        run = prepare_data(cfg, c.source(OUT_CSV), max(c.horizons))
        known[key] = (run.scaler.mean[run.out_ch] / run.scaler.scale[run.out_ch]).tolist()
        cache.write_text(json.dumps(known))
    return np.asarray(known[key])


class Stored:
    """One dumped case and horizon."""

    def __init__(self, path: Path) -> None:
        z = np.load(path)
        self.path = path
        self.meta = json.loads(str(z["meta"]))
        self.members: list[str] = self.meta["members"]
        self.oof = OOFWindows(z["oof_starts"], z["oof_folds"], z["oof_context"], z["oof_target"])
        for m in self.members:
            self.oof.forecasts[m] = z[f"oof_fc:{m}"]
            if f"oof_bt:{m}" in z:
                self.oof.backtests[m] = z[f"oof_bt:{m}"]
        self.test_context, self.test_target = z["test_context"], z["test_target"]
        self.test_fc = {m: z[f"test_fc:{m}"] for m in self.members}
        self.test_bt = {m: z[f"test_bt:{m}"] for m in self.members if f"test_bt:{m}" in z}
        self.baseline = z["baseline"]
        self.offset = np.asarray(self.meta["offset"]) if "offset" in self.meta else offsets(self.meta)

    @property
    def name(self) -> str:
        return self.path.stem


def subset(oof: OOFWindows, rows: np.ndarray, renumber: bool = True) -> OOFWindows:
    """The OOF windows ``rows``, folds renumbered 0..k-1 (the router's folds must be consecutive ids)."""
    folds = oof.folds[rows]
    if renumber:
        _, folds = np.unique(folds, return_inverse=True)
    out = OOFWindows(oof.starts[rows], folds, oof.context[rows], oof.target[rows])
    out.forecasts = {m: f[rows] for m, f in oof.forecasts.items()}
    out.backtests = {m: f[rows] for m, f in oof.backtests.items()}
    return out


def apply(dep: Any, context: np.ndarray, forecasts: dict[str, np.ndarray], backtests: dict[str, np.ndarray]
          ) -> dict[str, np.ndarray]:
    """Every combination of a deployment on windows (output channels): name -> [n, Co, H]."""
    return dep.all_combinations(context, {m: forecasts[m] for m in dep.members},
                                {m: backtests[m] for m in dep.backtest_members})


def learn(s: Stored, oof: OOFWindows, cfg: Config) -> Any:
    """Deploy the combination of ``cfg`` on the windows ``oof`` of a stored case."""
    m = s.meta
    ch = list(range(len(m["channels"])))
    # the stored contexts hold the output channels only: the combination reads no other
    gate = sanity_gate(oof, s.members, baseline_of(oof, m), cfg.stack.gate_ratio, m["channels"])
    dep, _ = deploy(cfg, oof, s.members, gate, tuple(m["periods"]), m["horizon"], m["context_length"], m["steps"], ch,
                    m["channels"], [n for n in m["classical"] if n in oof.backtests], s.offset)
    return dep


def baseline_of(oof: OOFWindows, meta: dict) -> np.ndarray:
    from hybrid.stacking import baseline_mse
    from kernel.contract import TaskSpec

    spec = TaskSpec(context_length=meta["context_length"], horizon=meta["horizon"], freq="h",
                    periods=tuple(meta["periods"]), seed=0)
    return baseline_mse(oof, spec, list(range(oof.context.shape[1])))


def mse(f: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((f.astype(np.float64) - y) ** 2))


def nested(s: Stored, cfg: Config) -> dict[str, Any]:
    """Nested out-of-fold scores of the combination of ``cfg``: each fold held out in turn."""
    folds = np.unique(s.oof.folds)
    se: dict[str, float] = {}
    n = 0
    used = []
    for k in folds:
        hold = np.flatnonzero(s.oof.folds == k)
        fit = np.flatnonzero(s.oof.folds != k)
        dep = learn(s, subset(s.oof, fit), cfg)
        combos = apply(dep, s.oof.context[hold], {m: f[hold] for m, f in s.oof.forecasts.items()},
                       {m: f[hold] for m, f in s.oof.backtests.items()})
        y = s.oof.target[hold]
        for name, f in {**{m: s.oof.forecasts[m][hold] for m in s.members}, **combos}.items():
            se[name] = se.get(name, 0.0) + float(((f.astype(np.float64) - y) ** 2).sum())
        n += y.size
        used.append(dep.used)
    scores = {k: v / n for k, v in se.items()}
    best = min(scores[m] for m in s.members)
    return {"scores": scores, "best_member": best, "ratio": scores[COMBINED] / best, "used": used}


def test(s: Stored, cfg: Config) -> dict[str, Any]:
    """Test scores of the combination of ``cfg`` learned on every OOF window (what a fit deploys)."""
    dep = learn(s, s.oof, cfg)
    combos = apply(dep, s.test_context, s.test_fc, s.test_bt)
    y = s.test_target
    scores = {**{m: mse(s.test_fc[m], y) for m in s.members}, **{k: mse(f, y) for k, f in combos.items()}}
    best = min(scores[m] for m in s.members)
    return {"scores": scores, "best_member": best, "ratio": scores[COMBINED] / best, "used": [dep.used]}


VARIANTS: dict[str, list[str]] = {
    "base": [],
    "default": ["router.check=shrinkage", "router.sound_ratio=2"],  # the adopted rule (vote-2 as a named check)
    "pooled-inf": ["router.check=pooled", "router.sound_ratio=1e9"],
    "pooled-2": ["router.check=pooled", "router.sound_ratio=2"],
    "pooled-1.5": ["router.check=pooled", "router.sound_ratio=1.5"],
    "robust-inf": ["router.check=robust", "router.sound_ratio=1e9"],
    "robust-3": ["router.check=robust", "router.sound_ratio=3"],
    "robust-2": ["router.check=robust", "router.sound_ratio=2"],
    "robust-1.5": ["router.check=robust", "router.sound_ratio=1.5"],
    "robust-1.25": ["router.check=robust", "router.sound_ratio=1.25"],
    "robust-eq-2": ["router.check=robust", "router.sound_ratio=2", "router.robust=equal"],
    "robust-2-t2": ["router.check=robust", "router.sound_ratio=2", "router.min_t=2"],
    "robust-2-t0": ["router.check=robust", "router.sound_ratio=2", "router.min_t=0"],
    "vote-2": ["router.check=pooled", "router.sound_ratio=2", "router.min_gain=-1"],
    "vote-1.5": ["router.check=pooled", "router.sound_ratio=1.5", "router.min_gain=-1"],
    "pooled-3": ["router.check=pooled", "router.sound_ratio=3"],
    "greedy-2": ["router.check=robust", "router.sound_ratio=2", "router.robust=greedy"],
}


def variant_config(base: Config, name: str) -> Config:
    from hybrid.config import build_config, parse_set

    sets = VARIANTS[name]
    if not sets:
        return base
    return build_config([("base", base.to_dict()), ("--set", parse_set(sets))])


def stored_paths(cases: list[str] | None) -> list[Path]:
    paths = sorted(OUT.glob("*.npz"))
    if cases:
        paths = [p for p in paths if p.stem.rsplit("-h", 1)[0] in cases]
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("dump", "nested", "test", "time"))
    ap.add_argument("--cases", default="", help="comma-separated case names (default: every case / every dump)")
    ap.add_argument("--core", action="store_true", help="dump: the Time-LLM core joins the members")
    ap.add_argument("--set", action="append", default=[], help="dump: extra section.key=value")
    ap.add_argument("--variants", default="base")
    ap.add_argument("--json", default="", help="append one JSON line per case, horizon and variant here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("hybrid", "router", "baselines", "llm_core", "kernel"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    cases = [c for c in args.cases.split(",") if c]
    if args.command == "dump":
        for name in cases or [c.name for c in CASES]:
            dump(name, args.core, args.set)
        return 0
    if args.command == "time":  # the combination step of a fit (router, static combiners, bands), default config
        import os

        for path in stored_paths(cases):
            s = Stored(path)
            cfg = load_config(None, None, None, ["runtime.progress=false"])
            seconds = []
            for _ in range(3):
                t0 = time.perf_counter()
                learn(s, s.oof, cfg)
                seconds.append(time.perf_counter() - t0)
            print(f"{s.name}: combine {min(seconds):.1f} s (best of 3; {len(s.members)} members, "
                  f"{len(s.oof.starts)} windows x {len(s.meta['channels'])} channels; load average "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
        return 0
    judge = nested if args.command == "nested" else test
    rows = []
    for path in stored_paths(cases):
        s = Stored(path)
        sets = ["runtime.progress=false"] + (["task.levels=[]"] if args.command == "nested" else [])
        base = load_config(None, None, None, sets)  # nested: the combination alone (no bands: they choose nothing)
        base = replace(base, task=replace(base.task, context_length=s.meta["context_length"], seed=0))
        for v in args.variants.split(","):
            t0 = time.perf_counter()
            r = judge(s, variant_config(base, v))
            r.update(case=s.name, variant=v, seconds=round(time.perf_counter() - t0, 2))
            rows.append(r)
            print(f"{s.name:28s} {v:14s} ratio {r['ratio']:.4f}  hybrid {r['scores'][COMBINED]:.5f}  "
                  f"best member {r['best_member']:.5f}  used {','.join(map(str, r['used']))}  {r['seconds']:.1f}s",
                  flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
    for v in args.variants.split(","):
        ratios = np.array([r["ratio"] for r in rows if r["variant"] == v])
        if len(ratios):
            print(f"{v}: geometric mean {np.exp(np.log(ratios).mean()):.4f}, max {ratios.max():.4f}, "
                  f"> 1.005: {(ratios > 1.005).sum()} of {len(ratios)}, > 1.02: {(ratios > 1.02).sum()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
