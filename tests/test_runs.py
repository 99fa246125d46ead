"""Run folders never overwrite each other (issue 18): unique names, --overwrite, stale staging folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import hybrid
from hybrid import artifacts
from hybrid.api import HybridForecaster
from hybrid.cli import main
from kernel.errors import HybridInputError

STAMP = "20260101-000000"
REPO = Path(hybrid.__file__).resolve().parents[1]  # the checkout the tests import, also for subprocesses


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (folders as "dir")."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def runs_in(parent: Path) -> list[Path]:
    """The run folders in ``parent`` (not latest, not hidden working folders)."""
    return sorted(p for p in parent.iterdir() if p.name != "latest" and not p.name.startswith("."))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_concurrent_fits_with_one_stamp_keep_every_run(csv_path, fit_args, capsys):
    env = {**os.environ, artifacts.STAMP_ENV: STAMP,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "hybrid.cli", "fit", "--data", str(csv_path), *fit_args]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
    reported = {line.removeprefix("run: ") for out, _ in outs for line in out.splitlines() if line.startswith("run: ")}
    runs = Path("runs")
    found = runs_in(runs)
    assert [p.name for p in found] == [f"series-{STAMP}", f"series-{STAMP}-2", f"series-{STAMP}-3"]
    assert reported == {str(p.resolve()) for p in found}, "each fit reports its own, distinct run"
    assert [p.name for p in runs.iterdir() if p.name.startswith(".")] == [], "no staging leftovers"
    for run in found:
        assert json.loads((run / "manifest.json").read_text())["complete"] is True
        assert main(["forecast", "--run-dir", str(run)]) == 0
        assert (run / "forecast.csv").is_file()
    assert (runs / "latest").resolve() in {p.resolve() for p in found}


def test_sequential_fits_in_one_second_get_suffixes(csv_path, fit_args, monkeypatch):
    monkeypatch.setenv(artifacts.STAMP_ENV, STAMP)
    assert main(["fit", "--data", str(csv_path), *fit_args]) == 0
    assert main(["fit", "--data", str(csv_path), *fit_args, "--seed", "1"]) == 0
    first, second = Path(f"runs/series-{STAMP}"), Path(f"runs/series-{STAMP}-2")
    assert json.loads((first / "manifest.json").read_text())["seed"] == 0
    assert json.loads((second / "manifest.json").read_text())["seed"] == 1
    assert Path("runs/latest").resolve() == second.resolve()


def test_claim_run_dir_is_exclusive_across_threads(tmp_path):
    parent = tmp_path / "runs"
    parent.mkdir()
    (parent / "x").write_text("a file, not a run")  # taken names are skipped, never touched
    barrier = threading.Barrier(12)
    claimed: list[Path] = []

    def claim() -> None:
        barrier.wait()
        claimed.append(artifacts.claim_run_dir(parent, "x"))

    threads = [threading.Thread(target=claim) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in claimed) == sorted(f"x-{n}" for n in range(2, 14))
    assert all(p.is_dir() and not any(p.iterdir()) for p in claimed)
    assert (parent / "x").read_text() == "a file, not a run"


def test_point_latest_from_many_threads(tmp_path):
    parent = tmp_path / "runs"
    targets = [artifacts.claim_run_dir(parent, f"r{i}") for i in range(6)]
    barrier = threading.Barrier(len(targets))
    errors: list[BaseException] = []

    def point(target: Path) -> None:
        barrier.wait()
        try:
            for _ in range(200):
                artifacts.point_latest(target)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=point, args=(t,)) for t in targets]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that shared temporary names would collide
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert (parent / "latest").resolve() in set(targets)
    assert sorted(p.name for p in parent.iterdir() if p.name.startswith(".")) == []


def test_latest_is_the_last_finished_run_also_with_run_dir(csv_path, fit_args, capsys, monkeypatch, tmp_path):
    """runs/latest follows every finished fit, --run-dir or not; forecast/evaluate/report without one use it."""
    latest = Path("runs/latest")
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "r1"]) == 0
    assert latest.is_symlink() and latest.resolve() == Path("r1").resolve()
    assert os.readlink(latest) == str(Path("r1").resolve())  # outside runs/: the absolute path
    capsys.readouterr()
    assert main(["forecast"]) == 0 and Path("r1/forecast.csv").is_file()
    assert main(["report"]) == 0
    assert main(["evaluate"]) == 0
    assert f"run {Path('r1').resolve()}" in capsys.readouterr().out

    monkeypatch.setenv(artifacts.STAMP_ENV, STAMP)
    assert main(["fit", "--data", str(csv_path), *fit_args]) == 0
    assert os.readlink(latest) == f"series-{STAMP}"  # inside runs/: by name, so runs/ can be moved whole
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "runs/mine"]) == 0
    assert os.readlink(latest) == "mine"

    elsewhere = tmp_path / "other" / "r2"
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", str(elsewhere)]) == 0
    assert latest.resolve() == elsewhere.resolve()
    assert not (tmp_path / "other" / "latest").exists()  # one pointer, in runs/ of the working folder

    # a refused fit and a failed fit leave the pointer where it was
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "r1"]) == 2
    assert latest.resolve() == elsewhere.resolve()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "save_member", boom)
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "r3"]) == 1
    assert latest.resolve() == elsewhere.resolve() and not Path("r3").exists()


def test_a_private_run_is_not_made_latest(tmp_path):
    with artifacts.staged_run_dir(tmp_path / "scratch" / "run", "x", latest=False) as (stage, final):
        (stage / artifacts.MANIFEST).write_text('{"complete": true}')
    assert (final / artifacts.MANIFEST).is_file()
    assert not Path("runs").exists()
    with artifacts.staged_run_dir(tmp_path / "kept", "x") as (stage, final):
        (stage / artifacts.MANIFEST).write_text('{"complete": true}')
    assert artifacts.resolve_run_dir(None) == final


def test_a_run_still_lands_when_latest_cannot_be_pointed(csv_path, fit_args, capsys):
    Path("runs/latest").mkdir(parents=True)  # a real folder in the pointer's place: never replaced
    (Path("runs/latest") / "mine.txt").write_text("mine\n")
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "r1"]) == 0
    assert json.loads(Path("r1/manifest.json").read_text())["complete"] is True
    assert (Path("runs/latest") / "mine.txt").read_text() == "mine\n"
    err = capsys.readouterr().err
    assert "WARNING" in err and "runs/latest could not point at it" in err and "pass --run-dir" in err
    assert sorted(p.name for p in Path("runs").iterdir()) == ["latest"]  # no temporary link left behind


def test_existing_run_dir_needs_overwrite(csv_path, fit_args, capsys, monkeypatch):
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "run"]) == 0
    before = snapshot(Path("run"))
    capsys.readouterr()

    import hybrid.pipeline

    def no_loading(*args, **kwargs):
        raise AssertionError("a refused fit must not load data")

    with monkeypatch.context() as m:  # the refusal comes before any fitting work
        m.setattr(hybrid.pipeline, "load_series", no_loading)
        assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "run", "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run" in err[0] and "--overwrite" in err[0], err
    assert snapshot(Path("run")) == before
    assert sorted(p.name for p in Path().iterdir()) == ["run", "runs", "series.csv"]  # runs/: the latest pointer

    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "run", "--seed", "1", "--overwrite"]) == 0
    assert json.loads(Path("run/manifest.json").read_text())["seed"] == 1
    assert snapshot(Path("run")) != before
    assert sorted(p.name for p in Path().iterdir()) == ["run", "runs", "series.csv"], "no .old-/.incomplete- leftovers"
    assert [p.name for p in Path("runs").iterdir()] == ["latest"]  # the pointer alone, no run, no working folder


def test_api_overwrite(csv_path):
    model = HybridForecaster(horizons=(24,), context_length=96, members=("seasonal_naive", "linear"),
                             sets=["runtime.progress=false"])
    model.fit(str(csv_path), run_dir="api-run")
    with pytest.raises(HybridInputError, match="--overwrite"):
        model.fit(str(csv_path), run_dir="api-run")
    model.fit(str(csv_path), run_dir="api-run", overwrite=True)
    assert model.run_dir_ == Path("api-run").resolve()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_non_run_target_is_refused(csv_path, fit_args, capsys, overwrite):
    Path("notes").mkdir()
    Path("notes/notes.txt").write_text("mine\n")
    Path("afile").write_text("also mine\n")
    before = snapshot(Path("notes"))
    for target in ("notes", "afile"):
        capsys.readouterr()
        assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", target, *overwrite]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and target in err[0], err
    assert snapshot(Path("notes")) == before
    assert Path("afile").read_text() == "also mine\n"
    assert sorted(p.name for p in Path().iterdir()) == ["afile", "notes", "series.csv"]


def test_empty_folder_may_be_used_and_a_failed_fit_removes_what_it_claimed(csv_path, fit_args, monkeypatch):
    Path("empty").mkdir()
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "empty"]) == 0
    assert json.loads(Path("empty/manifest.json").read_text())["complete"] is True

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "save_member", boom)
    assert main(["fit", "--data", str(csv_path), *fit_args, "--run-dir", "new"]) == 1
    assert not Path("new").exists()
    assert main(["fit", "--data", str(csv_path), *fit_args]) == 1
    assert [p.name for p in Path("runs").iterdir()] == ["latest"]  # no run, no working folder
    assert Path("runs/latest").resolve() == Path("empty").resolve()  # still the last run that finished


def test_stale_staging_folders_are_removed_live_ones_kept(csv_path, fit_args, capsys):
    runs = Path("runs")
    runs.mkdir()
    pid = dead_pid()
    dead = [runs / f".incomplete-x-{pid}", runs / f".old-y-{pid}"]
    live = runs / f".incomplete-x-{os.getpid()}"
    for folder in (*dead, live):
        folder.mkdir()
        (folder / "manifest.json").write_text("{}")
    (runs / f".latest-{pid}").symlink_to("nowhere")
    assert main(["fit", "--data", str(csv_path), *fit_args]) == 0
    assert not any(p.exists() for p in dead)
    assert not (runs / f".latest-{pid}").is_symlink()
    assert (live / "manifest.json").is_file()
    err = capsys.readouterr().err
    assert f".incomplete-x-{pid}" in err and f".old-y-{pid}" in err
    assert f".incomplete-x-{os.getpid()}" not in err


def test_commands_ignore_staging_folders(csv_path, fit_args, capsys):
    assert main(["fit", "--data", str(csv_path), *fit_args]) == 0
    real = Path("runs/latest").resolve()
    stage = Path(f"runs/.incomplete-{real.name}-{os.getpid()}")
    shutil.copytree(real, stage)  # a complete-looking run in a staging folder (killed before its rename)
    for cmd in (["forecast"], ["evaluate"], ["report"]):
        capsys.readouterr()
        assert main([*cmd, "--run-dir", str(stage)]) == 2
        assert "not a run" in capsys.readouterr().err
    assert not (stage / "forecast.csv").exists()
    assert main(["forecast"]) == 0
    assert (real / "forecast.csv").is_file() and not (stage / "forecast.csv").exists()
    assert main(["evaluate"]) == 0
    assert Path("runs/latest").resolve() == real
