"""Model names that build random-weight models instead of loading weights, and one loader for every name.

- ``tiny:<family>``: a tiny model of a family of the table (:func:`locedit.models.tiny.tiny`), for tests.
- ``random:<preset>`` or ``random:<config.json>``: a model at a real model's dimensions with random weights,
  built directly on the target device, for speed and memory measurements of models whose weights cannot be
  fetched (``random:gptj-6b`` is GPT-J-6B's architecture, the paper's main model). It uses the embedded
  tokenizer; the vocabulary keeps the real model's size, so every token id the tokenizer makes is valid.

>>> model, tok = load_spec("tiny:gpt2")
>>> spec_n_layers("tiny:gpt2"), spec_n_layers("random:gptj-6b"), spec_n_layers("smollm2-135m")
(6, 28, None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPTJConfig, PretrainedConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from locedit.models.loading import load_model, parse_dtype, prepare_model
from locedit.models.tiny import N_LAYERS, TINY_FAMILIES, embedded_tokenizer, tiny

TINY_PREFIX = "tiny:"
RANDOM_PREFIX = "random:"

# The published architectures (their config.json on the hub), written out so that no download is needed.
RANDOM_PRESETS: dict[str, Callable[[], PretrainedConfig]] = {
    "gptj-6b": lambda: GPTJConfig(vocab_size=50400, n_positions=2048, n_embd=4096, n_layer=28, n_head=16,
                                  rotary_dim=64, bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=False),
    "gpt2-xl": lambda: GPT2Config(vocab_size=50257, n_positions=1024, n_embd=1600, n_layer=48, n_head=25),
}


def tiny_family(name: str) -> str | None:
    """``'llama'`` for ``'tiny:llama'``, else None."""
    return name[len(TINY_PREFIX):] if name.startswith(TINY_PREFIX) else None


def random_config(name: str) -> PretrainedConfig | None:
    """The config that ``random:<preset>`` or ``random:<config.json>`` names, else None (raises if unknown)."""
    if not name.startswith(RANDOM_PREFIX):
        return None
    what = name[len(RANDOM_PREFIX):]
    if what in RANDOM_PRESETS:
        return RANDOM_PRESETS[what]()
    path = Path(what).expanduser()
    if path.is_file():
        return AutoConfig.from_pretrained(str(path))
    raise ValueError(f"unknown random-weight model {name!r}: use random:<preset> ({', '.join(RANDOM_PRESETS)}) "
                     "or random:<path to a config.json>")


def spec_n_layers(name: str) -> int | None:
    """Blocks of a tiny or random model, from its config; None for a model that is loaded."""
    if tiny_family(name) is not None:
        return N_LAYERS
    config = random_config(name)
    return None if config is None else int(config.num_hidden_layers)


def check_spec(name: str) -> None:
    """Raise ValueError for a ``tiny:`` or ``random:`` name that names nothing (before any model work)."""
    family = tiny_family(name)
    if family is not None and family not in TINY_FAMILIES:
        raise ValueError(f"no tiny config for {family!r}; choose from {', '.join(TINY_FAMILIES)}")
    random_config(name)


def build_random(config: PretrainedConfig, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                 seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random-weight model of ``config``, initialised on ``device`` (no host copy of the weights)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=parse_dtype(dtype))
    return prepare_model(model), embedded_tokenizer()


def load_spec(name: str, device: str | torch.device = "cpu",
              dtype: str | torch.dtype = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Any model name: ``tiny:<family>`` (seed 0), ``random:...`` (seed 0), else :func:`load_model`."""
    family = tiny_family(name)
    if family is not None:
        model, tok = tiny(family, dtype=parse_dtype(dtype))
        return model.to(device), tok
    config = random_config(name)
    if config is not None:
        return build_random(config, device, dtype)
    return load_model(name, device=device, dtype=dtype)
