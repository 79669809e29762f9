"""Tiny random-weight models of every supported family, built offline from a config in about a second.

They share the embedded SmolLM2 tokenizer (byte-level BPE), so tests tokenize real text; the Gemma 3 one
gets a copy that starts every sequence with BOS, as Gemma's tokenizer does.
"""

from __future__ import annotations

from pathlib import Path

import torch
import copy

from tokenizers.processors import TemplateProcessing
from transformers import (AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig, GPT2Config, GPTJConfig, GPTNeoXConfig,
                          LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase, Qwen2Config)

from locedit.files import checked_folder
from locedit.models.loading import embedded_gguf_path, prepare_model, prepare_tokenizer
from locedit.paths import cache_dir

N_LAYERS = 6
HIDDEN = 32
SLIDING_WINDOW = 3  # tiny Gemma 3: shorter than the test prompts, so its sliding-window layers see less


def _configs(vocab: int) -> dict:
    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return {
        "gpt2": lambda: GPT2Config(n_layer=N_LAYERS, n_embd=HIDDEN, n_head=4, n_positions=512, **common),
        "gptj": lambda: GPTJConfig(n_layer=N_LAYERS, n_embd=HIDDEN, n_head=4, rotary_dim=4, n_positions=512, **common),
        "gpt_neox": lambda: GPTNeoXConfig(num_hidden_layers=N_LAYERS, hidden_size=HIDDEN, num_attention_heads=4,
                                          intermediate_size=4 * HIDDEN, max_position_embeddings=512, **common),
        "llama": lambda: LlamaConfig(num_hidden_layers=N_LAYERS, hidden_size=HIDDEN, intermediate_size=3 * HIDDEN,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                     tie_word_embeddings=True, **common),
        "qwen2": lambda: Qwen2Config(num_hidden_layers=N_LAYERS, hidden_size=HIDDEN, intermediate_size=3 * HIDDEN,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **common),
        "gemma3": lambda: Gemma3TextConfig(num_hidden_layers=N_LAYERS, hidden_size=HIDDEN, intermediate_size=3 * HIDDEN,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                           query_pre_attn_scalar=8, max_position_embeddings=512,
                                           sliding_window=SLIDING_WINDOW, layer_types=_GEMMA3_LAYER_TYPES, **common),
    }


# Gemma-3-270M interleaves 5 sliding-window layers and 1 full-attention layer; the tiny one, 2 and 1.
_GEMMA3_LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention"] * (N_LAYERS // 3)


TINY_FAMILIES = tuple(_configs(0))


def embedded_tokenizer() -> PreTrainedTokenizerBase:
    """The SmolLM2 tokenizer, read from the GGUF once and cached as a checked tokenizer folder."""
    def extract(tmp: Path) -> None:
        gguf = embedded_gguf_path()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)

    folder = checked_folder(cache_dir("tokenizers", "smollm2-135m"), extract)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(folder))


def with_bos(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A copy of ``tok`` that puts its BOS before every sequence (when asked for special tokens)."""
    bos = copy.deepcopy(tok)
    bos.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", pair=f"{tok.bos_token} $A $B", special_tokens=[(tok.bos_token, tok.bos_token_id)]
    )
    return bos


def tiny(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A random-weight model of ``family`` (gpt2, gptj, gpt_neox, llama, qwen2, gemma3) and the shared tokenizer
    (with BOS for gemma3)."""
    tok = embedded_tokenizer()
    configs = _configs(len(tok))
    if family not in configs:
        raise ValueError(f"no tiny config for {family!r}; choose from {', '.join(configs)}")
    torch.manual_seed(seed)
    config = configs[family]()
    config.initializer_range = 0.2  # peakier next-token distributions than the default 0.02
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return prepare_model(model), with_bos(tok) if family == "gemma3" else tok
