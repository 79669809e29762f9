"""Where each model family keeps the modules locedit reads and edits, and the sites it intervenes on.

Architecture support is data: one :class:`Family` entry per ``config.model_type``.
Adding a family means adding one entry here and one tiny-model config in
:mod:`locedit.models.tiny`.

A :class:`Site` names an activation as pyvene does: a module path, the module's input or output, and
the config attribute that gives its width. :data:`SITES` lays out every site in terms of a family's
module paths, so ``family.site("mlp_down_input", 5)`` is the ROME key entering layer 5's down
projection for any family. :mod:`locedit.models.interventions` reads and changes sites.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

Position = Literal["input", "output"]


class UnsupportedModelError(ValueError):
    """Raised for a model whose ``config.model_type`` has no :class:`Family` entry."""


class UnknownSiteError(ValueError):
    """Raised for a site name that :data:`SITES` does not define."""


@dataclass(frozen=True)
class Site:
    """An activation: the ``position`` (input or output) of the module at ``module`` (``{}``: the layer).

    ``width`` lists config attributes, the first one set giving the activation's last dimension
    (``"attr*k"`` multiplies it by ``k``). A layered site names one module once bound by :meth:`at`.
    """

    name: str
    module: str
    position: Position
    width: tuple[str, ...]
    layer: int | None = None

    def at(self, layer: int) -> Site:
        """This site at block ``layer``."""
        if "{}" not in self.module:
            raise ValueError(f"site {self.name} ({self.module}) has no layer")
        return replace(self, layer=int(layer))

    @property
    def path(self) -> str:
        """The module path of this (bound) site."""
        if "{}" not in self.module:
            return self.module
        if self.layer is None:
            raise ValueError(f"site {self.name} ({self.module}) needs a layer: use site.at(layer)")
        return self.module.format(self.layer)

    def width_of(self, config: Any) -> int:
        """The activation's last dimension for a model with this ``config``."""
        for spec in self.width:
            attr, _, factor = spec.partition("*")
            value = getattr(config, attr, None)
            if value is not None:
                return int(value) * int(factor or 1)
        raise ValueError(f"the model config sets none of {', '.join(self.width)} (the width of site {self})")

    def __str__(self) -> str:
        where = self.name if self.layer is None else f"{self.name}[{self.layer}]"
        module = self.module if "{}" in self.module and self.layer is None else self.path
        return f"{where} ({self.position} of {module})"


# Every site, as (the Family field holding its module path, input or output, the Family field holding its width).
SITES: dict[str, tuple[str, Position, str]] = {
    "embed_output": ("embed", "output", "hidden_width"),  # token embeddings (before any position embedding)
    "block_input": ("block", "input", "hidden_width"),  # the residual stream entering block l
    "block_output": ("block", "output", "hidden_width"),  # the residual stream leaving block l
    "attn_output": ("attn", "output", "hidden_width"),
    "mlp_output": ("mlp", "output", "hidden_width"),
    "mlp_down_input": ("mlp_down", "input", "mlp_width"),  # the MLP key k of ROME and MEMIT
    "mlp_down_output": ("mlp_down", "output", "hidden_width"),  # the MLP value v
}


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
    hidden_width: tuple[str, ...] = ("hidden_size",)
    mlp_width: tuple[str, ...] = ("intermediate_size",)
    down_proj_is_conv1d: bool = False  # GPT-2's Conv1D stores the weight as [in, out]
    mlp_post_norm: str | None = None  # the RMS norm between the MLP output and the residual add, if any

    def post_norm(self, model: nn.Module, layer: int) -> nn.Module | None:
        """The norm applied to layer ``layer``'s MLP output before the residual add (None: the output is added)."""
        return None if self.mlp_post_norm is None else self.module(model, self.mlp_post_norm, layer)

    def module(self, model: nn.Module, path: str, layer: int | None = None) -> nn.Module:
        name = path.format(layer) if layer is not None else path
        return model.get_submodule(name)

    def unembed_module(self, model: nn.Module) -> nn.Module:
        """The output projection to logits (resolved through HF, so renamed heads still work)."""
        return model.get_output_embeddings()

    def n_layers(self, model: nn.Module) -> int:
        return int(getattr(model.config, self.n_layers_attr))

    def down_name(self, layer: int) -> str:
        return self.mlp_down.format(layer)

    def site(self, name: str, layer: int | None = None) -> Site:
        """The site ``name`` of :data:`SITES` in this family (at ``layer`` when given)."""
        if name not in SITES:
            raise UnknownSiteError(f"unknown site {name!r}; use one of {', '.join(SITES)}")
        path_field, position, width_field = SITES[name]
        site = Site(name, getattr(self, path_field), position, getattr(self, width_field))
        return site if layer is None else site.at(layer)

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
            mlp_width=("n_inner", "n_embd*4"),
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
            mlp_width=("n_inner", "n_embd*4"),
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
        # Gemma 3 (text-only): the same paths; its attention and MLP outputs pass a post-norm before the
        # residual add, so attn_output and mlp_output are the un-normed module outputs, and MEMIT maps its
        # residual-stream updates through the MLP's post-norm (docs/algorithms.md#memit).
        Family(name="gemma3", model_types=("gemma3_text",), **_LLAMA_LIKE,
               mlp_post_norm="model.layers.{}.post_feedforward_layernorm"),
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
