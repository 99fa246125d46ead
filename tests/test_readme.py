"""The README's examples run as written: every bash block (less its installs and the test command) and the Python."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 150


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), re.S)


def runnable(block: str) -> str:
    """The block's commands without comments, installs (CI installs the project) and the test command itself."""
    lines = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        parts = [p.strip() for p in line.split("&&")]
        parts = [p for p in parts if p and not p.startswith("pip install") and "pytest" not in p]
        if parts:
            lines.append(" && ".join(parts))
    return "\n".join(lines)


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def test_readme_is_short_and_keeps_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    commands = [b for b in blocks("bash") if b.lstrip().startswith("# 1.") or b.lstrip().startswith("# 2.")]
    assert len(commands) == 2
    assert "pip install -e . && hybrid fit && hybrid forecast --horizon 96" in commands[0]
    assert 'pip install -e ".[dev]" && python -m pytest -q' in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in ci and "python -m pytest -q" in ci  # CI calls the README's test command


@pytest.mark.integration
@pytest.mark.parametrize("index", range(len(blocks("bash"))))
def test_readme_bash_block_runs(index: int, tmp_path: Path):
    script = runnable(blocks("bash")[index])
    if not script:
        pytest.skip("this block only installs or runs the tests (CI runs them)")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{script}\n{done.stderr[-3000:]}"
    if "hybrid forecast" in script:
        assert (tmp_path / "runs" / "latest" / "forecast.csv").is_file()
        assert (tmp_path / "runs" / "latest" / "report.md").is_file()


@pytest.mark.integration
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_block_runs_and_writes_nothing(index: int, tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", blocks("python")[index]], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hybrid-lo-80" in done.stdout  # the long forecast frame was printed
    assert list(tmp_path.iterdir()) == []  # a DataFrame fit without run_dir writes nothing here
