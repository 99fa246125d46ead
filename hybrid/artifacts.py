"""Run directories: written atomically, never loaded half-written.

A fit writes everything into ``<runs>/.incomplete-<name>-<pid>/`` and renames
it to its final name only once ``manifest.json`` (with ``"complete": true``)
is in place; ``<runs>/latest`` is then re-pointed with an atomic rename of a
fresh symlink. An interrupted fit leaves at most an ``.incomplete-*`` folder,
which nothing loads.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib

from hybrid.errors import HybridInputError

MANIFEST = "manifest.json"
DEFAULT_RUNS = Path("runs")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextmanager
def staged_run_dir(final: Path) -> Iterator[Path]:
    """Yield a staging folder that becomes ``final`` only if the block succeeds.

    An existing ``final`` is replaced (moved aside, then deleted) only after
    the new run is complete.
    """
    final = final.resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.parent / f".incomplete-{final.name}-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def point_latest(run_dir: Path) -> None:
    """Make ``<parent>/latest`` a symlink to ``run_dir`` (atomic replace)."""
    run_dir = run_dir.resolve()
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """The run to load: ``run_dir`` or ``runs/latest``; checked complete."""
    path = Path(run_dir) if run_dir else DEFAULT_RUNS / "latest"
    if not path.exists():
        hint = "run `hybrid fit` first" if run_dir is None else "pass --run-dir with a folder `hybrid fit` wrote"
        raise HybridInputError(f"no run found at {path}; {hint}.")
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise HybridInputError(
            f"{path} is not a complete run (no {MANIFEST}); pass --run-dir with a folder `hybrid fit` wrote."
        )
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise HybridInputError(f"{manifest} is damaged (not valid JSON); fit the run again.") from None
    if not data.get("complete"):
        raise HybridInputError(f"{path} is an incomplete run; fit it again.")
    return path.resolve()


def read_manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))


def member_path(run_dir: Path, name: str, horizon: int) -> Path:
    """Where a fitted member lives: ``members/<name>-h<H>`` (``@`` spelt ``_at_``)."""
    return run_dir / "members" / f"{name.replace('@', '_at_')}-h{horizon}"


def save_member(member: Any, path: Path) -> str:
    """Persist a fitted member; members with ``save(dir)`` manage their own files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(member, "save") and hasattr(type(member), "load"):
        path.mkdir()
        member.save(path)
        return "dir"
    joblib.dump(member, path.with_suffix(".joblib"))
    return "joblib"


def load_member(path: Path, kind: str, cls_path: str) -> Any:
    if kind == "joblib":
        return joblib.load(path.with_suffix(".joblib"))
    module, _, cls_name = cls_path.rpartition(".")
    import importlib

    cls = getattr(importlib.import_module(module), cls_name)
    return cls.load(path)
