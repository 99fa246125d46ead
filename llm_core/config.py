"""Config section of the Time-LLM core (imports no torch, so the config layer
stays light)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CoreConfig:
    backbone: str = "minilm"  # minilm | smollm2 | none | any Hugging Face id or local path
    llm_layers: int = 2
    patch_len: int | str = 16  # or "auto": the dominant detected period
    stride: int = 8
    d_model: int = 32
    n_heads: int = 8
    num_prototypes: int = 1000
    vocab_size: int = 5000
    prompt: bool = True
    top_k_lags: int = 5
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.001
    patience: int = 3
    train_stride: int = 1
    max_train_windows: int = 0  # 0: all
    device: str = "auto"  # auto | cpu | cuda
