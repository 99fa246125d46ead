"""One contract suite (kernel/contract.py), run on every member the registry can build.

Every classical member, the period experts and the Time-LLM core (with a tiny random BERT backbone
and without a backbone) go through the same checks: shape and dtype, batching, determinism,
``frozen()``, save / load, bad context, predict before fit. The core reads references (fitted
linear and drift members) from ``spec.references`` while fitting and from ``predict(context,
references=...)`` afterwards, as the pipeline hands them over.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
from pathlib import Path

import numpy as np
import pytest

from baselines.linear import RidgeLinear
from baselines.naive import Drift
from hybrid.artifacts import load_member, save_member
from hybrid.config import Config
from hybrid.crossfit import MemberFits
from hybrid.members import REGISTRY, make_member, uses_references
from kernel.contract import Member, Segment, TaskSpec
from kernel.protocol import windows
from kernel.references import PredictedReferences

L, H, C, ROWS = 48, 12, 2, 300
TRAIN_END, VAL_END = 200, 250
REFS = ("linear", "drift")
CLASSICAL = sorted(n for n in REGISTRY if n != "timellm")
# The core: (backbone, config changes). With the reference skip (the default) the head starts at zero and, on
# this easy series, the untrained start (the mix of the references) wins on validation, so the network is never
# run at predict time; without it the trained network forecasts, backbone, prompt and reference tokens included.
CORE = {
    "timellm[tiny-bert]": ("tiny-bert", {"reference_skip": False}),
    "timellm[none]": ("none", {}),
    "timellm@12[none]": ("none", {"reference_skip": False}),
}
NAMES = CLASSICAL + ["seasonal_naive@12", "ets@12", *CORE]
LINEAR_FAMILY = {"linear", "nlinear", "dlinear"}


def _series() -> np.ndarray:
    """[ROWS, C]: a 12-step season, a slow trend and noise, scaled-looking."""
    rng = np.random.default_rng(0)
    t = np.arange(ROWS)[:, None]
    x = np.sin(2 * np.pi * t / 12 + np.arange(C)) + 0.002 * t + 0.2 * rng.standard_normal((ROWS, C))
    return x.astype(np.float32)


X = _series()
TRAIN = [Segment(X[:TRAIN_END], 0)]
VAL = Segment(X[TRAIN_END - L : VAL_END], TRAIN_END - L)
CONTEXT = np.ascontiguousarray(windows(X[VAL_END - L :], L, H)[0][::4])  # [10, C, L], never trained on
SPEC = TaskSpec(context_length=L, horizon=H, freq="h", periods=(12,), seed=0, n_jobs=1,
                channel_names=("a", "b"), description="hourly test load")  # fmt: skip


@functools.cache
def _reference_members() -> dict[str, object]:
    return {"linear": RidgeLinear().fit(TRAIN, VAL, SPEC), "drift": Drift().fit(TRAIN, VAL, SPEC)}


def _build(case: str, bert: Path | None = None):  # noqa: ANN202
    """A fresh, unfitted member for a test case (``timellm[...]`` names the core's backbone; ``bert``: its folder)."""
    if case not in CORE:
        return make_member(case, Config())
    pytest.importorskip("torch")
    from test_core import _cfg, save_tiny_bert

    backbone, changes = CORE[case]
    if backbone == "tiny-bert":
        assert bert is not None
        backbone = str(bert) if (bert / "config.json").is_file() else save_tiny_bert(bert, max_positions=256)
    core = _cfg(backbone, epochs=1, max_train_windows=32, max_val_windows=16, reference_members=REFS,
                references=True, classical_text=True, max_prompt_tokens=96, **changes)  # fmt: skip
    return make_member(case.partition("[")[0], dataclasses.replace(Config(), core=core))


def _spec(member: object) -> TaskSpec:
    if not uses_references(member):
        return SPEC
    return dataclasses.replace(SPEC, references=PredictedReferences(REFS, X, L, [_reference_members()]))


def _fit(case: str, bert: Path, seed: int = 0):  # noqa: ANN202
    member = _build(case, bert)
    assert member.fit(TRAIN, VAL, dataclasses.replace(_spec(member), seed=seed)) is member
    return member


def _predict(member: object, context: np.ndarray) -> np.ndarray:
    """The member's forecast of ``context``; a member that reads references gets them, as from the pipeline."""
    if not uses_references(member):
        return member.predict(context)
    refs = np.stack([_reference_members()[n].predict(context) for n in REFS], axis=2)  # [N, C, R, H]
    return member.predict(context, references=refs)


class Fits:
    """One fit per case, shared by the checks that do not refit; the tiny backbone's folder."""

    def __init__(self, bert: Path) -> None:
        self.bert, self.done = bert, {}

    def __call__(self, case: str):  # noqa: ANN204
        if case not in self.done:
            self.done[case] = _fit(case, self.bert)
        return self.done[case]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Fits:
    return Fits(tmp_path_factory.mktemp("contract_bert"))


@pytest.mark.parametrize("case", NAMES)
def test_shape_dtype_and_finite(case: str, fitted: Fits) -> None:
    member = fitted(case)
    out = _predict(member, CONTEXT)
    if case in CORE:
        assert member.reference_names_ == REFS
        assert member.net_.head_is_zero() == (CORE[case][1].get("reference_skip", True))  # see CORE
    assert out.shape == (len(CONTEXT), C, H)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    wide = _predict(member, CONTEXT.astype(np.float64))  # float64 in, float32 out, same numbers
    assert wide.dtype == np.float32 and np.array_equal(wide, out)
    none = _predict(member, CONTEXT[:0])  # N = 0 windows is a batch too
    assert none.shape == (0, C, H) and none.dtype == np.float32


@pytest.mark.parametrize("case", NAMES)
def test_batching_changes_nothing(case: str, fitted: Fits) -> None:
    member = fitted(case)
    together = _predict(member, CONTEXT)
    alone = np.concatenate([_predict(member, CONTEXT[i : i + 1]) for i in range(len(CONTEXT))])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", NAMES)
def test_same_seed_same_forecasts(case: str, fitted: Fits) -> None:
    again = _fit(case, fitted.bert, seed=0)
    assert np.array_equal(_predict(again, CONTEXT), _predict(fitted(case), CONTEXT))


@pytest.mark.parametrize("case", NAMES)
def test_frozen_is_an_unfitted_copy_that_refits(case: str, fitted: Fits) -> None:
    member = fitted(case)
    twin = member.frozen()
    assert type(twin) is type(member) and twin is not member and twin.name == member.name
    assert not [a for a in vars(twin) if a.endswith("_") and not a.startswith("_")], "fitted state in the copy"
    with pytest.raises(RuntimeError, match="fit"):
        _predict(twin, CONTEXT)
    assert twin.fit(TRAIN, VAL, _spec(twin)) is twin
    assert np.isfinite(_predict(twin, CONTEXT)).all()
    if case in LINEAR_FAMILY:
        assert twin.alphas == (member.alpha_,) and twin.alpha_ == member.alpha_
    if "timellm" in case:
        assert twin.fixed_epochs == member.best_epoch_ and len(twin.history_) == member.best_epoch_


@pytest.mark.parametrize("case", NAMES)
def test_save_load_round_trip(case: str, fitted: Fits, tmp_path: Path) -> None:
    member = fitted(case)
    path = tmp_path / "members" / f"{case.replace('@', '_at_')}-h{H}"
    kind = save_member(member, path)
    assert kind == ("dir" if "timellm" in case else "state")
    cls = type(member)
    again = load_member(path, kind, f"{cls.__module__}.{cls.__qualname__}")
    assert type(again) is cls and again.name == member.name
    assert np.array_equal(_predict(again, CONTEXT), _predict(member, CONTEXT))


@pytest.mark.parametrize("case", NAMES)
def test_bad_context_is_refused_with_the_problem_named(case: str, fitted: Fits) -> None:
    member = fitted(case)
    holed = CONTEXT.copy()
    holed[2, 1, 7] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _predict(member, holed)
    with pytest.raises(ValueError, match=f"must hold {L} steps per window"):
        member.predict(CONTEXT[:, :, 1:])
    with pytest.raises(ValueError, match=r"shape \[N, C, L\]"):
        member.predict(CONTEXT[0])


@pytest.mark.parametrize("case", NAMES)
def test_predict_before_fit_asks_for_fit(case: str, fitted: Fits) -> None:
    member = _build(case, fitted.bert)
    with pytest.raises(RuntimeError, match="call fit"):
        member.predict(CONTEXT)
    with pytest.raises(RuntimeError, match="call fit"):
        member.frozen()


# ----------------------------------------------------------------------------- what the application relies on

FLAGS = ("horizon_agnostic", "uses_references", "per_series", "supports_fit_many", "stores_itself")
# Every registered member's capabilities, written out: a flag that moves (or a member that loses its base class
# and with it a default) changes what the pipeline does with the member, so it must change here on purpose.
EXPECTED_FLAGS = {
    "seasonal_naive": (True, False, False, False, False),
    "linear": (False, False, False, True, False),
    "timellm": (False, True, False, False, True),
    "nlinear": (False, False, False, True, False),
    "dlinear": (False, False, False, True, False),
    "drift": (True, False, False, False, False),
    "mean": (True, False, False, False, False),
    "arima": (True, False, True, False, False),
    "ets": (True, False, True, False, False),
}
# What describe() holds after a fit (the manifest's per-stage fit details), per case.
DESCRIBED = {"linear": ["alpha"], "nlinear": ["alpha"], "dlinear": ["alpha"], "seasonal_naive": ["period"],
             "seasonal_naive@12": ["period"], "drift": [], "mean": [], "arima": ["channel_status"],
             "ets": ["channel_status"], "ets@12": ["channel_status"]}
CORE_DESCRIBED = {"best_epoch", "start_mix", "n_trainable", "n_frozen", "steps"}
# The fitted attributes the manifest recorded before the contract had describe() (crossfit read them by name):
# describe() must give the same keys, in the same order, with the same values.
MANIFEST_ATTRS = ("alpha_", "period_", "channel_status_", "best_epoch_", "start_mix_", "n_trainable_", "n_frozen_",
                  "ladder_", "ladder_winner_", "steps_")


def test_every_registered_member_is_a_member_with_its_flags() -> None:
    assert sorted(EXPECTED_FLAGS) == sorted(REGISTRY), "a member was added or removed: write its flags down here"
    for name, want in EXPECTED_FLAGS.items():
        if name == "timellm":
            pytest.importorskip("torch")
        member = make_member(name, Config())
        assert isinstance(member, Member), f"{name} does not subclass kernel.contract.Member"
        cls = type(member)
        got = tuple(getattr(cls, flag) for flag in FLAGS)  # class constants, not per-instance state
        assert got == want, f"{name}: flags {dict(zip(FLAGS, got, strict=True))}"
        assert all(type(v) is bool for v in got), f"{name}: flags must be booleans"
        assert uses_references(member) is want[1] and make_member(name, Config()).per_series is want[2]
        params = inspect.signature(cls.predict).parameters
        assert "references" in params and params["references"].default is None, f"{name}.predict(context, references=None)"


@pytest.mark.parametrize("case", NAMES)
def test_describe_is_a_dict_of_the_fits_choices(case: str, fitted: Fits) -> None:
    assert _build(case, fitted.bert).describe() == {}, "an unfitted member has nothing to describe"
    member = fitted(case)
    described = member.describe()
    assert type(described) is dict
    if case in CORE:
        assert CORE_DESCRIBED <= set(described) and described["best_epoch"] == member.best_epoch_
    else:
        assert list(described) == DESCRIBED[case]
    old = {a.rstrip("_"): getattr(member, a) for a in MANIFEST_ATTRS if hasattr(member, a)}
    assert list(described.items()) == list(old.items()), "describe() must record what the manifest recorded"


@pytest.mark.parametrize("case", NAMES)
def test_predict_takes_references_and_only_the_core_reads_them(case: str, fitted: Fits) -> None:
    member = fitted(case)
    if case in CORE:
        assert member.reference_names() == REFS
        with pytest.raises(ValueError, match="pass `references`"):
            member.predict(CONTEXT, references=None)
        assert member.prompt_text(CONTEXT[:1], _stacked_references(CONTEXT[:1])) is not None
        return
    plain = member.predict(CONTEXT)
    assert np.array_equal(member.predict(CONTEXT, references=None), plain)
    noise = np.random.default_rng(1).standard_normal((len(CONTEXT), C, 2, H)).astype(np.float32)
    assert np.array_equal(member.predict(CONTEXT, noise), plain), "a member without references ignores them"
    assert member.reference_names() == ()
    assert member.prompt_text(CONTEXT[:1]) is None and member.explain(CONTEXT[:1]) is None


def _stacked_references(context: np.ndarray) -> np.ndarray:
    return np.stack([_reference_members()[n].predict(context) for n in REFS], axis=2)


def _untimed(described: dict) -> dict:
    """``describe()`` without the per-channel fit times (they differ between two equal fits)."""
    status = [{k: v for k, v in ch.items() if k != "fit_seconds"} for ch in described.get("channel_status", [])]
    return {**described, "channel_status": status} if status else described


@pytest.mark.parametrize("case", [n for n in NAMES if n not in CORE])
def test_fit_many_equals_a_fit_and_frozen_refits(case: str, fitted: Fits) -> None:
    """The one-pass ``fit_many`` (the linear family) and the default loop give what the stage-by-stage fits give."""
    spec = _spec(_build(case))
    trains = [TRAIN, [Segment(X[:120], 0), Segment(X[170:VAL_END], 170)], [Segment(X[:VAL_END], 0)]]
    many = _build(case).fit_many(trains, VAL, spec)
    first = _build(case).fit(trains[0], VAL, spec)
    loop = [first, *(first.frozen().fit(t, None, spec) for t in trains[1:])]
    assert len(many) == len(trains) and _untimed(many[0].describe()) == _untimed(first.describe())
    for a, b in zip(many, loop, strict=True):
        np.testing.assert_allclose(a.predict(CONTEXT), b.predict(CONTEXT), rtol=1e-5, atol=1e-5)
    assert not np.allclose(many[0].predict(CONTEXT), many[2].predict(CONTEXT)) or case in ("drift", "mean") \
        or case.startswith("seasonal_naive"), "the sets differ: so must fits that learn from them"


def test_the_manifest_reads_every_stage_through_describe(fitted: Fits) -> None:
    """MemberFits.describe: the stages' describe(), and nothing for a stage with nothing to say."""
    linear, drift = fitted("linear"), fitted("drift")
    fits = MemberFits("linear", None, linear, [linear], linear.frozen().fit(TRAIN, None, SPEC), drift,
                      {"selection": 0.5})  # fmt: skip
    out = fits.describe()
    assert out == {"seconds": {"selection": 0.5}, "folds": 1, "selection": {"alpha": linear.alpha_},
                   "refit": {"alpha": linear.alpha_}}
    assert fits.stage("production") is drift and fits.stage("selection") is linear


def test_the_application_asks_members_nothing_outside_the_contract() -> None:
    """The modules that handle members call no hasattr / getattr / isinstance at all."""
    root = Path(__file__).resolve().parents[1] / "hybrid"
    for module in ("crossfit.py", "members.py", "deployment.py"):
        tree = ast.parse((root / module).read_text(encoding="utf-8"))
        calls = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr", "isinstance")]
        assert not calls, f"hybrid/{module} lines {calls}"
