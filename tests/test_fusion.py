"""Fusion of the classical members with the Time-LLM core: prompt text and reference tokens.

Tiny random backbones, fast classical members (linear, drift); no network.
The core reads its references from ``spec.references`` (by window start)
while fitting and from ``predict(context, references)`` afterwards.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_core import SPEC, C, H, L, _cfg, _series, save_tiny_bert  # noqa: E402

from baselines.linear import RidgeLinear  # noqa: E402
from baselines.naive import Drift  # noqa: E402
from kernel.contract import Segment  # noqa: E402
from kernel.protocol import windows  # noqa: E402
from kernel.references import PredictedReferences  # noqa: E402
from llm_core.member import LEAST_SQUARES, TimeLLM  # noqa: E402
from llm_core.prompt import PromptCache, SampleCache, classical_texts, prompt_texts  # noqa: E402

REFS = ("linear", "drift")
TRAIN_END = 250


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """test_core's tiny random BERT, with room for the longer fused sequence (prompt, patches, references)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert_fusion"), max_positions=256)


def _fused(backbone: str, **kw: object):  # noqa: ANN202
    base = dict(reference_members=REFS, references=True, classical_text=True, max_prompt_tokens=96)
    base.update(kw)
    return _cfg(backbone, **base)


def _members() -> dict[str, object]:
    x = _series()
    return {"linear": RidgeLinear().fit(x[:TRAIN_END], x[TRAIN_END - L :], SPEC),
            "drift": Drift().fit(None, None, SPEC)}


def _source(members: dict[str, object] | None = None) -> PredictedReferences:
    """References of any window of the test series by its start (one fitted set for every window)."""
    return PredictedReferences(REFS, _series(), L, [members or _members()])


def _refs(members: dict[str, object], ctx: np.ndarray) -> np.ndarray:
    """[N, C, R, H] forecasts of the references."""
    return np.stack([members[n].predict(ctx)[..., :H] for n in REFS], axis=2)


def _fit(cfg, spec=SPEC) -> tuple[TimeLLM, np.ndarray, np.ndarray]:  # noqa: ANN001
    x = _series()
    spec = dataclasses.replace(spec, references=_source())
    member = TimeLLM(cfg).fit([Segment(x[:TRAIN_END], 0)], Segment(x[TRAIN_END - L :], TRAIN_END - L), spec)
    ctx, _ = windows(x[TRAIN_END - L :], L, H)
    return member, ctx[:10], _refs(_members(), ctx[:10])


def _inputs(member: TimeLLM, ctx: np.ndarray, refs: np.ndarray) -> tuple[torch.Tensor, ...]:
    """x [M, L], prompt ids and mask, references [M, R, H] of the windows ctx [N, C, L]."""
    r = refs.reshape(-1, *refs.shape[2:])
    x = ctx.reshape(-1, L)
    ids, mask = member.encoder_.encode(x, r if member.use_classical_text_ else None)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (x, ids, mask, r))


def test_reference_tokens_change_output_and_head_reads_them(tiny_bert: str) -> None:
    member, ctx, r = _fit(_fused(tiny_bert, classical_text=False, reference_skip=False))
    net = member.net_
    x, ids, mask, refs = _inputs(member, ctx, r)
    assert refs.shape == (10 * C, len(REFS), H)
    tokens = net.references.n_tokens
    assert net.n_positions == net.n_patches + len(REFS) * tokens
    assert net.head[1].in_features == net.d_ff * net.n_positions  # the head reads patch and reference positions
    with torch.no_grad():
        base = net(x, ids, mask, refs=refs)
        moved = refs.clone()
        moved[:, 0] += 1.0
        assert not torch.allclose(base, net(x, ids, mask, refs=moved))
    net.train()
    net.zero_grad()
    net(x, ids, mask, refs=refs).pow(2).sum().backward()
    grad = net.head[1].weight.grad.view(H, net.d_ff, net.n_positions)
    assert grad[:, :, net.n_patches :].abs().sum() > 0  # gradient reaches the reference positions
    assert net.references.proj.weight.grad.abs().sum() > 0 and net.references.identity.grad.abs().sum() > 0
    net.eval()
    assert np.allclose(member.predict(ctx, r).reshape(-1, H), base.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="pass `references`"):
        member.predict(ctx)
    with pytest.raises(ValueError, match="must have shape"):
        member.predict(ctx, r[:, :, :1])


def test_classical_text_changes_prompt_and_cache_matches_fresh_tokenisation(tiny_bert: str) -> None:
    from transformers import AutoTokenizer

    member, ctx, r = _fit(_fused(tiny_bert, references=False))
    plain, _, _ = _fit(_fused(tiny_bert, references=False, classical_text=False))
    text = member.prompt_text(ctx[:1], r[:1])
    assert len(text) == C and "Classical forecasts: linear ends" in text[0] and "drift ends" in text[0]
    # the first window: linear rises, drift falls, so they disagree; two identical forecasts agree
    assert text[0].endswith("Classical forecasts: linear ends above, rising; drift ends far below, falling; they disagree.")
    same = classical_texts(ctx[0, :1], np.repeat(r[0, :1, :1], 2, axis=1), REFS)[0]
    assert same.endswith("they agree.")
    assert all("Classical" not in t for t in plain.prompt_text(ctx[:1]))
    assert member.prompt_len_ > plain.prompt_len_

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    enc, members = member.encoder_, _members()
    x = _series(200)
    wins, _ = windows(x, L, H)
    ref_cache = SampleCache(lambda w: _refs(members, wins[w]), len(wins), C, (len(REFS), H))
    cache = PromptCache(enc, lambda i: wins[i // C, i % C], len(wins) * C, ref_cache)
    idx = np.array([7, 0, 31, 7, 100])
    cache.fill(idx[:2])
    ids, mask = cache.get(idx)
    for row, s in enumerate(idx):
        w, c = s // C, s % C
        refs = np.stack([members[n].predict(wins[w : w + 1])[0, c] for n in REFS])[None]  # [1, R, H]
        fresh_text = prompt_texts(wins[w, c][None], L, H, 5)[0] + classical_texts(wins[w, c][None], refs, REFS)[0]
        fresh = enc.description_ids + tok(fresh_text, add_special_tokens=False)["input_ids"]
        n = int(mask[row].sum())
        assert ids[row, :n].tolist() == fresh[: enc.prompt_len]
    assert cache.done.sum() == 4


def test_switches_are_independent(tiny_bert: str) -> None:
    for refs_on in (False, True):
        for text_on in (False, True):
            member, ctx, r = _fit(_fused(tiny_bert, references=refs_on, classical_text=text_on, epochs=1,
                                         max_train_windows=16))  # fmt: skip
            assert (member.net_.references is not None) == refs_on
            assert (member.encoder_.reference_names == REFS) == text_on
            assert member.use_references_ == refs_on and member.use_classical_text_ == text_on
            assert bool(member.reference_names_) == (refs_on or text_on)
            assert np.isfinite(member.predict(ctx, r if (refs_on or text_on) else None)).all()


def test_backbone_none_with_references(tmp_path: Path) -> None:
    member, ctx, r = _fit(_fused("none"))
    assert member.use_references_ and not member.use_classical_text_ and member.prompt_len_ == 0
    assert member.net_.references is not None and member.net_.reference_mix is not None
    out = member.predict(ctx, r)
    assert out.shape == (10, C, H) and np.isfinite(out).all()
    assert "no prompt" in member.prompt_text(ctx[:1], r[:1])[0]
    member.save(tmp_path / "m")
    assert np.array_equal(TimeLLM.load(tmp_path / "m").predict(ctx, r), out)


def test_save_load_round_trip_with_references(tiny_bert: str, tmp_path: Path) -> None:
    member, ctx, r = _fit(_fused(tiny_bert, dropout=0.1))
    member.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"timellm.safetensors", "timellm.json"}  # no members inside
    again = TimeLLM.load(tmp_path / "m")
    assert again.reference_names_ == REFS
    assert np.array_equal(again.predict(ctx, r), member.predict(ctx, r))
    assert again.prompt_text(ctx[:1], r[:1]) == member.prompt_text(ctx[:1], r[:1])
    words = again.explain(ctx[:1])
    assert len(words) == C and words == member.explain(ctx[:1])

    def head(bias: float) -> None:  # both copies' output head: zero weights, this bias
        for net in (member.net_, again.net_):
            with torch.no_grad():
                net.head[1].weight.zero_()
                net.head[1].bias.fill_(bias)

    head(0.0)  # an unused head (the untrained start; this fit kept it): the loaded copy names the fitted start's mix
    mix = member.net_.reference_mix.tolist()
    assert again.explain(ctx[:1]) == [
        "the checkpoint chosen on validation is the untrained start (epoch 0): the mix of the references "
        f"({member.start_mix_['chosen']}: linear {mix[0]:+.3f}, drift {mix[1]:+.3f}); the backbone and the prompt do "
        "not change this forecast"] * C
    head(0.5)  # a head in use: the most-attended text prototypes and their words, the same after the round trip
    words = again.explain(ctx[:1])
    assert words == member.explain(ctx[:1]) and len(words) == C
    part = r"prototype \d \(\d+\.\d%\): \w+, \w+, \w+"
    assert all(re.fullmatch(f"{part}; {part}; {part}", w) for w in words), words


class RecordingSource:
    """A reference source that records which window starts were asked for, and answers by the start itself."""

    names = REFS

    def __init__(self) -> None:
        self.asked: list[int] = []

    def forecasts(self, starts: np.ndarray, horizon: int) -> np.ndarray:
        self.asked += [int(s) for s in starts]
        return np.broadcast_to(np.asarray(starts, np.float32)[:, None, None, None] / 100.0,
                               (len(starts), C, len(REFS), horizon)).copy()


def test_the_core_reads_each_windows_references_by_its_start_in_the_series() -> None:
    """Training samples get the references of their own window (by its start row, segments included)."""
    x = _series()
    source = RecordingSource()
    spec = dataclasses.replace(SPEC, references=source)
    segments = [Segment(x[:120], 0), Segment(x[200:300], 200)]  # a cross-fitting hole at rows 120-200
    member = TimeLLM(_fused("none", epochs=1, max_train_windows=0)).fit(segments, None, spec)
    valid = set(range(0, 120 - L - H + 1)) | set(range(200, 300 - L - H + 1))
    assert set(source.asked) <= valid and set(source.asked) & set(range(200, 300))
    assert member.reference_names_ == REFS


def test_missing_reference_source_runs_the_core_alone_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    x = _series()
    with caplog.at_level("WARNING"):
        member = TimeLLM(_fused("none", epochs=1, max_train_windows=16)).fit(x[:TRAIN_END], x[TRAIN_END - L :], SPEC)
    assert "no reference forecasts were handed over" in caplog.text
    assert member.reference_names_ == () and member.net_.references is None
    ctx, _ = windows(x[TRAIN_END - L :], L, H)
    assert np.isfinite(member.predict(ctx[:3])).all()


def test_frozen_core_trains_the_chosen_epochs_from_the_chosen_start() -> None:
    member, ctx, r = _fit(_fused("none", epochs=3, max_train_windows=32, patience=5))
    twin = member.frozen()
    assert twin.fixed_epochs == member.best_epoch_ and twin.fixed_start == member.start_mix_["chosen"]
    x = _series()
    spec = dataclasses.replace(SPEC, references=_source())
    refit = twin.fit([Segment(x[:300], 0)], Segment(x[300 - L :], 300 - L), spec)  # val is ignored
    assert len(refit.history_) == member.best_epoch_ and all("val_loss" not in h for h in refit.history_)
    assert refit.start_mix_ == {"chosen": member.start_mix_["chosen"], "fixed": True}
    assert np.isfinite(refit.predict(ctx, r)).all()


def test_starting_mix_is_chosen_on_validation_among_the_mix_and_each_reference(tiny_bert: str) -> None:
    member, ctx, r = _fit(_fused(tiny_bert, epochs=0))  # no trained epoch: the checkpoint is the untrained start
    start = member.start_mix_
    assert set(start["val_mse"]) == {"least-squares mix", *REFS}
    assert member.best_epoch_ == 0 and member.net_.head_is_zero()
    # every candidate start forecasts as it should, not only the one validation chose (a frozen copy trains
    # 0 epochs from a fixed start)
    spec = dataclasses.replace(SPEC, references=_source())
    outs, mixes = {}, {}
    for fixed in (LEAST_SQUARES, *REFS):
        twin = member.frozen()
        twin.fixed_start = fixed
        twin.fit([Segment(_series()[:TRAIN_END], 0)], None, spec)
        outs[fixed], mixes[fixed] = twin.predict(ctx, r), twin.net_.reference_mix.detach().numpy()
    for i, name in enumerate(REFS):  # one reference alone: the core forecasts exactly what that member does
        np.testing.assert_allclose(outs[name], r[:, :, i], rtol=1e-5, atol=1e-5)
    mean = ctx.mean(-1, keepdims=True)  # the least-squares mix, taken about each window's mean
    np.testing.assert_allclose(outs[LEAST_SQUARES], mean + ((r - mean[..., None]) * mixes[LEAST_SQUARES][:, None]).sum(2),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(member.predict(ctx, r), outs[start["chosen"]], rtol=1e-6, atol=1e-6)
    assert "untrained start" in member.explain(ctx[:1])[0]
    # each candidate's validation MSE, recomputed from the members' own forecasts of every validation window (each
    # (window, channel) once): a reference alone forecasts what that member does; the mix, as above
    ctx_v, tgt_v = windows(_series()[TRAIN_END - L :], L, H)
    r_v = _refs(_members(), ctx_v)
    mean_v = ctx_v.mean(-1, keepdims=True)
    candidates = {name: r_v[:, :, i] for i, name in enumerate(REFS)}
    candidates[LEAST_SQUARES] = mean_v + ((r_v - mean_v[..., None]) * mixes[LEAST_SQUARES][:, None]).sum(2)
    val_mse = {name: float(np.mean((f - tgt_v) ** 2)) for name, f in candidates.items()}
    assert start["samples"] == len(ctx_v) * C
    assert start["val_mse"] == pytest.approx(val_mse, rel=1e-5)
    assert start["chosen"] == min(val_mse, key=val_mse.get)
    assert val_mse["drift"] > 10 * val_mse[start["chosen"]]  # on this sine, drift is far off: the choice matters


def test_zero_head_forecast_skips_the_backbone_and_equals_the_full_pass(tiny_bert: str) -> None:
    member, ctx, r = _fit(_fused(tiny_bert, epochs=1, max_train_windows=16))
    net = member.net_
    with torch.no_grad():
        net.head[1].weight.zero_()
        net.head[1].bias.zero_()
    x, ids, mask, refs = _inputs(member, ctx, r)
    with torch.no_grad():
        full = net.eval()(x, ids, mask, refs=refs).numpy()  # through the backbone
    calls = []
    net.backbone.register_forward_hook(lambda *a: calls.append(1))
    out = member.predict(ctx, r).reshape(-1, H)
    assert calls == []
    np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        net.head[1].bias.fill_(0.5)  # a trained head: the backbone runs again
    member.predict(ctx, r)
    assert calls
