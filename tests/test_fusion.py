"""Fusion of the classical members with the Time-LLM core: prompt text and reference tokens.

Tiny random backbones, fast classical members (linear, drift); no network.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_core import SPEC, C, H, L, _cfg, _series, save_tiny_bert  # noqa: E402

from baselines.linear import RidgeLinear  # noqa: E402
from hybrid.protocol import windows  # noqa: E402
from llm_core.member import REFERENCES_FILE, TimeLLM  # noqa: E402
from llm_core.prompt import PromptCache, ReferenceCache, classical_texts, prompt_texts  # noqa: E402

REFS = ("linear", "drift")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """test_core's tiny random BERT, with room for the longer fused sequence (prompt, patches, references)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert_fusion"), max_positions=256)


def _fused(backbone: str, **kw: object):  # noqa: ANN202
    base = dict(reference_members=REFS, references=True, classical_text=True, max_prompt_tokens=96)
    base.update(kw)
    return _cfg(backbone, **base)


def _fit(cfg, spec=SPEC) -> tuple[TimeLLM, np.ndarray]:  # noqa: ANN001
    x = _series()
    member = TimeLLM(cfg).fit(x[:250], x[250 - L :], spec)
    ctx, _ = windows(x[250 - L :], L, H)
    return member, ctx[:10]


def _inputs(member: TimeLLM, ctx: np.ndarray) -> tuple[torch.Tensor, ...]:
    """x [M, L], prompt ids and mask, references [M, R, H] of the windows ctx [N, C, L]."""
    refs = member._reference_forecasts(ctx)
    refs = refs.reshape(-1, *refs.shape[2:])
    x = ctx.reshape(-1, L)
    ids, mask = member.encoder_.encode(x, refs if member.use_classical_text_ else None)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (x, ids, mask, refs))


def test_reference_tokens_change_output_and_head_reads_them(tiny_bert: str) -> None:
    member, ctx = _fit(_fused(tiny_bert, classical_text=False, reference_skip=False))
    net = member.net_
    x, ids, mask, refs = _inputs(member, ctx)
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
    assert np.allclose(member.predict(ctx).reshape(-1, H), base.numpy(), atol=1e-5)


def test_classical_text_changes_prompt_and_cache_matches_fresh_tokenisation(tiny_bert: str) -> None:
    from transformers import AutoTokenizer

    member, ctx = _fit(_fused(tiny_bert, references=False))
    plain, _ = _fit(_fused(tiny_bert, references=False, classical_text=False))
    text = member.prompt_text(ctx[:1])
    assert len(text) == C and "Classical forecasts: linear ends" in text[0] and "drift ends" in text[0]
    assert "they agree" in text[0] or "they disagree" in text[0]
    assert all("Classical" not in t for t in plain.prompt_text(ctx[:1]))
    assert member.prompt_len_ > plain.prompt_len_

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    enc, members = member.encoder_, list(member.references_.values())
    x = _series(200)
    wins, _ = windows(x, L, H)
    cache = PromptCache(enc, wins, ReferenceCache(members, wins, H))
    idx = np.array([7, 0, 31, 7, 100])
    cache.fill(idx[:2])
    ids, mask = cache.get(idx)
    for row, s in enumerate(idx):
        w, c = s // C, s % C
        refs = np.stack([m.predict(wins[w : w + 1])[0, c] for m in members])[None]  # [1, R, H]
        fresh_text = prompt_texts(wins[w, c][None], L, H, 5)[0] + classical_texts(wins[w, c][None], refs, REFS)[0]
        fresh = enc.description_ids + tok(fresh_text, add_special_tokens=False)["input_ids"]
        n = int(mask[row].sum())
        assert ids[row, :n].tolist() == fresh[: enc.prompt_len]
    assert cache.done.sum() == 4


def test_switches_are_independent(tiny_bert: str) -> None:
    for refs_on in (False, True):
        for text_on in (False, True):
            member, ctx = _fit(_fused(tiny_bert, references=refs_on, classical_text=text_on, epochs=1,
                                      max_train_windows=16))  # fmt: skip
            assert (member.net_.references is not None) == refs_on
            assert (member.encoder_.reference_names == REFS) == text_on
            assert member.use_references_ == refs_on and member.use_classical_text_ == text_on
            assert bool(member.references_) == (refs_on or text_on)
            assert np.isfinite(member.predict(ctx)).all()


def test_backbone_none_with_references(tmp_path: Path) -> None:
    member, ctx = _fit(_fused("none"))
    assert member.use_references_ and not member.use_classical_text_ and member.prompt_len_ == 0
    assert member.net_.references is not None and member.net_.reference_mix is not None
    out = member.predict(ctx)
    assert out.shape == (10, C, H) and np.isfinite(out).all()
    assert "no prompt" in member.prompt_text(ctx[:1])[0]
    member.save(tmp_path / "m")
    assert np.array_equal(TimeLLM.load(tmp_path / "m").predict(ctx), out)


def test_save_load_round_trip_with_references(tiny_bert: str, tmp_path: Path) -> None:
    member, ctx = _fit(_fused(tiny_bert, dropout=0.1))
    member.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"timellm.safetensors", "timellm.json", REFERENCES_FILE}
    again = TimeLLM.load(tmp_path / "m")
    assert list(again.references_) == list(REFS)
    assert np.array_equal(again.predict(ctx), member.predict(ctx))
    assert again.prompt_text(ctx[:1]) == member.prompt_text(ctx[:1])
    words = again.explain(ctx[:1])
    assert len(words) == C and words == member.explain(ctx[:1])
    assert words[0].startswith("prototype ") != again.net_.head_is_zero()  # prototypes unless the head is unused


def test_references_come_from_the_window_and_the_training_part_only(tiny_bert: str) -> None:
    member, _ = _fit(_fused("none", epochs=1, max_train_windows=16))
    x = _series()
    alone = RidgeLinear().fit(x[:250], x[250 - L :], SPEC)  # fitted on the training part, as the core's is
    ctx, _ = windows(x[:250], L, H)
    assert np.array_equal(member.references_["linear"].predict(ctx[:5]), alone.predict(ctx[:5]))

    members = list(member.references_.values())
    w = 40
    before = ReferenceCache(members, ctx, H).get(np.arange(w * C, (w + 1) * C))  # [C, R, H]
    later = x[:250].copy()
    later[w + L :] += 5.0  # everything after the window's end (its target and later)
    ctx2, _ = windows(later, L, H)
    after = ReferenceCache(members, ctx2, H).get(np.arange(w * C, (w + 1) * C))
    assert np.array_equal(before, after)
    assert np.array_equal(before[:, 0], alone.predict(ctx[w : w + 1])[0])


def test_fitted_members_are_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _series()
    given = RidgeLinear().fit(x[:250], x[250 - L :], SPEC)
    calls = []
    monkeypatch.setattr(RidgeLinear, "fit", lambda self, *a, **k: calls.append(1) or self)
    spec = dataclasses.replace(SPEC, extra={"fitted_members": {"linear": given}})
    member, _ = _fit(_fused("none", epochs=1, max_train_windows=16), spec)
    assert member.references_["linear"] is given and not calls


def test_pipeline_passes_fitted_members(csv_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hybrid.config import Config, TaskConfig
    from hybrid.pipeline import fit_run, forecast_run

    calls = []
    real_fit = RidgeLinear.fit
    monkeypatch.setattr(RidgeLinear, "fit", lambda self, *a, **k: calls.append(1) or real_fit(self, *a, **k))
    core = dataclasses.replace(_fused("none"), reference_members=("linear",), epochs=1, max_train_windows=32)
    cfg = Config(task=TaskConfig(context_length=96, horizons=(24,), members=("linear", "timellm")), core=core)
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, progress=False, n_jobs=1))
    result = fit_run(cfg, str(csv_path), tmp_path / "run")
    assert len(calls) == 1  # the core reused the pipeline's linear
    assert result.manifest["members"]["timellm"]["status"] == "ok"
    out = forecast_run(tmp_path / "run")
    assert out.members["timellm"].shape == (2, 24) and np.isfinite(out.members["timellm"]).all()


def test_starting_mix_is_chosen_on_validation_among_the_mix_and_each_reference(tiny_bert: str) -> None:
    member, ctx = _fit(_fused(tiny_bert, epochs=0))  # no trained epoch: the checkpoint is the untrained start
    start = member.start_mix_
    assert set(start["val_mse"]) == {"least-squares mix", *REFS}
    assert start["chosen"] == min(start["val_mse"], key=start["val_mse"].get)
    assert member.best_epoch_ == 0 and member.net_.head_is_zero()
    out = member.predict(ctx)
    if start["chosen"] in REFS:  # one reference alone: the core forecasts exactly what that member does
        np.testing.assert_allclose(out, member.references_[start["chosen"]].predict(ctx)[..., :H], rtol=1e-5, atol=1e-5)
    assert "untrained start" in member.explain(ctx[:1])[0]


def test_zero_head_forecast_skips_the_backbone_and_equals_the_full_pass(tiny_bert: str) -> None:
    member, ctx = _fit(_fused(tiny_bert, epochs=1, max_train_windows=16))
    net = member.net_
    with torch.no_grad():
        net.head[1].weight.zero_()
        net.head[1].bias.zero_()
    x, ids, mask, refs = _inputs(member, ctx)
    with torch.no_grad():
        full = net.eval()(x, ids, mask, refs=refs).numpy()  # through the backbone
    calls = []
    net.backbone.register_forward_hook(lambda *a: calls.append(1))
    out = member.predict(ctx).reshape(-1, H)
    assert calls == []
    np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        net.head[1].bias.fill_(0.5)  # a trained head: the backbone runs again
    member.predict(ctx)
    assert calls
