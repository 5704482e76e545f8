"""Declarative descriptions of where each model family keeps its parts.

The runner and the attribution engine only ever read these descriptions: they
never branch on a model's name or class. A family is data, in the spirit of
TransformerLens' architecture adapters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Adapter:
    """Module paths of one family, relative to the causal-LM model.

    `{i}` in `block` stands for the layer index; the other paths inside a
    block are relative to it. `unembed` lists the modules applied after the
    final norm, in order; a path that resolves to None is skipped.
    """

    family: str
    blocks: str  # the ModuleList of decoder blocks
    attention: str  # the attention module (its q, k, v reach lmtt.attention)
    out_proj: str  # W_O: its input is the heads' concatenated context
    down_proj: str  # the FFN's output projection: input = neuron activations
    final_norm: str
    unembed: tuple[str, ...] = ("lm_head",)
    conv1d: bool = False  # GPT-2 style Conv1D stores weights as (in, out)
    parallel_attr: str | None = None  # config attribute: attention and FFN in parallel
    parallel_default: bool = False
    rejects: tuple[tuple[str, object, str], ...] = ()  # (config attr, bad value, why)


ADAPTERS: dict[str, Adapter] = {
    "gpt2": Adapter(
        family="gpt2",
        blocks="transformer.h",
        attention="attn",
        out_proj="attn.c_proj",
        down_proj="mlp.c_proj",
        final_norm="transformer.ln_f",
        conv1d=True,
    ),
    "llama": Adapter(
        family="llama",
        blocks="model.layers",
        attention="self_attn",
        out_proj="self_attn.o_proj",
        down_proj="mlp.down_proj",
        final_norm="model.norm",
    ),
    "gpt_neox": Adapter(
        family="gpt_neox",
        blocks="gpt_neox.layers",
        attention="attention",
        out_proj="attention.dense",
        down_proj="mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
        unembed=("embed_out", "lm_head"),
        parallel_attr="use_parallel_residual",
        parallel_default=True,
    ),
    "opt": Adapter(
        family="opt",
        blocks="model.decoder.layers",
        attention="self_attn",
        out_proj="self_attn.out_proj",
        down_proj="fc2",
        final_norm="model.decoder.final_layer_norm",
        unembed=("model.decoder.project_out", "lm_head"),
        rejects=(
            (
                "do_layer_norm_before",
                False,
                "post-norm OPT (e.g. opt-350m) normalises the residual stream after each block, so block updates do not add up",
            ),
        ),
    ),
    "phi": Adapter(
        family="phi",
        blocks="model.layers",
        attention="self_attn",
        out_proj="self_attn.dense",
        down_proj="mlp.fc2",
        final_norm="model.final_layernorm",
        parallel_default=True,
    ),
}
# Same module layout as Llama: RoPE, RMSNorm, gated MLP, GQA.
for _family in ("mistral", "qwen2", "gemma", "smollm3"):
    ADAPTERS[_family] = Adapter(**{**ADAPTERS["llama"].__dict__, "family": _family})


class UnsupportedModel(ValueError):
    """The model's family has no adapter, or a setting breaks the decomposition."""


def adapter_for(config) -> Adapter:
    """The adapter for a transformers config, checked against its settings."""
    adapter = ADAPTERS.get(config.model_type)
    if adapter is None:
        raise UnsupportedModel(f"model type {config.model_type!r} is not supported; supported: {', '.join(sorted(ADAPTERS))}")
    for attr, bad, why in adapter.rejects:
        if getattr(config, attr, None) == bad:
            raise UnsupportedModel(f"{config.model_type} with {attr}={bad!r}: {why}")
    return adapter


def is_parallel(adapter: Adapter, config) -> bool:
    """Whether attention and FFN both read the block input (GPT-J/NeoX/Phi style)."""
    if adapter.parallel_attr is None:
        return adapter.parallel_default
    return bool(getattr(config, adapter.parallel_attr, adapter.parallel_default))


def resolve(root: nn.Module, path: str) -> nn.Module | None:
    """The module at a dotted path, or None where an attribute is missing or None."""
    module = root
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def linear_weight(module: nn.Module, conv1d: bool) -> torch.Tensor:
    """The weight as torch.nn.Linear lays it out: (out_features, in_features)."""
    return module.weight.T if conv1d else module.weight
