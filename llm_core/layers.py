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


def n_patches(context_length: int, patch_len: int, stride: int) -> int:
    """Patches of a window padded at the end by ``stride`` (replication)."""
    return (context_length + stride - patch_len) // stride + 1


class PatchEmbedding(nn.Module):
    """[B, L] -> [B, P, d_model]: replication-pad by stride, unfold, linear."""

    def __init__(self, patch_len: int, stride: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        self.proj = nn.Linear(patch_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, x[:, -1:].expand(-1, self.stride)], dim=1)  # [B, L + stride]
        patches = x.unfold(1, self.patch_len, self.stride)  # [B, P, patch_len]
        return self.dropout(self.proj(patches))  # [B, P, d_model]


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
    """RevIN -> patches -> reprogramming -> [prompt | patches] -> frozen backbone -> head.

    With ``backbone=None`` the patch embeddings go through one transformer
    encoder layer straight to the head (no prototypes, no prompt).

    Args:
        context_length, horizon: L and H.
        patch_len, stride: patching.
        d_model, n_heads, d_keys, num_prototypes, d_ff, dropout: sizes (see CoreConfig).
        backbone: the frozen transformer (``inputs_embeds`` interface) or None.
        d_llm: the backbone's hidden width (ignored without a backbone).
        vocab_ids: the reduced vocabulary [V] (ignored without a backbone).
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
        d_llm: int = 0,
        vocab_ids: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
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
            width = d_model
        self.d_ff = min(d_ff, width)
        self.head = nn.Sequential(
            nn.Flatten(start_dim=1), nn.Linear(self.d_ff * self.n_patches, horizon), nn.Dropout(dropout)
        )

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
    ) -> torch.Tensor:
        """x [B, L] (scaled values) -> forecast [B, H].

        Args:
            prompt_ids, prompt_mask: cached prompt tokens [B, Pp] (None: no prompt).
            kv: precomputed :meth:`prototype_kv` (None: computed here).
        """
        mean = x.mean(dim=1, keepdim=True)  # RevIN, no affine
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + REVIN_EPS)
        z = (x - mean) / std  # [B, L]
        tokens = self.patch(z)  # [B, P, d_model]
        if self.backbone is None:
            hidden = self.encoder(tokens)  # [B, P, d_model]
        else:
            tokens = self.reprogram(tokens, kv if kv is not None else self.prototype_kv())  # [B, P, D]
            mask = torch.ones(tokens.shape[:2], dtype=torch.long, device=x.device)
            if prompt_ids is not None:
                prefix = self.backbone.get_input_embeddings()(prompt_ids).to(tokens.dtype)  # [B, Pp, D]
                tokens = torch.cat([prefix, tokens], dim=1)  # [B, Pp + P, D]
                mask = torch.cat([prompt_mask.long(), mask], dim=1)
            hidden = self.backbone(inputs_embeds=tokens, attention_mask=mask).last_hidden_state
            hidden = hidden[:, -self.n_patches :]  # [B, P, D]
        feats = hidden[:, :, : self.d_ff].transpose(1, 2)  # [B, d_ff, P]
        y = self.head(feats).float()  # [B, H]
        return y * std + mean  # RevIN de-normalisation


def count_parameters(net: TimeLLMNet) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    return trainable, frozen
