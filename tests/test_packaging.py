"""The wheel ships every package and the shipped YAML, and the installed package works without the checkout.

The YAML files live in the checkout's top-level ``configs/``; the wheel carries them inside the package as
``hybrid/configs/`` (pyproject.toml maps the folder), and a checkout or an editable install reads ``configs/``.

The wheel is built from a copy of the checkout (setuptools builds in the source folder, and a stale
``build/`` there could slip old files into the wheel), installed with ``pip --target`` into a temporary
folder, and run from another temporary folder with only that folder on PYTHONPATH (the dependencies
come from the current environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import make_frame

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernel", "hybrid", "baselines", "router", "llm_core")
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "runs", "__pycache__", ".pytest_cache",
                                   ".ruff_cache", ".venv", ".benchmarks")


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src") / "hybrid-forecast"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    done = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
                 str(out), str(src)], cwd=out)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("install") / "site"
    done = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target),
                 str(wheel)], cwd=target.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def test_wheel_holds_every_module_and_the_shipped_yaml(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hybrid/configs/default.yaml" in names
    for package in PACKAGES:
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py")}
        assert modules and modules <= names, f"{package}: missing {sorted(modules - names)}"
    shipped = {f"hybrid/configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")}
    assert len(shipped) >= 9 and shipped <= names, sorted(shipped - names)
    assert not (ROOT / "hybrid" / "configs").exists(), "the shipped YAML lives in the top-level configs/"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


NAMED = ["ratio", "allow", "keep"]  # data.split, gaps, duplicates of the shipped weather-benchmark.yaml (defaults differ)


def test_the_checkout_reads_the_top_level_configs() -> None:
    """From the checkout (and an editable install, which runs from it) the shipped YAML is ``configs/``."""
    from hybrid.config import CONFIG_DIR, load_config

    assert Path(str(CONFIG_DIR)).resolve() == ROOT / "configs"
    named, default = load_config(config_file="weather-benchmark").data, load_config().data
    assert [named.split, named.gaps, named.duplicates] == NAMED
    assert [default.split, default.gaps, default.duplicates] != NAMED
    assert load_config("etth1").task.context_length == 512


def test_installed_package_runs_outside_the_checkout(site: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    python = [sys.executable, "-c"]

    done = _run([*python, "import hybrid.cli, sys; sys.exit(hybrid.cli.main(['fit', '--help']))"], work, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--context-length" in done.stdout

    where = ("import json, hybrid, kernel.data, baselines, router, llm_core, hybrid.config as c; "
             "print(json.dumps({'files': [m.__file__ for m in (hybrid, kernel.data, baselines, router, llm_core)], "
             "'yaml': str(c.CONFIG_DIR / 'default.yaml'), 'members': list(c.load_config().task.members), "
             "'etth1': c.load_config('ETTh1').task.context_length, "
             "'named': [getattr(c.load_config(config_file='weather-benchmark').data, k) for k in ('split', 'gaps', "
             "'duplicates')]}))")
    done = _run([*python, where], work, env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for path in [*found["files"], found["yaml"]]:
        assert Path(path).resolve().is_relative_to(site.resolve()), path
    # default.yaml lists every member; the dataclass default is two: the YAML was read from the installed package
    assert found["members"] == ["seasonal_naive", "linear", "nlinear", "dlinear", "arima", "ets", "timellm"]
    # a dataset's own file and a shipped config by name (--config NAME) come from the installed package too
    assert found["etth1"] == 512 and found["named"] == NAMED

    data = work / "small.csv"
    make_frame(n=400).to_csv(data, index=False)
    done = _run([sys.executable, "-m", "hybrid.cli", "fit", "--data", str(data), "--context-length", "48",
                 "--horizon", "12", "--members", "seasonal_naive,linear", "--set", "runtime.progress=false",
                 "--run-dir", "run"], work, env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((work / "run" / "manifest.json").read_text())["config"]
    assert config["stack"]["folds"] == 5 and config["runtime"]["backend"] == "loky"
    assert config["router"]["mode"] == "vote" and config["task"]["members"] == ["seasonal_naive", "linear"]
