"""Fitted objects as data: JSON for the structure, one ``.npz`` for the arrays; loading never runs code from a file.

:func:`save_state` writes ``<stem>.json`` (and ``<stem>.npz`` when the object
holds arrays); :func:`load_state` reads them back. The JSON holds one tree:

- ``None``, booleans, integers, strings and finite floats as themselves; lists
  as lists;
- ``{"$float": "nan" | "inf" | "-inf"}``: a non-finite Python float (the JSON
  stays strict);
- ``{"$tuple": [...]}``; ``{"$dict": {...}}`` (string keys);
  ``{"$items": [[key, value], ...]}`` (any other keys: int, float, bool, None, tuple);
- ``{"$array": "a3"}``: an array of the ``.npz`` (never of dtype object); an
  array held twice is stored once and comes back shared;
  ``{"$scalar": "a4"}``: a numpy scalar, kept as a 0-d array (dtype and bits
  exact, inf and nan included);
- ``{"$class": "router.router:Router", "fields": {...}}``: an object of one of
  the project's own classes (``module:qualname``) and its ``__dict__`` (a
  dataclass's fields are in it).

Loading uses ``json.loads`` and ``np.load(allow_pickle=False)`` only. An object
is rebuilt with ``object.__new__(cls)`` and its ``__dict__`` filled: no
``__init__``, ``__setstate__``, ``__reduce__`` or property setter runs, and
the class must be defined (not merely imported) in a module of the project's
packages (:data:`ALLOWED_PACKAGES`); any other class path is refused with a
:class:`~kernel.errors.HybridInputError` that names the file. Objects holding
anything else (an sklearn model, a torch module) must turn it into these
types first; the router's rule tree keeps its split arrays, the Time-LLM core
stores itself (JSON + safetensors, ``TimeLLM.save`` / ``load``).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kernel.errors import HybridInputError

STATE_FORMAT = 1  # the layout of state files; runs record it in the manifest ("state_format")
ALLOWED_PACKAGES = ("kernel", "baselines", "router", "llm_core", "hybrid")  # whose classes a state file may name
_CLASS_PATH = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<qualname>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_TAGS = ("$float", "$tuple", "$dict", "$items", "$array", "$scalar", "$class")


def class_path(cls: type) -> str:
    """``module:qualname`` of a class, as state files name it."""
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_class(path: str, source: str | Path, base: type | None = None) -> type:
    """The project class named ``module:qualname``, or a refusal; the only import a state file can cause.

    Args:
        path: ``module:qualname`` from a state file or a manifest.
        source: the file it came from (named in the error).
        base: when given, the class must be a subclass of it (a stored member: ``kernel.contract.Member``).

    Returns:
        The class, defined in that module of one of :data:`ALLOWED_PACKAGES`.

    Raises:
        HybridInputError: a malformed path, a module outside the project's
            packages, a missing name, a dunder name, or something that is not
            a class defined there (a function, a class imported from elsewhere),
            or not a subclass of ``base``.
    """
    match = _CLASS_PATH.match(path) if isinstance(path, str) else None
    refuse = HybridInputError(
        f"{source} names class {path!r}, which is not one of this project's classes "
        f"({', '.join(ALLOWED_PACKAGES)}); the file is damaged or was not written by `hybrid fit`: fit the run again."
    )
    if match is None:
        raise refuse
    module_name, qualname = match["module"], match["qualname"]
    parts = [*module_name.split("."), *qualname.split(".")]
    if module_name.partition(".")[0] not in ALLOWED_PACKAGES or any(p.startswith("__") for p in parts):
        raise refuse  # no dunder: neither ``hybrid.__main__`` nor ``Cls.__init__.__globals__``
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError:
        raise refuse from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not isinstance(obj, type) or obj.__module__ != module_name or obj.__qualname__ != qualname:
        raise refuse
    if base is not None and not issubclass(obj, base):
        raise HybridInputError(f"{source} names class {path!r}, which is not a {base.__qualname__} of this project; "
                               "the file is damaged or was not written by `hybrid fit`: fit the run again.")
    return obj


# ----------------------------------------------------------------------------- encoding


class _Encoder:
    """One object tree -> (JSON-ready tree, arrays by key)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._seen: dict[int, str] = {}  # id(array) -> key: an array held twice is stored once
        self._open: set[int] = set()  # containers being encoded (a cycle is refused)

    def _store(self, value: np.ndarray) -> str:
        key = self._seen.get(id(value))
        if key is None:
            key = self._seen[id(value)] = f"a{len(self.arrays)}"
            self.arrays[key] = value
        return key

    def encode(self, value: Any, where: str) -> Any:
        """``value`` -> its JSON-ready form; ``where`` names it in errors (``deployment.router.models_['rules']``)."""
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$float": "nan" if math.isnan(value) else
                                                        ("inf" if value > 0 else "-inf")}
        if kind is np.ndarray:
            if value.dtype.hasobject:
                raise TypeError(f"cannot store {where}: an array of dtype {value.dtype} (objects) needs pickle.")
            return {"$array": self._store(value)}
        if isinstance(value, np.generic):
            if value.dtype.hasobject:
                raise TypeError(f"cannot store {where}: a numpy scalar of dtype object.")
            key = f"a{len(self.arrays)}"
            self.arrays[key] = np.asarray(value)
            return {"$scalar": key}
        if kind in (list, tuple, dict) or hasattr(value, "__dict__"):
            if id(value) in self._open:
                raise TypeError(f"cannot store {where}: it contains itself.")
            self._open.add(id(value))
            try:
                return self._container(value, where)
            finally:
                self._open.discard(id(value))
        raise TypeError(f"cannot store {where}: {kind.__module__}.{kind.__qualname__} is not a stored type "
                        "(numbers, strings, lists, tuples, dicts, numpy arrays and this project's objects).")

    def _container(self, value: Any, where: str) -> Any:
        kind = type(value)
        if kind is list:
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if kind is tuple:
            return {"$tuple": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if kind is dict:
            if all(type(k) is str for k in value):
                return {"$dict": {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
            return {"$items": [[self.encode(k, f"{where} key {k!r}"), self.encode(v, f"{where}[{k!r}]")]
                               for k, v in value.items()]}
        path = class_path(kind)
        if kind.__module__.partition(".")[0] not in ALLOWED_PACKAGES:
            raise TypeError(f"cannot store {where}: {kind.__module__}.{kind.__qualname__} is not one of this "
                            f"project's classes ({', '.join(ALLOWED_PACKAGES)}); store its data instead.")
        if resolve_class(path, where) is not kind:
            raise TypeError(f"cannot store {where}: class {path} cannot be found again by its name.")
        return {"$class": path, "fields": {k: self.encode(v, f"{where}.{k}") for k, v in vars(value).items()}}


def encode(obj: Any, where: str = "object") -> tuple[Any, dict[str, np.ndarray]]:
    """Split ``obj`` into a JSON-ready tree and its arrays (see the module docstring).

    Raises:
        TypeError: something in ``obj`` has no safe stored form (named by its place in ``obj``).
    """
    enc = _Encoder()
    return enc.encode(obj, where), enc.arrays


# ----------------------------------------------------------------------------- decoding


class _Decoder:
    """JSON tree + arrays -> objects; anything unexpected raises ValueError / KeyError / TypeError."""

    def __init__(self, arrays: dict[str, np.ndarray], source: Path) -> None:
        self.arrays, self.source = arrays, source

    def decode(self, node: Any) -> Any:
        if node is None or type(node) in (bool, int, float, str):
            return node
        if type(node) is list:
            return [self.decode(v) for v in node]
        if type(node) is not dict or len(node) != (2 if "$class" in node else 1) or next(iter(node)) not in _TAGS:
            raise ValueError(f"unexpected entry {str(node)[:60]}")
        tag, body = next(iter(node.items()))
        if tag == "$float":
            return _NON_FINITE[body]
        if tag == "$tuple":
            return tuple(self.decode(v) for v in body)
        if tag == "$dict":
            return {str(k): self.decode(v) for k, v in body.items()}
        if tag == "$items":
            return {self.decode(k): self.decode(v) for k, v in body}
        if tag == "$array":
            return self.arrays[body]
        if tag == "$scalar":
            return self.arrays[body][()]
        cls = resolve_class(body, self.source)
        obj = object.__new__(cls)
        vars(obj).update({str(k): self.decode(v) for k, v in node["fields"].items()})
        return obj


def decode(tree: Any, arrays: dict[str, np.ndarray], source: Path) -> Any:
    """Rebuild the object of :func:`encode`'s ``tree`` and ``arrays``; ``source`` is named in errors.

    Raises:
        HybridInputError: an unknown class path or a damaged tree.
    """
    try:
        return _Decoder(arrays, source).decode(tree)
    except HybridInputError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise HybridInputError(f"{source} is damaged ({type(exc).__name__}: {exc}); fit the run again.") from None


# ----------------------------------------------------------------------------- files


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, read with ``allow_pickle=False``.

    Raises:
        HybridInputError: a missing file, or one that is not an ``.npz`` of plain arrays (a pickle is refused unread).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise HybridInputError(f"{path} is missing; the run is damaged, fit it again.") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HybridInputError(f"{path} is not an array file this version wrote ({first}); the run is damaged, "
                               "fit it again.") from None


def arrays_file(path: Path) -> Path:
    """The ``.npz`` beside the state file ``path`` (``combiner-h24.json`` -> ``combiner-h24.npz``)."""
    return path.with_suffix(".npz")


def save_state(obj: Any, path: Path) -> None:
    """Write ``obj`` to the state file ``path`` (``.json``) and its arrays beside it (``.npz``), each atomically.

    Raises:
        TypeError: ``obj`` holds something with no safe stored form.
    """
    tree, arrays = encode(obj, type(obj).__name__)
    npz = arrays_file(path)
    if arrays:
        tmp = npz.with_name(f".{npz.name}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)
        os.replace(tmp, npz)
    doc = {"state_format": STATE_FORMAT, "arrays": npz.name if arrays else None, "object": tree}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_state(path: Path) -> Any:
    """The object :func:`save_state` wrote to ``path``; reads JSON and plain arrays only.

    Raises:
        HybridInputError: a missing or damaged file, another state format, or a class outside the project.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HybridInputError(f"{path} is missing; the run is damaged, fit it again.") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise HybridInputError(f"{path} is not a state file (not JSON); the run is damaged or was written by an "
                               "older version: fit it again.") from None
    if not isinstance(doc, dict) or "object" not in doc:
        raise HybridInputError(f"{path} is not a state file (no object); the run is damaged, fit it again.")
    if doc.get("state_format") != STATE_FORMAT:
        raise HybridInputError(f"{path} has state format {doc.get('state_format')!r}; this version reads "
                               f"{STATE_FORMAT}: fit the run again with this version.")
    arrays: dict[str, np.ndarray] = {}
    if doc.get("arrays") is not None:
        if doc["arrays"] != arrays_file(path).name:
            raise HybridInputError(f"{path} points at arrays {doc['arrays']!r}, not {arrays_file(path).name!r}; "
                                   "the run is damaged, fit it again.")
        arrays = load_arrays(arrays_file(path))
    return decode(doc["object"], arrays, path)
