"""Where each model family keeps the modules locedit reads and edits.

Architecture support is data: one :class:`Family` entry per ``config.model_type``.
Adding a family means adding one entry here and one tiny-model config in
:mod:`locedit.models.tiny`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """Raised for a model whose ``config.model_type`` has no :class:`Family` entry."""


@dataclass(frozen=True)
class Family:
    """Module paths of one model family; ``{}`` stands for the layer index."""

    name: str
    model_types: tuple[str, ...]
    embed: str
    block: str
    mlp: str
    mlp_down: str
    attn: str
    final_norm: str
    unembed: str
    n_layers_attr: str
    down_proj_is_conv1d: bool = False  # GPT-2's Conv1D stores the weight as [in, out]

    def module(self, model: nn.Module, path: str, layer: int | None = None) -> nn.Module:
        name = path.format(layer) if layer is not None else path
        return model.get_submodule(name)

    def unembed_module(self, model: nn.Module) -> nn.Module:
        """The output projection to logits (resolved through HF, so renamed heads still work)."""
        return model.get_output_embeddings()

    def n_layers(self, model: nn.Module) -> int:
        return int(getattr(model.config, self.n_layers_attr))

    def block_name(self, layer: int) -> str:
        return self.block.format(layer)

    def mlp_name(self, layer: int) -> str:
        return self.mlp.format(layer)

    def down_name(self, layer: int) -> str:
        return self.mlp_down.format(layer)

    def site_name(self, kind: str, layer: int) -> str:
        """Module whose output is the ``kind`` state at ``layer``: mlp, attn or block (residual)."""
        paths = {"mlp": self.mlp, "attn": self.attn, "block": self.block}
        if kind not in paths:
            raise ValueError(f"unknown site kind {kind!r}; use one of {sorted(paths)}")
        return paths[kind].format(layer)

    def down_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        """The down-projection weight as a [d_model, d_mlp] view (output x input)."""
        w = self.module(model, self.mlp_down, layer).weight
        return w.T if self.down_proj_is_conv1d else w

    def down_update(self, delta: torch.Tensor) -> torch.Tensor:
        """Lay out a [d_model, d_mlp] update the way the stored weight is laid out."""
        return delta.T if self.down_proj_is_conv1d else delta


_LLAMA_LIKE = dict(
    embed="model.embed_tokens",
    block="model.layers.{}",
    mlp="model.layers.{}.mlp",
    mlp_down="model.layers.{}.mlp.down_proj",
    attn="model.layers.{}.self_attn",
    final_norm="model.norm",
    unembed="lm_head",
    n_layers_attr="num_hidden_layers",
)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="gpt2",
            model_types=("gpt2",),
            embed="transformer.wte",
            block="transformer.h.{}",
            mlp="transformer.h.{}.mlp",
            mlp_down="transformer.h.{}.mlp.c_proj",
            attn="transformer.h.{}.attn",
            final_norm="transformer.ln_f",
            unembed="lm_head",
            n_layers_attr="n_layer",
            down_proj_is_conv1d=True,
        ),
        Family(
            name="gptj",
            model_types=("gptj",),
            embed="transformer.wte",
            block="transformer.h.{}",
            mlp="transformer.h.{}.mlp",
            mlp_down="transformer.h.{}.mlp.fc_out",
            attn="transformer.h.{}.attn",
            final_norm="transformer.ln_f",
            unembed="lm_head",
            n_layers_attr="n_layer",
        ),
        Family(
            name="gpt_neox",
            model_types=("gpt_neox",),
            embed="gpt_neox.embed_in",
            block="gpt_neox.layers.{}",
            mlp="gpt_neox.layers.{}.mlp",
            mlp_down="gpt_neox.layers.{}.mlp.dense_4h_to_h",
            attn="gpt_neox.layers.{}.attention",
            final_norm="gpt_neox.final_layer_norm",
            unembed="lm_head",  # "embed_out" before transformers 5; see unembed_module
            n_layers_attr="num_hidden_layers",
        ),
        Family(name="llama", model_types=("llama", "mistral"), **_LLAMA_LIKE),
        Family(name="qwen2", model_types=("qwen2", "qwen3"), **_LLAMA_LIKE),
    )
}

_BY_MODEL_TYPE = {mt: f for f in FAMILIES.values() for mt in f.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_for(model_or_type: nn.Module | str) -> Family:
    """The :class:`Family` of a model (or of a ``config.model_type`` string)."""
    model_type = model_or_type if isinstance(model_or_type, str) else model_or_type.config.model_type
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"unsupported model family {model_type!r}; supported: {', '.join(supported_model_types())}"
            " (add a Family entry in locedit/models/families.py)"
        ) from None
