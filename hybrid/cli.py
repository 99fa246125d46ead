"""The command line: ``hybrid fit | forecast | evaluate | report`` (and ``hybrid --version``).

Exit codes: 0 success, 2 bad input or config (one line on stderr), 1 an
unexpected error (one line; the traceback with ``-v``).

The commands' modules are imported at module level, as everywhere in the
project (tests/test_layers.py); torch is imported only when a run uses the
core (:mod:`hybrid.members`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from hybrid.api import HybridForecaster
from hybrid.artifacts import is_panel, read_manifest, resolve_run_dir
from hybrid.config import load_config
from hybrid.panel import panel_forecast
from hybrid.panel_report import write_panel_report
from hybrid.pipeline import fit_run, forecast_run
from hybrid.report import fmt_value, rerender, write_report
from kernel.data import dataset_name
from kernel.distributed import is_main_process
from kernel.errors import HybridInputError
from router.models import ROUTER_MODES
from router.static import STATIC_MODES

logger = logging.getLogger("hybrid")

ROUTER_CHOICES = (*ROUTER_MODES, *STATIC_MODES)  # router.mode values: learned, then static
DISTRIBUTION = "hybrid-forecast"  # the name pyproject.toml installs the package under
PREVIEW_WIDTH = 110  # characters: the terminal preview of a forecast stays narrower than this
PREVIEW_ROWS = 5  # the first and the last rows shown of a longer forecast


def package_version() -> str:
    """The installed version of the package (``importlib.metadata``), or a note when it is not installed."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return f"unknown ({DISTRIBUTION} is not installed; pip install -e .)"


def _context_length(text: str) -> int | str:
    """``--context-length``: a positive integer or ``auto``."""
    return "auto" if text.strip().lower() == "auto" else _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so errors keep exit code 2 and one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise HybridInputError(f"{self.prog}: {message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hybrid", description="Classical members and a Time-LLM core, routed.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fit = sub.add_parser("fit", help="fit every member, the core and the router; write a run directory")
    fit.add_argument("--data", help="a CSV (any separator, .gz too), an .xlsx, or a built-in name: taylor (default), "
                     "airpassengers, msft")
    fit.add_argument("--horizon", type=_positive_int, nargs="+", help="forecast horizon(s), e.g. 96 192")
    fit.add_argument("--context-length", type=_context_length,
                     help="input length L, or auto (the default: chosen on validation among the lengths the series allows)")
    fit.add_argument("--members", help="the whole member list, comma-separated, e.g. seasonal_naive,linear,ets@24,timellm "
                     "(replaces task.members and task.period_experts)")
    fit.add_argument("--features", choices=("M", "S", "MS"), help="M all channels, S target only, MS all in / target out")
    fit.add_argument("--target", help="target column (default OT when present, else the last column)")
    fit.add_argument("--config", help="extra YAML config layer")
    fit.add_argument("--run-dir", help="write the run here (default runs/<dataset>-<time>); runs/latest then "
                     "points at it, as at every run that finishes")
    fit.add_argument("--overwrite", action="store_true",
                     help="replace the run already in --run-dir (default: refuse; automatic names never collide)")
    fit.add_argument("--seed", type=int, help="seed for numpy, torch and scikit-learn")
    fit.add_argument("--router", choices=ROUTER_CHOICES,
                     help="what `hybrid` is: the learned router's vote (default), select or rules, "
                          "or a static combiner (equal, inverse_error, best_single, top_k)")
    fit.add_argument("--level", type=float, nargs="+", metavar="PCT",
                     help="prediction-interval levels in percent, e.g. 80 95 (default; task.levels)")
    fit.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override any config key, repeatable (e.g. --set core.llm_layers=2)")
    fit.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)

    fc = sub.add_parser("forecast", help="forecast the steps after the end of the data")
    fc.add_argument("--horizon", type=_positive_int, help="steps to forecast (default: the smallest fitted horizon)")
    fc.add_argument("--run-dir", help="run to use (default runs/latest)")
    fc.add_argument("--data", help="newer data with the same columns (default: the data the run was fitted on)")
    fc.add_argument("--output", help="where to write forecast.csv (default: <run-dir>/forecast.csv)")
    fc.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)

    ev = sub.add_parser("evaluate", help="test-set MSE / MAE per member and horizon")
    ev.add_argument("--run-dir", help="run to use (default runs/latest)")
    ev.add_argument("--json", action="store_true", help="print JSON for scripts")
    ev.add_argument("--per-channel", action="store_true", help="also print test MSE per output channel")
    ev.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)

    rp = sub.add_parser("report", help="re-render the vote report of the last forecast")
    rp.add_argument("--run-dir", help="run to use (default runs/latest)")
    rp.add_argument("--output-dir", help="where to write it (default: beside that forecast's forecast.csv)")
    rp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    return parser


def _fit_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    task: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if args.horizon:
        task["horizons"] = list(args.horizon)
    if args.context_length:
        task["context_length"] = args.context_length
    if args.members:
        task["members"] = [m.strip() for m in args.members.split(",") if m.strip()]
        task["period_experts"] = []  # --members is the whole list; name period experts as name@p
    if args.seed is not None:
        task["seed"] = args.seed
    if args.level is not None:
        task["levels"] = list(args.level)
    if args.features:
        data["features"] = args.features
    if args.target:
        data["target"] = args.target
    router = {"mode": args.router} if args.router else {}
    return {k: v for k, v in (("task", task), ("data", data), ("router", router)) if v}


def _table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells)

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def cmd_fit(args: argparse.Namespace) -> int:
    cfg = load_config(dataset_name(args.data), args.config, _fit_overrides(args), args.set)
    result = fit_run(cfg, args.data, args.run_dir, overwrite=args.overwrite)
    if not is_main_process():
        return 0  # torchrun: rank 0 wrote the run and prints the summary
    m = result.manifest
    shape = (f"{m['n_series']} series, {m['n_rows']} rows in all" if is_panel(m)
             else f"{m['n_rows']} rows x {len(m['columns'])} channels")
    print(f"fitted {len(m['members'])} member(s) on {m['dataset']} ({shape}, {m['freq']}) in "
          f"{m['fit_seconds_total']:.1f} s")
    print(f"run: {result.run_dir}")
    _print_metrics(m)
    return 0


def _label(name: str, scores: dict[str, Any]) -> str:
    if scores.get("fallback"):
        return f"{name} ({scores['router']} -> {scores['fallback']}, fallback)"
    return f"{name} ({scores['router']})" if "router" in scores else name


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_metrics(m: dict[str, Any], per_channel: bool = False) -> None:
    refit = "train+val refit" if m["config"]["task"]["refit"] == "train+val" else "train-only fit"
    for H, entry in m["results"].items():
        rows, bands = [], []
        for name, scores in entry["metrics"].items():
            test = scores.get("test") or {}
            train = scores.get("test_train_only") or {}
            rows.append([_label(name, scores), _fmt(scores.get("oof", {}).get("mse")), _fmt(test.get("mse")),
                         _fmt(test.get("mae")), _fmt(train.get("mse")) if train is not test else "-"])
            for level, b in (test.get("intervals") or {}).items():
                bands.append([name, level, f"{b['coverage']:.3f}", f"{b['width']:.3f}", f"{b['interval_score']:.3f}"])
        print(f"\nhorizon {H} (scaled units; out-of-fold over train+val, test over every window; members: {refit})")
        print(_table(rows, ["member", "oof mse", "test mse", "test mae", "train-only test mse"]))
        if bands:
            print("\nprediction intervals on test (conformal, from out-of-fold errors)")
            print(_table(bands, ["forecast", "level %", "coverage", "mean width", "interval score"]))
        gated = entry.get("gate", {}).get("gated") or {}
        for member, channels in gated.items():
            print(f"note: {member} is set aside on {', '.join(channels)} (sanity gate; see the manifest)")
        sound = entry.get("combiner", {}).get("sound") or {}
        for member, channels in (sound.get("unsound") or {}).items():
            print(f"note: {member} is not combined on {', '.join(channels)} (over {sound['ratio']:g} x the best "
                  "member's out-of-fold MSE)")
        if per_channel:
            names = list(entry["metrics"])
            channels = list(next(iter(entry["metrics"].values()))["test"]["per_channel"])
            table = [[n, *[_fmt(entry["metrics"][n]["test"]["per_channel"][c]["mse"]) for c in channels]]
                     for n in names if entry["metrics"][n].get("test")]
            print(f"\ntest mse per channel, horizon {H}")
            print(_table(table, ["member", *channels]))


def _forecast_panel(args: argparse.Namespace, run_dir: Path, manifest: dict[str, Any]) -> int:
    frame, fitted = panel_forecast(run_dir, manifest, args.horizon, args.data)
    out = Path(args.output) if args.output else run_dir / f"forecast-h{args.horizon or fitted}.csv"
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(out)
    weights = frame.filter(like="weight:").groupby(frame["unique_id"]).first().mean()
    shown = ", ".join(f"{k.removeprefix('weight:')} {w:.2f}" for k, w in weights.sort_values(ascending=False).items()
                      if w >= 0.005)
    n = frame["unique_id"].nunique()
    print(textwrap.fill(f"forecast of {args.horizon or fitted} steps for {n} series (fitted horizon {fitted}); mean "
                        f"weights: {shown}", width=PREVIEW_WIDTH, subsequent_indent="  "))
    shown_cols = [c for c in frame.columns if c in ("unique_id", "ds") or c.startswith("hybrid")]
    values = {c: fmt_value for c in shown_cols if c not in ("unique_id", "ds")}
    first = frame[shown_cols].groupby("unique_id", sort=False).head(2).head(2 * PREVIEW_ROWS)  # a few series' start
    print(first.to_string(index=False, formatters=values))
    print(f"wrote {out} (long format; every member and its weight per series too)")
    written = write_panel_report(run_dir, manifest, frame, fitted, out.parent)
    print(f"vote report: {written[0]}" + (f" and {len(written) - 1} plot(s) of a few series" if len(written) > 1 else ""))
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    run_dir = resolve_run_dir(args.run_dir)
    manifest = read_manifest(run_dir)
    if is_panel(manifest):
        return _forecast_panel(args, run_dir, manifest)
    result = forecast_run(run_dir, args.horizon, args.data)
    out = Path(args.output) if args.output else run_dir / "forecast.csv"
    tmp = out.with_name(f".{out.name}.tmp")
    result.frame.to_csv(tmp, index=False)
    tmp.replace(out)
    weights = ", ".join(f"{n} {w:.2f}" for n, w in sorted(result.weights.items(), key=lambda kv: -kv[1]) if w > 0)
    print(textwrap.fill(f"forecast of {result.horizon} steps (fitted horizon {result.fitted_horizon}); weights: "
                        f"{weights}", width=PREVIEW_WIDTH, subsequent_indent="  "))
    table, note = forecast_preview(result.frame, list(result.history.columns))
    print(table)
    if note:
        print(note)
    print(f"wrote {out}")
    written = write_report(result, run_dir, out.parent)
    if result.fallback:
        print(f"note: the router ({result.mode}) fell back to {result.fallback}; see {written[0].name}")
    print(_wrote_report(written))
    return 0


def _wrote_report(written: list[Path]) -> str:
    """``wrote report.md, report.json, plot-x.png``; many plots as one pattern, not a path per channel."""
    md, js, *plots = written
    shown = "".join(f", {p}" for p in plots) if len(plots) <= 2 else f" and {len(plots)} plots ({md.parent}/plot-*.png)"
    return f"wrote {md}, {js}{shown}"


def forecast_preview(frame: pd.DataFrame, channels: list[str], width: int = PREVIEW_WIDTH,
                     rows: int = PREVIEW_ROWS) -> tuple[str, str]:
    """A terminal-sized view of ``forecast.csv``: a table that fits ``width`` and what it leaves out.

    Every column is shown when the table fits; otherwise only the point
    forecasts (no band columns) of as many leading channels as fit. A
    forecast longer than ``2 * rows + 2`` steps shows its first and last
    ``rows`` steps around a ``...`` row. Values are written as
    :func:`hybrid.report.fmt_value` writes them (thousands separators, no
    scientific notation).

    Args:
        frame: the forecast, [H rows] x (``timestamp``, each channel, its band columns).
        channels: the output channels, in column order.
        width: the widest line allowed, in characters.
        rows: steps shown at each end of a long forecast.

    Returns:
        ``(table, note)``: the text table, and a note saying what the table
        leaves out (empty when it shows everything).
    """
    cut = len(frame) > 2 * rows + 2
    body = pd.concat([frame.head(rows), frame.tail(rows)]) if cut else frame

    def cells(cols: list[str]) -> list[list[str]]:
        out = [[str(t) for t in body["timestamp"]]] + [[fmt_value(float(v)) for v in body[c]] for c in cols]
        table = [list(r) for r in zip(*out, strict=True)]
        return [*table[:rows], ["...", *[""] * len(cols)], *table[rows:]] if cut else table

    def render(cols: list[str]) -> str:
        return "\n".join(line.rstrip() for line in _table(cells(cols), ["timestamp", *cols]).splitlines())

    every = [c for c in frame.columns if c != "timestamp"]
    text = render(every)
    if max(map(len, text.splitlines())) <= width:
        return text, ""
    shown = list(channels)
    while len(shown) > 1 and max(map(len, render(shown).splitlines())) > width:
        shown.pop()
    steps = f"steps 1-{rows} and {len(frame) - rows + 1}-{len(frame)} of {len(frame)}; " if cut else ""
    which = "every channel" if len(shown) == len(channels) else f"{len(shown)} of {len(channels)} channels"
    bands = ", with prediction bands" if len(every) > len(channels) else ""
    return render(shown), f"shown: {steps}point forecasts of {which}; the file has all{bands}"


def cmd_report(args: argparse.Namespace) -> int:
    written = rerender(resolve_run_dir(args.run_dir), Path(args.output_dir) if args.output_dir else None)
    print(_wrote_report(written))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = HybridForecaster.load(args.run_dir)
    report = model.evaluate()
    if args.json:
        slim = {
            "dataset": report["dataset"],
            "context_length": report["context_length"],
            "horizons": {
                H: {name: {"mse": s["test"]["mse"], "mae": s["test"]["mae"], "oof_mse": s.get("oof", {}).get("mse"),
                           **({"per_channel": s["test"]["per_channel"]} if args.per_channel else {}),
                           **({"intervals": s["test"]["intervals"]} if "intervals" in s["test"] else {})}
                    for name, s in by.items() if s.get("test")}
                for H, by in report["horizons"].items()
            },
        }
        print(json.dumps(slim, indent=2))
        return 0
    assert model.manifest_ is not None
    print(f"{report['dataset']}, context_length {report['context_length']}, run {model.run_dir_}")
    _print_metrics(model.manifest_, per_channel=args.per_channel)
    return 0


class OnceFilter(logging.Filter):
    """Lets a warning through once per command: a member fitted once per fold says the same thing K + 3 times."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


COMMANDS = {"fit": cmd_fit, "forecast": cmd_forecast, "evaluate": cmd_evaluate, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    for noisy in ("matplotlib", "urllib3", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("kernel.parallel").setLevel(logging.WARNING)  # one line per parallel task: -v shows them
        for handler in logging.getLogger().handlers:
            handler.addFilter(OnceFilter())
    if not is_main_process() and not verbose:
        logging.getLogger().setLevel(logging.WARNING)  # torchrun: rank 0 tells the story, the others only warn
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help and --version: argparse printed them and exits
            return exc.code if isinstance(exc.code, int) else 0
        return COMMANDS[args.command](args)
    except HybridInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as exc:
        if verbose:
            logger.exception("unexpected error")
        else:
            print(f"unexpected error: {type(exc).__name__}: {exc} (run with -v for the traceback)", file=sys.stderr)
        return 1


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
