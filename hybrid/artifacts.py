"""Run directories: unique, written atomically, never loaded half-written.

A fit claims its run folder first: an automatic name ``<runs>/<dataset>-<time>``
(``-2``, ``-3``, ... when that exists) is created empty with ``os.mkdir``,
which fails for a name another fit already took, so two fits never share a
folder. Everything is written into ``<runs>/.incomplete-<name>-<token>-<pid>/``
beside it, which is renamed onto the claimed empty folder only once
``manifest.json`` (with ``"complete": true``) is in place; ``<runs>/latest`` is
then re-pointed with an atomic rename of a fresh symlink. An interrupted fit
leaves at most a staging folder, which no command loads and the next fit in
that folder removes once its process is gone. An explicit run folder that
already holds a run is replaced only when asked (``overwrite``).

``latest`` means the run that finished last, wherever it was written: it
always lives in the runs folder of the default layout, ``runs/latest``
relative to the working directory (``staged_run_dir``'s ``parent``), which
``hybrid forecast``, ``evaluate`` and ``report`` read when no ``--run-dir`` is
given. A run inside that folder is linked by its name (the folder can be
moved as a whole); a run written elsewhere (``--run-dir``) by its absolute
path. A fit that fails or is refused leaves ``latest`` as it was.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from safetensors import SafetensorError

from hybrid.state import STATE_FORMAT, class_path, load_state, resolve_class, save_state
from kernel.contract import Forecaster, Member
from kernel.errors import HybridInputError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PANEL = "panel"  # the manifest's "layout" of a many-series run (hybrid.panel); a one-series run has none
DEFAULT_RUNS = Path("runs")
LATEST = "latest"
STAGE_PREFIX = ".incomplete-"
OLD_PREFIX = ".old-"
LATEST_TMP_PREFIX = ".latest-"
STAMP_ENV = "HYBRID_RUN_STAMP"
_PRIVATE = re.compile(r"^\.(?:incomplete|old|latest)-(?:.*-)?(\d+)$")
_STAMP = re.compile(r"^\d{8}-\d{6}$")
_MAX_SUFFIX = 10_000


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=plain) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def plain(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (numpy arrays and scalars to lists and numbers, the rest to strings)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


class StagedRun(NamedTuple):
    """Where a fit writes (``stage``) and where the run will be (``final``, resolved)."""

    stage: Path
    final: Path


def run_stamp() -> str:
    """The UTC time stamp in automatic run names, ``YYYYmmdd-HHMMSS``.

    Test hook: the environment variable ``HYBRID_RUN_STAMP`` (same format)
    replaces the clock, so that tests can make fits collide on one name.
    """
    forced = os.environ.get(STAMP_ENV)
    if forced:
        if not _STAMP.match(forced):
            raise HybridInputError(f"{STAMP_ENV}={forced!r} is not YYYYmmdd-HHMMSS; unset it (it is a test hook).")
        return forced
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def claim_run_dir(parent: Path, base: str) -> Path:
    """Create and return the empty folder ``parent/base``, or ``base-2``, ``base-3``, ... if taken.

    Each name is tried with ``os.mkdir``, which fails when the name exists, so
    concurrent fits (processes or threads) always get distinct folders and
    nothing existing is touched.

    Args:
        parent: the runs folder (created if missing).
        base: the preferred name, e.g. ``ETTh1-20260101-000000``.

    Returns:
        The claimed folder (empty; commands treat it as "not a complete run").
    """
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, _MAX_SUFFIX):
        path = parent / (base if n == 1 else f"{base}-{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise HybridInputError(f"{parent} already holds {_MAX_SUFFIX - 1} runs named {base}*; clean it or pass --run-dir.")


def check_run_dir(run_dir: str | Path | None, overwrite: bool = False) -> None:
    """Refuse an explicit run folder that must not be written; call before any fitting work.

    A missing or empty folder may be used; one holding a run (``manifest.json``)
    only with ``overwrite``; anything else (a file, a non-empty folder without
    a manifest) never.

    Args:
        run_dir: the ``--run-dir`` given, or None for an automatic name (always fine).
        overwrite: whether an existing run there may be replaced.

    Raises:
        HybridInputError: one line naming the folder and the fix.
    """
    if run_dir is None:
        return
    path = Path(run_dir)
    if not path.exists():
        return
    if not path.is_dir():
        raise HybridInputError(f"--run-dir {path} exists and is not a folder; pass a new or empty folder.")
    if (path / MANIFEST).is_file():
        if not overwrite:
            raise HybridInputError(f"--run-dir {path} already holds a run; pass --overwrite to replace it, "
                                   "or choose another folder.")
        return
    if any(path.iterdir()):
        raise HybridInputError(f"--run-dir {path} is not empty and holds no run (no {MANIFEST}); pass a new or "
                               "empty folder (--overwrite replaces only runs).")


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (unknown counts as alive, so nothing live is removed)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _private_name(prefix: str, name: str = "") -> str:
    """``<prefix><name>-<token>-<pid>``: unique per process and thread, the pid last."""
    middle = f"{name}-" if name else ""
    return f"{prefix}{middle}{uuid.uuid4().hex[:8]}-{os.getpid()}"


def remove_stale(parent: Path) -> list[Path]:
    """Remove what killed fits left in ``parent``: ``.incomplete-*-<pid>``, ``.old-*-<pid>``, ``.latest-*-<pid>``.

    Only entries whose process no longer exists (``os.kill(pid, 0)`` raises
    ProcessLookupError) are removed; each is first renamed to a private name
    so that concurrent fits never remove the same one twice.

    Args:
        parent: a runs folder.

    Returns:
        The entries removed (their original paths); logged in one line.
    """
    if not parent.is_dir():
        return []
    removed = []
    for entry in sorted(parent.iterdir()):
        match = _PRIVATE.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if entry.is_symlink() or not entry.is_dir():
            with suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
            continue
        trash = parent / _private_name(OLD_PREFIX, "stale")
        try:
            os.rename(entry, trash)
        except FileNotFoundError:  # another fit took it first
            continue
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(entry)
    if removed:
        logger.warning("removed %s, left in %s by fit(s) that no longer run", ", ".join(p.name for p in removed), parent)
    return removed


def _claim_target(final: Path, overwrite: bool) -> bool:
    """Claim an explicit run folder; True when this fit created it (and so removes it on failure)."""
    try:
        os.mkdir(final)
    except FileExistsError:
        check_run_dir(final, overwrite)  # it may have changed while the fit ran
        return False
    return True


def _move_in(stage: Path, final: Path, overwrite: bool) -> None:
    """Rename the complete ``stage`` onto ``final`` (an empty folder, or a run when ``overwrite``)."""
    old = None
    if overwrite and (final / MANIFEST).is_file():
        old = final.parent / _private_name(OLD_PREFIX, final.name)
        os.replace(final, old)
    try:
        os.replace(stage, final)  # onto an empty folder: atomic; onto a non-empty one: fails
    except BaseException as exc:
        if old is not None and not final.exists():
            os.replace(old, final)  # put the old run back
        if isinstance(exc, OSError) and exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise HybridInputError(f"{final} was filled by another fit while this one ran; nothing was replaced. "
                                   "Fit again into another folder, or pass --overwrite to replace it.") from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_run_dir(run_dir: str | Path | None, name: str, *, overwrite: bool = False,
                   parent: Path = DEFAULT_RUNS, latest: bool = True) -> Iterator[StagedRun]:
    """Yield a staging folder that becomes the run folder only if the block succeeds.

    Stale leftovers of killed fits beside the run are removed first
    (:func:`remove_stale`). Nothing existing is replaced unless ``overwrite``
    and the target holds a run, which is then moved aside and deleted only
    after the new run is in place; then ``parent/latest`` points at the new
    run (:func:`point_latest`), also when ``run_dir`` is elsewhere, unless
    ``latest`` is False. On failure the staging folder and a folder this fit
    claimed are removed, and ``latest`` is left as it was.

    Args:
        run_dir: an explicit run folder, or None for ``parent/<name>-<stamp>``
            made unique by :func:`claim_run_dir`.
        name: the dataset name, for the automatic folder name.
        overwrite: replace an existing run at ``run_dir``.
        parent: where automatic run folders go, and where ``latest`` lives.
        latest: point ``parent/latest`` at the run once it is in place; False
            for a run nobody should find as "the last run" (a private,
            temporary one).

    Yields:
        ``(stage, final)``: write into ``stage``; ``final`` is where the run lands.

    Raises:
        HybridInputError: ``run_dir`` must not be written (see :func:`check_run_dir`).
    """
    if run_dir is None:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale(parent)
        final = claim_run_dir(parent, f"{name}-{run_stamp()}").resolve()
        claimed = True
    else:
        final = Path(run_dir).resolve()
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(final.parent)
        claimed = _claim_target(final, overwrite)
    try:
        stage = final.parent / _private_name(STAGE_PREFIX, final.name)
        stage.mkdir()
    except BaseException:
        if claimed:
            with suppress(OSError):
                final.rmdir()
        raise
    try:
        yield StagedRun(stage, final)
        _move_in(stage, final, overwrite)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if claimed:
            with suppress(OSError):
                final.rmdir()  # only while still empty
        raise
    if not latest:
        return
    try:
        point_latest(final, parent)
    except OSError as exc:  # the run is complete and usable by --run-dir; only the pointer is missing
        logger.warning("the run in %s is complete, but %s could not point at it (%s: %s); pass --run-dir %s "
                       "to use it", final, parent / LATEST, type(exc).__name__, exc, final)


def point_latest(run_dir: Path, parent: Path | None = None) -> Path:
    """Make ``<parent>/latest`` a symlink to ``run_dir`` (atomic replace; the last caller wins).

    Args:
        run_dir: a finished run.
        parent: the folder that holds ``latest`` (created if missing); default
            ``run_dir``'s own folder. A run inside ``parent`` is linked by its
            name, any other by its absolute path.

    Returns:
        The link, ``parent/latest``.
    """
    run_dir = run_dir.resolve()
    parent = run_dir.parent if parent is None else Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    target = run_dir.name if parent.resolve() == run_dir.parent else str(run_dir)
    link = parent / LATEST
    tmp = parent / _private_name(LATEST_TMP_PREFIX)
    tmp.symlink_to(target)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return link


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """The run to load: ``run_dir`` or ``runs/latest``; checked complete (never a staging folder)."""
    path = Path(run_dir) if run_dir else DEFAULT_RUNS / LATEST
    if not path.exists():
        hint = "run `hybrid fit` first" if run_dir is None else "pass --run-dir with a folder `hybrid fit` wrote"
        raise HybridInputError(f"no run found at {path}; {hint}.")
    if _PRIVATE.match(path.resolve().name):
        raise HybridInputError(f"{path} is a working folder of a fit, not a run; pass --run-dir with a folder "
                               "`hybrid fit` wrote.")
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


def is_panel(manifest: dict[str, Any]) -> bool:
    """Whether a run is a many-series one (``hybrid.panel``: its manifest's ``layout``)."""
    return manifest.get("layout") == PANEL


def check_state_format(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuse a run whose fitted state this version cannot read safely (one of a single series).

    Runs record ``"state_format"`` (:data:`hybrid.state.STATE_FORMAT`);
    older ones stored fitted members and combinations with joblib (pickles,
    which run code when loaded) and are never opened.

    Raises:
        HybridInputError: the format is missing (an older run) or another one.
    """
    found = manifest.get("state_format")
    if found is None:
        raise HybridInputError(f"{run_dir} was written by an older version (pickled state, which is never loaded); "
                               "fit it again.")
    if found != STATE_FORMAT:
        raise HybridInputError(f"{run_dir} has state format {found!r}; this version reads {STATE_FORMAT}: fit it "
                               "again with this version.")


def member_path(run_dir: Path, name: str, horizon: int) -> Path:
    """Where a fitted member lives: ``members/<name>-h<H>`` (``@`` spelt ``_at_``), plus ``.json`` / ``.npz``.

    A member that stores itself (the core) gets the folder ``members/<name>-h<H>/``.
    """
    return run_dir / "members" / f"{name.replace('@', '_at_')}-h{horizon}"


def _state_file(path: Path) -> Path:
    """``members/linear-h24`` -> ``members/linear-h24.json`` (the name may hold dots, so no ``with_suffix``)."""
    return path.with_name(f"{path.name}.json")


def save_member(member: Forecaster | list[Forecaster], path: Path) -> str:
    """Store a fitted member at ``path`` (see :func:`member_path`); returns its kind for the manifest.

    Members with ``stores_itself`` (the core: ``save(dir)`` / ``load(dir)``, JSON + safetensors)
    write their own folder (kind ``"dir"``); every other member is written as
    state (kind ``"state"``, :func:`hybrid.state.save_state`: ``<path>.json``
    and ``<path>.npz``); a list (a member of many series fitted series by series, one fit per series in the
    run's order) as one state file too (kind ``"series"``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(member, list):
        save_state(member, _state_file(path))
        return "series"
    if member.stores_itself:
        path.mkdir()
        member.save(path)
        return "dir"
    save_state(member, _state_file(path))
    return "state"


def load_member(path: Path, kind: str, cls_path: str) -> Forecaster:
    """The member :func:`save_member` stored at ``path``; never unpickles.

    Args:
        path: :func:`member_path` of the member.
        kind: ``"state"`` or ``"dir"``, from the manifest.
        cls_path: ``module.qualname`` of its class, from the manifest (only
            this project's members, subclasses of ``kernel.contract.Member``, are accepted).

    Raises:
        HybridInputError: another kind (``"joblib"``: an older run), a class
            outside the project, or a damaged file.
    """
    module, _, qualname = cls_path.rpartition(".")
    cls = resolve_class(f"{module}:{qualname}", path.parent.parent / MANIFEST, base=Member)
    if kind == "series":
        fits = load_state(_state_file(path))
        if type(fits) is not list or any(type(m) is not cls for m in fits):
            raise HybridInputError(f"{_state_file(path)} does not hold a list of {cls_path}; the run is damaged, fit "
                                   "it again.")
        return fits
    if kind == "state":
        member = load_state(_state_file(path))
        if type(member) is not cls:
            raise HybridInputError(f"{_state_file(path)} holds a {class_path(type(member))}, but the manifest says "
                                   f"{cls_path}; the run is damaged, fit it again.")
        return member
    if kind == "dir" and cls.stores_itself:
        try:
            return cls.load(path)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            if isinstance(exc, HybridInputError):
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise HybridInputError(f"{path} could not be loaded ({type(exc).__name__}: {first}); the run is "
                                   "damaged, fit it again.") from None
    if kind == "joblib":
        raise HybridInputError(f"{path} was written by an older version (pickled state, which is never loaded); "
                               "fit it again.")
    raise HybridInputError(f"{path}: unknown stored kind {kind!r} for {cls_path}; the run is damaged, fit it again.")


def deployment_file(horizon: int) -> str:
    """The combination of one horizon: ``combiner-h<H>.json`` (its arrays: ``combiner-h<H>.npz``)."""
    return f"combiner-h{horizon}.json"


def store_fits(stage: Path, results: dict[int, Any]) -> dict[str, dict[str, str]]:
    """Save every horizon's production members and combination in a run; returns the manifest's
    ``stored_members`` (member -> horizon -> ``kind:module.qualname``).

    ``results``: horizon -> :class:`hybrid.records.HorizonResult`; each member's ``production`` is a fit, or a
    list of fits (one per series) for a member of many series fitted series by series.
    """
    stored: dict[str, dict[str, str]] = {}
    for H, result in results.items():
        for name, fits in result.members.items():
            kind = save_member(fits.production, member_path(stage, name, H))
            cls = type(fits.production[0] if kind == "series" else fits.production)
            stored.setdefault(name, {})[str(H)] = f"{kind}:{cls.__module__}.{cls.__qualname__}"
        save_object(result.deployment, stage / deployment_file(H))
    return stored


def load_fits(run_dir: Path, manifest: dict[str, Any], horizon: int) -> tuple[dict[str, Any], Any]:
    """The members stored for ``horizon`` (name -> fit, or list of per-series fits) and its combination.

    Raises:
        HybridInputError: the combination is missing or needs a member that is not stored (a damaged run).
    """
    members = {}
    for name, by_h in manifest["stored_members"].items():
        if str(horizon) in by_h:
            kind, _, cls_path = by_h[str(horizon)].partition(":")
            members[name] = load_member(member_path(run_dir, name, horizon), kind, cls_path)
    path = run_dir / deployment_file(horizon)
    if not path.is_file():
        raise HybridInputError(f"{path} is missing; the run is damaged, fit it again.")
    deployment = load_object(path)
    missing = [n for n in deployment.members if n not in members]
    if missing:
        raise HybridInputError(f"the run's combination needs members {missing}, which are not stored; fit it again.")
    return members, deployment


def save_object(obj: Any, path: Path) -> None:
    """Store ``obj`` (a fitted combination) as state: ``path`` (``.json``) and its arrays (``.npz``) beside it."""
    save_state(obj, path)


def load_object(path: Path) -> Any:
    """The object :func:`save_object` stored at ``path`` (JSON and plain arrays; never a pickle)."""
    return load_state(path)


def choose_horizon(requested: int | None, fitted: list[int]) -> int:
    """The smallest fitted horizon that covers ``requested``."""
    if requested is None:
        return min(fitted)
    if requested < 1:
        raise HybridInputError(f"--horizon must be a positive integer; got {requested}.")
    covering = [h for h in sorted(fitted) if h >= requested]
    if not covering:
        raise HybridInputError(
            f"horizon {requested} is longer than any fitted horizon ({', '.join(map(str, sorted(fitted)))}); "
            f"fit again with --horizon {requested}."
        )
    return covering[0]
