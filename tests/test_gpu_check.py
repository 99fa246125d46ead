"""benchmarks/gpu_check.py: --help works anywhere; without CUDA it stops with one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for minutes")
def test_gpu_check_without_cuda_is_one_line_and_exit_2(tmp_path: Path) -> None:
    helped = _run("--help")
    assert helped.returncode == 0 and "--data" in helped.stdout and "ETTh1" in helped.stdout
    out = tmp_path / "gpu_check.md"
    done = _run("--out", str(out))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("no CUDA device: ")
    assert done.stdout == "" and not out.exists()
