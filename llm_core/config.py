"""Config section of the Time-LLM core (imports no torch, so the config layer
stays light).

Sizes are chosen so that the default config trains to early stop within about
10 minutes on a 2-core CPU for ETTh1 (L 512, H 96, 7 channels); on a GPU the
``auto`` sampling settings use every training and validation window.

``budget: auto`` (the default) lets the selection fit choose what and how
much to train (docs/architecture.md, "The Time-LLM core"): rung 0 trains
each ``ladder_variants`` entry (backbone, fused or plain, patch) at the
smallest budget that judges it; when none beats the untrained start (the
reference mix) by more than ``ladder_tol`` on validation, the core is that
start and no later fit trains; otherwise the best variant trains with early
stopping at growing samples per epoch while validation improves, within
``max_minutes``. ``budget: fixed`` trains ``epochs`` x
``max_train_windows`` with early stopping, as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from kernel.errors import HybridInputError

Schedule = Literal["onecycle", "cosine", "constant"]
Device = Literal["auto", "cpu", "cuda"]
Budget = Literal["auto", "fixed"]
LADDER_VARIANTS = ("configured", "none", "none:plain", "none:plain:period")  # core.ladder_variants' default


@dataclass(frozen=True)
class CoreConfig:
    # --- backbone -------------------------------------------------------------------------------
    backbone: str = "minilm"  # minilm | smollm2 | none | any Hugging Face id or local path
    llm_layers: int = 2  # the backbone is truncated to its first llm_layers layers
    # --- patching -------------------------------------------------------------------------------
    patch_len: int | str = 16  # or "auto": the dominant detected period (spec.periods[0]), clamped
    stride: int = 8  # patch stride; with patch_len "auto" (or a period expert) it is patch_len // 2
    d_model: int = 32  # width of the patch embedding (queries of the reprogramming)
    # --- reprogramming --------------------------------------------------------------------------
    n_heads: int = 8  # heads of the reprogramming cross-attention
    d_keys: int = 16  # width per head of the reprogramming cross-attention
    num_prototypes: int = 1000  # K text prototypes (a trained linear map of word embeddings)
    vocab_size: int = 5000  # V word tokens the prototypes are mapped from; 0: the full vocabulary
    d_ff: int = 128  # backbone output features kept per patch position for the flatten head
    dropout: float = 0.1  # dropout in patch embedding, reprogramming and head
    attn_dropout: float = 0.1  # attention-weight dropout of the encoder used without a backbone (not set by dropout)
    # --- prompt ---------------------------------------------------------------------------------
    prompt: bool = True  # prefix the prompt (description, task, window statistics)
    top_k_lags: int = 5  # lags named in the prompt ("top 5 lags are: ...")
    max_description_tokens: int = 16  # the dataset description is cut to this many tokens
    max_prompt_tokens: int = 96  # prompt tokens in all (description + task + statistics + classical text)
    # --- fusion with the classical members (docs/architecture.md, "The Time-LLM core") ------------------------
    reference_members: tuple[str, ...] = ("linear", "nlinear", "ets")  # classical members fed to the core
    classical_text: bool = True  # one prompt sentence per reference member (level, direction, agreement)
    references: bool = True  # reference tokens: each member's forecast, patched and embedded
    reference_skip: bool = True  # add a learned mix of the references to the head's output (start chosen on val)
    # --- training -------------------------------------------------------------------------------
    epochs: int = 10  # upper bound; early stopping usually ends sooner
    batch_size: int = 32  # training samples (one channel of one window each) per step
    eval_batch_size: int = 256  # samples per forward pass in validation and predict
    lr: float = 0.002  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW weight decay
    schedule: Schedule = "onecycle"  # onecycle | cosine | constant
    pct_start: float = 0.2  # onecycle: fraction of steps spent warming up
    grad_clip: float = 1.0  # max gradient norm; 0: no clipping
    patience: int = 3  # epochs without a better validation loss before stopping
    train_stride: int = 0  # step between training windows; 0: auto (1)
    max_train_windows: int = -1  # samples drawn per epoch (channel-windows); -1: auto (CPU 1024, GPU all); 0: all
    val_stride: int = 0  # step between validation windows; 0: auto (CPU 8, GPU 1)
    max_val_windows: int = -1  # validation samples (channel-windows); -1: auto (CPU 1024, GPU all); 0: all
    # --- budget (docs/architecture.md, "The Time-LLM core": the ladder of the selection fit) ---------------
    budget: Budget = "auto"  # auto: the selection fit climbs a ladder of budgets (ladder_*); fixed: as configured
    # plain: no references and no classical text, trained from scratch; period: the patch tied to the dominant period
    ladder_variants: tuple[str, ...] = LADDER_VARIANTS  # backbone[:plain][:period] at rung 0 (configured: core.backbone)
    ladder_samples: int = 128  # fused rung 0: max(this, max_train_windows // 4) samples; max_train_windows <= this: fixed
    ladder_epochs: int = 1  # epochs each fused rung-0 candidate trains (a plain one trains the schedule: epochs)
    ladder_growth: int = 4  # later rungs train max_train_windows samples an epoch, then this many times more a rung
    ladder_tol: float = 0.005  # relative validation gain a rung needs (rung 0: over the untrained start, later: the best)
    # a growth rung starts only if it and the fold fits and refits that would train its budget end within it
    max_minutes: float = -1.0  # the whole core, fold fits and refits included; -1: auto (CPU 15, GPU no limit); 0: none
    # --- runtime --------------------------------------------------------------------------------
    device: Device = "auto"  # auto | cpu | cuda
    cpu_bf16: bool = True  # bf16 autocast on CPU (always on CUDA)
    num_threads: int = 0  # torch CPU threads; 0: all cores
    progress: bool = True  # tqdm bar per epoch


VARIANT_FLAGS: dict[str, dict[str, Any]] = {
    "plain": {"references": False, "classical_text": False},  # no reference tokens, no classical text
    "period": {"patch_len": "auto"},  # the patch tied to the dominant period
}


def ladder_variant(config: CoreConfig, variant: str) -> tuple[str, CoreConfig]:
    """One ``core.ladder_variants`` entry as (label, config): ``backbone[:plain][:period]``.

    ``configured`` stands for ``core.backbone``. ``plain`` drops the reference
    tokens and the classical text (the core alone, trained from scratch);
    ``period`` ties the patch to the dominant period. The label names the
    backbone as resolved, then the flags (``none:plain:period``).
    """
    backbone, *flags = str(variant).split(":")
    unknown = [f for f in flags if f not in VARIANT_FLAGS]
    if not backbone or unknown or len(set(flags)) != len(flags):
        raise HybridInputError(
            f"core.ladder_variants: {variant!r} is not backbone[:plain][:period] (a backbone such as configured, none "
            f"or minilm, then optional flags from {sorted(VARIANT_FLAGS)}); fix that entry.")  # fmt: skip
    backbone = config.backbone if backbone == "configured" else backbone
    changes: dict[str, Any] = {"backbone": backbone}
    for f in flags:
        changes.update(VARIANT_FLAGS[f])
    return ":".join([backbone, *flags]), dataclasses.replace(config, **changes)
