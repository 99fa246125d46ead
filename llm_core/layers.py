"""The trainable parts of the core and the network that joins them.

Shapes: B samples (one channel of one window each), L context steps, H
horizon steps, P patches, D backbone width, K prototypes, V reduced
vocabulary.

References:
    Jin et al., "Time-LLM", ICLR 2024 (reprogramming, prompt-as-prefix);
    Kim et al., "Reversible Instance Normalization", ICLR 2022 (RevIN);
    Nie et al., "PatchTST", ICLR 2023 (patching, flatten head);
    Tan et al., "Are Language Models Actually Useful for Time Series
    Forecasting?", NeurIPS 2024 (the one-attention-layer ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REVIN_EPS = 1e-5
REF_CLIP = 50.0  # reference tokens read the references in RevIN units clipped to +-REF_CLIP
MASK_LEVELS = 1 << 16  # a CPU dropout mask compares 16-bit random numbers: the rate is a multiple of 1 / 65536


def cpu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout of ``x`` at rate ``p`` (rounded to a multiple of 1 / 65536), its mask drawn four elements per word.

    torch's CPU dropout draws one random number per element with its
    generator, which made the attention weights' mask half of a training
    step of the core without a backbone. Here each 64-bit random word gives
    four 16-bit numbers; an element is kept when its number is at or above
    the rate's cut, and kept elements are scaled by 1 / (1 - the rounded
    rate), so the expectation is unchanged. Same generator (``torch.manual_seed``).
    A rate of 1 drops everything, as torch's does.
    """
    cut = round(p * MASK_LEVELS)
    if cut >= MASK_LEVELS:
        return x * 0.0
    n = x.numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64)
    keep = words.view(torch.int16)[:n].view(x.shape) >= cut - MASK_LEVELS // 2
    return x * (keep.to(x.dtype) * (MASK_LEVELS / (MASK_LEVELS - cut)))


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` with its mask drawn by :func:`cpu_dropout` on a CPU (the same on a GPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        return cpu_dropout(x, self.p)


class SelfAttention(nn.MultiheadAttention):
    """Batch-first self-attention of :class:`torch.nn.MultiheadAttention`, its weights' dropout by :func:`cpu_dropout`.

    In training on a CPU with dropout, called as :class:`torch.nn.TransformerEncoderLayer` calls it (one
    batch-first input [B, T, D] as query, key and value, no mask, no weights asked for, every option at torch's
    default), the weights are computed here: softmax of the scaled dot products, dropout, times the values.
    Everywhere else, and for its parameters, it is torch's module.
    """

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: object,
                **kw: object) -> tuple[torch.Tensor, torch.Tensor | None]:
        plain_call = not args and kw.get("need_weights") is False and all(
            kw.get(k) is None for k in ("key_padding_mask", "attn_mask")) and not kw.get("is_causal")
        plain_module = self.batch_first and self._qkv_same_embed_dim and self.bias_k is None and not self.add_zero_attn
        if not (self.training and self.dropout > 0 and query.device.type == "cpu" and query.dim() == 3
                and query is key is value and plain_call and plain_module):
            return super().forward(query, key, value, *args, **kw)  # type: ignore[arg-type]
        b, t, d = query.shape
        h = self.num_heads
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias).view(b, t, 3, h, d // h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, h, T, d / h]
        weights = torch.softmax(q @ k.transpose(-2, -1) * (d // h) ** -0.5, dim=-1)  # [B, h, T, T]
        out = (cpu_dropout(weights, self.dropout) @ v).transpose(1, 2).reshape(b, t, d)
        return self.out_proj(out), None


def revin_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RevIN (no affine) statistics of windows x [B, L]: mean and standard deviation, each [B, 1]."""
    mean = x.mean(dim=1, keepdim=True)
    return mean, torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + REVIN_EPS)


def n_patches(context_length: int, patch_len: int, stride: int) -> int:
    """Patches of a window padded at the end by ``stride`` (replication)."""
    return (context_length + stride - patch_len) // stride + 1


class PatchEmbedding(nn.Module):
    """[B, L] -> [B, P, d_model]: replication-pad by stride, unfold, linear."""

    def __init__(self, patch_len: int, stride: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        self.proj = nn.Linear(patch_len, d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, x[:, -1:].expand(-1, self.stride)], dim=1)  # [B, L + stride]
        patches = x.unfold(1, self.patch_len, self.stride)  # [B, P, patch_len]
        return self.dropout(self.proj(patches))  # [B, P, d_model]


class ReferenceEmbedding(nn.Module):
    """Classical forecasts -> reference tokens in the backbone's width.

    Each member's forecast [H] (already in the window's RevIN units) is
    replication-padded, cut into patches with the core's patch length and
    stride, projected by one learned linear map and tagged with a learned
    identity embedding of its member.

    Args:
        n_members: R, the number of reference members.
        horizon: H.
        patch_len, stride: the core's patching.
        width: the backbone's width D (or d_model without a backbone).
        dropout: dropout on the tokens.
    """

    def __init__(self, n_members: int, horizon: int, patch_len: int, stride: int, width: int, dropout: float) -> None:
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        self.pad = stride + max(0, patch_len - horizon - stride)  # at least one whole patch
        self.n_tokens = (horizon + self.pad - patch_len) // stride + 1  # patches per member
        self.proj = nn.Linear(patch_len, width)
        self.identity = nn.Parameter(torch.randn(n_members, 1, width) * 0.02)  # [R, 1, D]
        self.dropout = Dropout(dropout)

    def forward(self, refs: torch.Tensor) -> torch.Tensor:
        """refs [B, R, H] (RevIN units) -> tokens [B, R * Pr, D]."""
        b, r, _ = refs.shape
        x = torch.cat([refs, refs[:, :, -1:].expand(-1, -1, self.pad)], dim=2)  # [B, R, H + pad]
        patches = x.unfold(2, self.patch_len, self.stride)  # [B, R, Pr, patch_len]
        tokens = self.proj(patches) + self.identity.to(patches.dtype)  # [B, R, Pr, D]
        return self.dropout(tokens.reshape(b, r * self.n_tokens, -1))


class Reprogramming(nn.Module):
    """Multi-head cross-attention from patch embeddings to text prototypes.

    Queries come from the patches [B, P, d_model]; keys and values from the
    prototypes [K, D]; the output is in the backbone's width [B, P, D].
    """

    def __init__(self, d_model: int, n_heads: int, d_keys: int, d_llm: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.d_keys = n_heads, d_keys
        self.query = nn.Linear(d_model, n_heads * d_keys)
        self.key = nn.Linear(d_llm, n_heads * d_keys)
        self.value = nn.Linear(d_llm, n_heads * d_keys)
        self.out = nn.Linear(n_heads * d_keys, d_llm)
        self.dropout = dropout

    def key_value(self, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prototypes [K, D] -> keys and values [1, heads, K, d_keys] (shared by the batch)."""
        k = self.key(prototypes).view(1, -1, self.n_heads, self.d_keys).transpose(1, 2)
        v = self.value(prototypes).view(1, -1, self.n_heads, self.d_keys).transpose(1, 2)
        return k, v

    def forward(self, patches: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, p, _ = patches.shape
        q = self.query(patches).view(b, p, self.n_heads, self.d_keys).transpose(1, 2)  # [B, h, P, dk]
        k, v = (t.expand(b, -1, -1, -1) for t in kv)  # [B, h, K, dk], views
        drop = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # [B, h, P, dk]
        return self.out(att.transpose(1, 2).reshape(b, p, self.n_heads * self.d_keys))  # [B, P, D]


class TimeLLMNet(nn.Module):
    """RevIN -> patches -> reprogramming -> [prompt | patches | references] -> frozen backbone -> head.

    With ``backbone=None`` the patch embeddings (and reference tokens) go
    through one transformer encoder layer straight to the head (no
    prototypes, no prompt).

    With ``n_references`` R > 0 the forward pass takes the classical
    members' forecasts [B, R, H]: they are normalised with the window's RevIN
    statistics, embedded as reference tokens after the patch tokens, and the
    head reads the patch and the reference positions. With
    ``reference_skip`` the head's output is added to a learned weighted sum of
    the normalised references (weights start equal, 1 / R), so the network
    starts from the members' mean and learns a correction.

    Args:
        context_length, horizon: L and H.
        patch_len, stride: patching.
        d_model, n_heads, d_keys, num_prototypes, d_ff, dropout: sizes (see CoreConfig).
        attn_dropout: dropout on the attention weights of the encoder layer used without a backbone (``dropout``
            does not set it). On a CPU every dropout mask of the network but the reprogramming's attention
            (torch's) is drawn by :func:`cpu_dropout` (torch's, one random number per element, made the attention
            weights' mask half of a training step).
        backbone: the frozen transformer (``inputs_embeds`` interface) or None.
        d_llm: the backbone's hidden width (ignored without a backbone).
        vocab_ids: the reduced vocabulary [V] (ignored without a backbone).
        n_references: R, classical members whose forecasts enter as tokens (0: none).
        reference_skip: add the learned mix of the references to the head's output.
    """

    def __init__(
        self,
        *,
        context_length: int,
        horizon: int,
        patch_len: int,
        stride: int,
        d_model: int,
        n_heads: int,
        d_keys: int,
        num_prototypes: int,
        d_ff: int,
        dropout: float,
        backbone: nn.Module | None,
        attn_dropout: float = 0.1,
        d_llm: int = 0,
        vocab_ids: torch.Tensor | None = None,
        n_references: int = 0,
        reference_skip: bool = False,
    ) -> None:
        super().__init__()
        self.context_length, self.horizon = context_length, horizon
        self.n_patches = n_patches(context_length, patch_len, stride)
        self.patch = PatchEmbedding(patch_len, stride, d_model, dropout)
        if backbone is not None:
            assert vocab_ids is not None
            self.backbone = backbone
            self.register_buffer("vocab_ids", vocab_ids.clone())
            self.prototypes = nn.Linear(len(vocab_ids), num_prototypes)  # V -> K, over word embeddings
            self.reprogram = Reprogramming(d_model, n_heads, d_keys, d_llm, dropout)
            width = d_llm
        else:
            self.backbone = None
            self.encoder = nn.TransformerEncoderLayer(
                d_model, n_heads, dim_feedforward=4 * d_model, dropout=dropout, batch_first=True
            )
            with torch.random.fork_rng(devices=[]):  # the generator is not advanced: later weights start as before
                attn = SelfAttention(d_model, n_heads, dropout=attn_dropout, batch_first=True)
            attn.load_state_dict(self.encoder.self_attn.state_dict())  # the layer's own initial weights
            self.encoder.self_attn = attn
            for name in ("dropout", "dropout1", "dropout2"):
                setattr(self.encoder, name, Dropout(dropout))
            width = d_model
        self.n_references = n_references
        self.n_positions = self.n_patches  # positions the head reads
        self.references = None
        self.reference_mix = None
        if n_references > 0:
            self.references = ReferenceEmbedding(n_references, horizon, patch_len, stride, width, dropout)
            self.n_positions += n_references * self.references.n_tokens
            if reference_skip:
                self.reference_mix = nn.Parameter(torch.full((n_references,), 1.0 / n_references))  # [R]
        self.d_ff = min(d_ff, width)
        self.head = nn.Sequential(
            nn.Flatten(start_dim=1), nn.Linear(self.d_ff * self.n_positions, horizon), Dropout(dropout)
        )

    @torch.no_grad()
    def init_reference_mix(self, x: torch.Tensor, refs: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> None:
        """Start from the best linear mix of the references on training samples; zero the head.

        The mix weights are the ridge least-squares fit of the targets y [B, H]
        on the references refs [B, R, H] of windows x [B, L], both relative
        to the window's mean, in scaled units: the error of the forecast the
        network returns. (Fitted in each window's RevIN units instead, a window
        with a nearly constant context turns its target into huge values that
        dominate the fit.) The head's last layer is zeroed, so the untrained
        network forecasts exactly that mix and training learns a correction.
        """
        if self.reference_mix is None:
            return
        mean, _ = revin_stats(x)
        a = (refs.double() - mean[:, :, None]).transpose(1, 2).reshape(-1, refs.shape[1])  # [B*H, R]
        b = (y.double() - mean).reshape(-1)  # [B*H]
        gram = a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=a.dtype)
        self.reference_mix.copy_(torch.linalg.solve(gram, a.T @ b).to(self.reference_mix.dtype))
        self.head[1].weight.zero_()
        self.head[1].bias.zero_()

    def train(self, mode: bool = True) -> TimeLLMNet:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # frozen: no dropout, ever
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every tensor of the state except the frozen backbone's."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def prototype_kv(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys and values of the K prototypes (independent of the batch)."""
        if self.backbone is None:
            return None
        words = self.backbone.get_input_embeddings().weight[self.vocab_ids]  # [V, D], frozen
        protos = self.prototypes(words.t()).t()  # [K, D]
        return self.reprogram.key_value(protos)

    def forward(
        self,
        x: torch.Tensor,
        prompt_ids: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        refs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, L] (scaled values) -> forecast [B, H].

        Args:
            prompt_ids, prompt_mask: cached prompt tokens [B, Pp] (None: no prompt).
            kv: precomputed :meth:`prototype_kv` (None: computed here).
            refs: the reference members' forecasts [B, R, H] in scaled values;
                required when the network was built with ``n_references`` > 0.
        """
        mean, std = revin_stats(x)
        z = (x - mean) / std  # [B, L]
        tokens = self.patch(z)  # [B, P, d_model]
        ref_z = None
        if self.references is not None:
            if refs is None or refs.shape[1] != self.n_references:
                got = None if refs is None else tuple(refs.shape)
                raise ValueError(f"the network expects refs [B, {self.n_references}, H]; got {got}.")
            ref_z = (refs.float() - mean[:, :, None]) / std[:, :, None]  # [B, R, H], the window's RevIN units
        ref_tokens = None if ref_z is None else ref_z.clamp(-REF_CLIP, REF_CLIP)  # a flat window must not blow up a token
        if self.backbone is None:
            if ref_tokens is not None:
                tokens = torch.cat([tokens, self.references(ref_tokens).to(tokens.dtype)], dim=1)  # [B, P + R*Pr, d]
            hidden = self.encoder(tokens)  # [B, P (+ R*Pr), d_model]
        else:
            tokens = self.reprogram(tokens, kv if kv is not None else self.prototype_kv())  # [B, P, D]
            if ref_tokens is not None:
                tokens = torch.cat([tokens, self.references(ref_tokens).to(tokens.dtype)], dim=1)  # [B, P + R*Pr, D]
            mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=x.device)
            if prompt_ids is not None:
                prefix = self.backbone.get_input_embeddings()(prompt_ids).to(tokens.dtype)  # [B, Pp, D]
                tokens = torch.cat([prefix, tokens], dim=1)  # [B, Pp + P + R*Pr, D]
                mask = torch.cat([prompt_mask.long(), mask], dim=1)
            hidden = self.backbone(inputs_embeds=tokens, attention_mask=mask).last_hidden_state
            hidden = hidden[:, -self.n_positions :]  # [B, P + R*Pr, D]
        feats = hidden[:, :, : self.d_ff].transpose(1, 2)  # [B, d_ff, P + R*Pr]
        y = self.head(feats).float()  # [B, H]
        if self.reference_mix is not None:
            y = y + (ref_z * self.reference_mix.float()[None, :, None]).sum(dim=1)  # fp32 even under autocast
        return y * std + mean  # RevIN de-normalisation

    def head_is_zero(self) -> bool:
        """True when the head's last layer is all zeros: the forecast is then the reference mix alone."""
        layer = self.head[1]
        return bool(self.reference_mix is not None and not layer.weight.any() and not layer.bias.any())

    @torch.no_grad()
    def reference_mix_forecast(self, x: torch.Tensor, refs: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """What :meth:`forward` returns when the head is zero, without running the backbone.

        x [B, L], refs [B, R, H] (scaled values), mix [R] (default: the learned
        ``reference_mix``) -> [B, H] float32: the mix taken in each window's
        RevIN units and de-normalised, exactly as in :meth:`forward`.
        """
        mix = self.reference_mix if mix is None else mix
        x = x.float()
        mean, std = revin_stats(x)
        ref_z = (refs.float() - mean[:, :, None]) / std[:, :, None]
        return (ref_z * mix.float()[None, :, None]).sum(dim=1) * std + mean


def count_parameters(net: TimeLLMNet) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    return trainable, frozen
