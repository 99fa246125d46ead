"""Runs that load no code (issue 33): fitted state is JSON + .npz (+ safetensors), never a pickle.

Every member kind and the combination round-trip exactly; a whole run holds no pickle; a pickle planted in a
run is never executed; a class path outside the project is refused; an older (pickled) run is refused with the
advice to fit it again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.tree import DecisionTreeRegressor

from baselines.arima import ArimaChannel
from baselines.linear import RidgeLinear
from baselines.naive import Drift
from hybrid import artifacts
from hybrid.api import HybridForecaster
from hybrid.cli import main
from hybrid.config import Config
from hybrid.intervals import Bands
from hybrid.members import make_member, uses_references
from hybrid.state import STATE_FORMAT, load_state, resolve_class, save_state
from kernel.contract import Member, Segment, TaskSpec
from kernel.errors import HybridInputError
from kernel.protocol import windows
from kernel.references import PredictedReferences
from router.models import RuleTree, SoftmaxLinear
from router.router import Router
from tests.conftest import make_frame

L, H, C, ROWS = 48, 12, 2, 300
TRAIN_END, VAL_END = 200, 250
CLASSICAL = ["seasonal_naive", "drift", "mean", "linear", "nlinear", "dlinear", "arima", "ets"]
REFS = ("linear", "drift")
PICKLE_MAGIC = b"\x80"  # the first byte of every pickle of protocol 2 or later (joblib's included)


def _series() -> np.ndarray:
    """[ROWS, C]: a 12-step season, a slow trend and noise, scaled-looking."""
    rng = np.random.default_rng(0)
    t = np.arange(ROWS)[:, None]
    return (np.sin(2 * np.pi * t / 12 + np.arange(C)) + 0.002 * t + 0.2 * rng.standard_normal((ROWS, C))
            ).astype(np.float32)


X = _series()
TRAIN = [Segment(X[:TRAIN_END], 0)]
VAL = Segment(X[TRAIN_END - L : VAL_END], TRAIN_END - L)
CONTEXT = np.ascontiguousarray(windows(X[VAL_END - L :], L, H)[0][::4])  # [N, C, L], never trained on
SPEC = TaskSpec(context_length=L, horizon=H, freq="h", periods=(12,), seed=0, n_jobs=1)


def assert_same(a: Any, b: Any, where: str = "object") -> None:
    """``a`` and ``b`` are equal in type and value all the way down (arrays bit for bit, NaN equal to NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, np.generic):
        assert a.tobytes() == b.tobytes(), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, float):
        assert repr(a) == repr(b), f"{where}: {a!r} != {b!r}"  # nan, inf and -0.0 included
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        assert [type(k) for k in a] == [type(k) for k in b], f"{where}: the keys changed type"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif hasattr(a, "__dict__"):
        assert_same(vars(a), vars(b), where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ----------------------------------------------------------------------------- the encoder itself


def test_values_round_trip_with_types_inf_nan_and_shared_arrays(tmp_path: Path) -> None:
    shared = np.arange(6, dtype=np.int32).reshape(2, 3)
    value = {
        "floats": [1.5, math.inf, -math.inf, math.nan, -0.0],
        "numpy scalars": (np.float32(0.1), np.float64(np.nan), np.float64(-np.inf), np.int64(-7), np.bool_(True),
                          np.uint8(255), np.str_("x")),
        "arrays": [shared, shared, np.array(3.5), np.empty((0, 4)), np.array(["a", "bc"]), np.array([np.nan, np.inf])],
        "keys": {1: "int", 2.5: "float", None: "none", (1, "a"): "tuple", False: "bool", "s": "str"},
        "nested": {"t": (1, (2, [3, {"deep": None}])), "s": "text", "b": False},
        "objects": [SoftmaxLinear(l2=0.5, W_=np.ones((3, 2)), bias_=np.zeros(2)),
                    ArimaChannel(d=1, seasonal_diff=0, period=0, mu=0.0, has_mean=False, ar=np.array([0.5]),
                                 ma=np.array([]), sigma2=1.0),
                    Bands(levels=(80.0, 95.0), normaliser="none", quantiles={80.0: np.ones(3), 95.0: np.full(3, 2.0)})],
    }
    save_state(value, tmp_path / "v.json")
    again = load_state(tmp_path / "v.json")
    assert_same(again, value)
    assert again["arrays"][0] is again["arrays"][1], "an array held twice is stored once and comes back shared"
    doc = json.loads((tmp_path / "v.json").read_text(encoding="utf-8"))
    assert doc["state_format"] == STATE_FORMAT and doc["arrays"] == "v.npz"
    assert "NaN" not in (tmp_path / "v.json").read_text(encoding="utf-8"), "the JSON is strict (no NaN literal)"


@pytest.mark.parametrize("bad, what", [
    ({1, 2}, "builtins.set"),
    (Path("x"), "PosixPath"),
    (np.array([object()], dtype=object), "dtype object"),
    (DecisionTreeRegressor(), "DecisionTreeRegressor"),
    (print, "builtin_function_or_method"),
])
def test_what_has_no_safe_form_is_refused_when_saving(bad: object, what: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=what) as info:
        save_state({"inner": [bad]}, tmp_path / "v.json")
    assert "dict['inner'][0]" in str(info.value), "the error names where in the object the value sits"
    assert not (tmp_path / "v.json").exists()


@pytest.mark.parametrize("path", [
    "os:system", "subprocess:Popen", "builtins:object", "hybrid.artifacts:Path", "hybrid.artifacts:write_json",
    "baselines.linear:RidgeLinear.__init__", "hybrid.__main__:X", "baselines.linear.RidgeLinear",
    "sklearn.tree:DecisionTreeRegressor",
])
def test_class_paths_outside_the_project_are_refused(path: str) -> None:
    assert resolve_class("baselines.linear:RidgeLinear", "f.json") is RidgeLinear
    with pytest.raises(HybridInputError, match=r"^f\.json names class .* fit the run again\.$"):
        resolve_class(path, "f.json")


def test_a_stored_member_must_be_a_member() -> None:
    """A manifest that names a project class which is not a member (the router) is refused before anything loads."""
    assert resolve_class("baselines.linear:RidgeLinear", "manifest.json", base=Member) is RidgeLinear
    assert resolve_class("router.router:Router", "manifest.json") is Router
    with pytest.raises(HybridInputError, match=r"^manifest\.json names class 'router\.router:Router', which is not a "
                                               r"Member of this project; .* fit the run again\.$"):
        resolve_class("router.router:Router", "manifest.json", base=Member)


# ----------------------------------------------------------------------------- members and the rule tree


@pytest.mark.parametrize("name", CLASSICAL)
def test_classical_member_round_trip_is_exact(name: str, tmp_path: Path) -> None:
    member = make_member(name, Config()).fit(TRAIN, VAL, SPEC)
    path = artifacts.member_path(tmp_path, name, H)
    assert artifacts.save_member(member, path) == "state"
    cls = type(member)
    again = artifacts.load_member(path, "state", f"{cls.__module__}.{cls.__qualname__}")
    assert type(again) is cls and again is not member
    assert_same(again, member, name)
    np.testing.assert_array_equal(again.predict(CONTEXT), member.predict(CONTEXT))


def test_core_round_trip_gives_the_same_forecast(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    core = dataclasses.replace(Config().core, backbone="none", epochs=1, max_train_windows=32, max_val_windows=16,
                               d_model=8, n_heads=2, d_keys=4, d_ff=16, batch_size=16, reference_members=REFS,
                               reference_skip=False, progress=False, device="cpu")  # fmt: skip
    member = make_member("timellm", dataclasses.replace(Config(), core=core))
    assert uses_references(member)
    refs = {"linear": RidgeLinear().fit(TRAIN, VAL, SPEC), "drift": Drift().fit(TRAIN, VAL, SPEC)}
    member.fit(TRAIN, VAL, dataclasses.replace(SPEC, references=PredictedReferences(REFS, X, L, [refs])))
    path = artifacts.member_path(tmp_path, "timellm", H)
    assert artifacts.save_member(member, path) == "dir"
    assert sorted(p.name for p in path.iterdir()) == ["timellm.json", "timellm.safetensors"]
    again = artifacts.load_member(path, "dir", "llm_core.member.TimeLLM")
    given = np.stack([refs[n].predict(CONTEXT) for n in REFS], axis=2)  # [N, C, R, H]
    np.testing.assert_allclose(again.predict(CONTEXT, given), member.predict(CONTEXT, given), rtol=0, atol=1e-6)
    assert again.reference_names_ == REFS and again.best_epoch_ == member.best_epoch_


def _tree_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    Xf = rng.normal(size=(400, 5))
    err = np.stack([(Xf[:, 0] > 0.3) * 2.0 + rng.random(400), 1.0 + Xf[:, 1] + rng.random(400),
                    np.full(400, 1.2)], axis=1)
    return Xf, err


def test_rule_tree_walks_like_sklearn_and_keeps_no_sklearn_object(tmp_path: Path) -> None:
    Xf, err = _tree_data()
    tree = RuleTree(max_depth=3, min_leaf=0.05, seed=0).fit(Xf, err)
    reference = DecisionTreeRegressor(max_depth=3, random_state=0, min_samples_leaf=20)
    reference.fit(Xf, err - err.mean(-1, keepdims=True))
    np.testing.assert_array_equal(tree.threshold_, reference.tree_.threshold)
    inner = np.flatnonzero(tree.children_left_ != -1)
    probe = np.random.default_rng(1).normal(size=(300, 5))
    for k, node in enumerate(inner):  # values exactly on a threshold and one float32 step to either side
        thr = tree.threshold_[node]
        probe[3 * k : 3 * k + 3, tree.feature_[node]] = [thr, np.nextafter(np.float32(thr), np.inf),
                                                           np.nextafter(np.float32(thr), -np.inf)]
    probe[-5:, 0] = np.nan
    np.testing.assert_array_equal(tree.apply(probe), reference.apply(probe))
    names = [f"f{j}" for j in range(5)]
    assert [tree.path(x, names)[1] for x in probe] == tree.apply(probe).tolist()
    assert not any(isinstance(v, DecisionTreeRegressor) for v in vars(tree).values())
    save_state(tree, tmp_path / "tree.json")
    again = load_state(tmp_path / "tree.json")
    np.testing.assert_array_equal(again.choice(probe), tree.choice(probe))
    mask = np.ones((300, 3), bool)
    mask[:, 1] = False
    np.testing.assert_array_equal(again.choice(probe, mask), tree.choice(probe, mask))
    assert again.rules(names, ["a", "b", "c"]) == tree.rules(names, ["a", "b", "c"])


# ----------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One run (seasonal naive, linear, drift; the rules router) and the Deployment it stored, as fitted."""
    base = tmp_path_factory.mktemp("state_run")
    make_frame().to_csv(base / "series.csv", index=False)
    stored: list[Any] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        save = artifacts.save_object
        mp.setattr(artifacts, "save_object", lambda obj, path: (stored.append(obj), save(obj, path)))
        code = main(["fit", "--data", str(base / "series.csv"), "--context-length", "96", "--horizon", "24",
                     "--members", "seasonal_naive,linear,drift", "--set", "runtime.progress=false",
                     "--set", "router.mode=rules", "--run-dir", str(base / "run")])
    assert code == 0 and len(stored) == 1
    return base / "run", stored[0]


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run, out)
    return out


def test_a_run_holds_no_pickle_and_forecasts(fitted_run: tuple[Path, Any], tmp_path: Path, capsys) -> None:
    run, deployment = _copy(fitted_run[0], tmp_path), fitted_run[1]
    assert main(["forecast", "--run-dir", str(run)]) == 0
    files = sorted(p for p in run.rglob("*") if p.is_file())
    assert not [p for p in files if p.suffix in (".joblib", ".pkl", ".pickle")]
    assert not [p for p in files if p.read_bytes()[:1] == PICKLE_MAGIC], "no file is a pickle, whatever its name"
    assert {p.relative_to(run).as_posix() for p in files} >= {
        "manifest.json", "tail.npz", "combiner-h24.json", "combiner-h24.npz", "members/linear-h24.json",
        "members/linear-h24.npz", "members/seasonal_naive-h24.json", "members/drift-h24.json", "forecast.csv"}
    manifest = artifacts.read_manifest(run)
    assert manifest["state_format"] == STATE_FORMAT
    assert manifest["stored_members"]["linear"] == {"24": "state:baselines.linear.RidgeLinear"}
    loaded = artifacts.load_object(run / "combiner-h24.json")
    assert_same(loaded, deployment, "deployment")
    assert isinstance(loaded.router.models_["rules"], RuleTree)


class _Trap:
    """Unpickling it creates the folder ``marker`` (what a hostile run file could do instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def _trap(marker: Path) -> bytes:
    """A pickle that creates ``marker`` when loaded; proven live here, so a test that finds no marker means it."""
    payload = pickle.dumps(_Trap(marker))
    pickle.loads(payload)
    assert marker.is_dir(), "the planted pickle must really run when unpickled"
    marker.rmdir()
    return payload


def _forecast_refused(run: Path, capsys) -> str:
    """``hybrid forecast --run-dir run`` exits 2 with one line on stderr; returns it."""
    capsys.readouterr()
    assert main(["forecast", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _joblib_member(run: Path, payload: bytes) -> str:
    """An older run's entry: the manifest says linear is a joblib file, and it is there."""
    (run / "members" / "linear-h24.joblib").write_bytes(payload)
    manifest = artifacts.read_manifest(run)
    manifest["stored_members"]["linear"]["24"] = "joblib:baselines.linear.RidgeLinear"
    artifacts.write_json(run / artifacts.MANIFEST, manifest)
    return "linear-h24"


PLANTS = {  # where the pickle goes -> the file it replaces (None: an older run's joblib member)
    "member state": "members/linear-h24.json",
    "member arrays": "members/linear-h24.npz",
    "combination state": "combiner-h24.json",
    "combination arrays": "combiner-h24.npz",
    "tail": "tail.npz",
    "joblib member in the manifest": None,
}


@pytest.mark.parametrize("where", list(PLANTS))
def test_a_planted_pickle_is_never_run(where: str, fitted_run: tuple[Path, Any], tmp_path: Path, capsys) -> None:
    run = _copy(fitted_run[0], tmp_path)
    marker = tmp_path / "pwned"
    payload, file = _trap(marker), PLANTS[where]
    if file is None:
        named = _joblib_member(run, payload)
    else:
        (run / file).write_bytes(payload)
        named = Path(file).name
    err = _forecast_refused(run, capsys)
    assert not marker.exists(), f"the pickle planted as {where} was executed"
    assert named in err and "fit" in err, err


@pytest.mark.parametrize("file, old, new", [
    ("members/linear-h24.json", "baselines.linear:RidgeLinear", "subprocess:Popen"),
    ("members/linear-h24.json", "baselines.linear:RidgeLinear", "hybrid.artifacts:Path"),
    ("combiner-h24.json", "router.models:RuleTree", "os:system"),
    ("combiner-h24.json", "hybrid.deployment:Deployment", "hybrid.deployment:Deployment.__init__"),
    ("manifest.json", "state:baselines.linear.RidgeLinear", "state:subprocess.Popen"),
])
def test_an_unknown_class_path_is_refused(file: str, old: str, new: str, fitted_run: tuple[Path, Any],
                                          tmp_path: Path, capsys) -> None:
    run = _copy(fitted_run[0], tmp_path)
    text = (run / file).read_text(encoding="utf-8")
    assert old in text
    (run / file).write_text(text.replace(old, new), encoding="utf-8")
    err = _forecast_refused(run, capsys)
    assert Path(file).name in err and "not one of this project's classes" in err, err


def test_an_older_run_is_refused_with_the_advice_to_fit_again(fitted_run: tuple[Path, Any], tmp_path: Path,
                                                              capsys) -> None:
    run = _copy(fitted_run[0], tmp_path)
    marker = tmp_path / "pwned"
    (run / "combiner-h24.joblib").write_bytes(_trap(marker))  # what an older run held
    manifest = artifacts.read_manifest(run)
    del manifest["state_format"]
    artifacts.write_json(run / artifacts.MANIFEST, manifest)
    err = _forecast_refused(run, capsys)
    assert err == f"error: {run.resolve()} was written by an older version (pickled state, which is never loaded); " \
                  "fit it again."
    assert not marker.exists()
    with pytest.raises(HybridInputError, match=r"older version \(pickled state.*fit it again"):
        HybridForecaster.load(run)
