"""Declarative descriptions of where each model family keeps its parts.

The runner and the attribution engine only ever read these descriptions: they
never branch on a model's name or class. A family is data, in the spirit of
TransformerLens' architecture adapters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from lmtt.engine.norms import NormSpec

RMS, LAYER, GEMMA_RMS = NormSpec("rms"), NormSpec("layer"), NormSpec("rms", weight_offset=1.0)


@dataclass(frozen=True)
class Adapter:
    """Module paths of one family, relative to the causal-LM model.

    Paths inside a block are relative to it. `unembed` lists the modules
    applied after the final norm, in order; a path that resolves to None is
    skipped. Norms are named by role, not by module name: in Llama the module
    called `post_attention_layernorm` is the FFN's input norm, while in
    Gemma-2 it normalises the attention output before the residual add; only
    the latter is an `attn_post_norm` here. Config attributes (multipliers,
    scales, softcaps) are read at load time; one that a config lacks is off.
    """

    family: str
    blocks: str  # the ModuleList of decoder blocks
    attention: str  # the attention module (its q, k, v reach lmtt.engine.attention)
    out_proj: str  # W_O: its input is the heads' concatenated context
    down_proj: str  # a dense FFN's output projection: input = neuron activations
    final_norm: str
    unembed: tuple[str, ...] = ("lm_head",)
    norm: NormSpec = RMS  # the family's norm (every norm of a model is of one kind)
    conv1d: bool = False  # GPT-2 style Conv1D stores weights as (in, out)
    parallel_attr: str | None = None  # config attribute: attention and FFN in parallel
    parallel_default: bool = False
    attn_norm: str | None = "input_layernorm"  # the norm the attention reads through (None: it reads the state itself)
    # query/key norms inside the attention, applied to the projections before any rotary (a path that resolves to None: none)
    q_norm: str | None = None
    k_norm: str | None = None
    position_embedding: str | None = None  # learned absolute positions added to the token embedding (GPT-2, OPT)
    ffn: str = "mlp"  # the FFN module: its output is the FFN's update (a MoE block's too)
    ffn_norm: str | None = None  # the norm the FFN reads through (None: it reads the state itself)
    # a gated (GLU) dense FFN, act(gate) * up: its gate, up and activation modules (None: not gated). A gate equal
    # to the up path is one fused projection, the gate's rows first (Phi-3's gate_up_proj).
    glu_gate: str | None = None
    glu_up: str | None = None
    glu_act: str | None = None
    attn_post_norm: str | None = None  # a norm between the attention output and the residual add
    ffn_post_norm: str | None = None  # a norm between the FFN output and the residual add
    experts: str | None = None  # MoE: the experts module (run through lmtt.engine.experts); dense layers keep down_proj
    shared_expert: str | None = None  # MoE: a dense expert every token uses (its down_proj is `{shared_expert}.down_proj`)
    shared_expert_gate: str | None = None  # MoE: its sigmoid gate (one logit per token)
    residual_multiplier: str | None = None  # config attribute: each update is scaled before the residual add
    logit_multiplier: str | None = None  # config attribute: logits = logits * it
    logit_divisor: str | None = None  # config attribute: logits = logits / it
    logit_softcap: str | None = None  # config attribute: logits = cap * tanh(logits / cap)
    rejects: tuple[tuple[str, object, str], ...] = ()  # (config attr, bad value, why)


ADAPTERS: dict[str, Adapter] = {
    "gpt2": Adapter(
        family="gpt2",
        blocks="transformer.h",
        attention="attn",
        out_proj="attn.c_proj",
        down_proj="mlp.c_proj",
        final_norm="transformer.ln_f",
        norm=LAYER,
        conv1d=True,
        attn_norm="ln_1",
        position_embedding="transformer.wpe",
    ),
    "llama": Adapter(
        family="llama",
        blocks="model.layers",
        attention="self_attn",
        out_proj="self_attn.o_proj",
        down_proj="mlp.down_proj",
        final_norm="model.norm",
        q_norm="self_attn.q_norm",
        k_norm="self_attn.k_norm",
        ffn_norm="post_attention_layernorm",
        glu_gate="mlp.gate_proj",
        glu_up="mlp.up_proj",
        glu_act="mlp.act_fn",
    ),
    "gpt_neox": Adapter(
        family="gpt_neox",
        blocks="gpt_neox.layers",
        attention="attention",
        out_proj="attention.dense",
        down_proj="mlp.dense_4h_to_h",
        final_norm="gpt_neox.final_layer_norm",
        unembed=("embed_out", "lm_head"),
        norm=LAYER,
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
        norm=LAYER,
        attn_norm="self_attn_layer_norm",
        position_embedding="model.decoder.embed_positions",
        ffn="",
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
        norm=LAYER,
        q_norm="self_attn.q_layernorm",
        k_norm="self_attn.k_layernorm",
        parallel_default=True,
    ),
    "gptj": Adapter(
        family="gptj",
        blocks="transformer.h",
        attention="attn",
        out_proj="attn.out_proj",
        down_proj="mlp.fc_out",
        final_norm="transformer.ln_f",
        norm=LAYER,
        attn_norm="ln_1",
        parallel_default=True,
    ),
    "starcoder2": Adapter(
        family="starcoder2",
        blocks="model.layers",
        attention="self_attn",
        out_proj="self_attn.o_proj",
        down_proj="mlp.c_proj",
        final_norm="model.norm",
        norm=LAYER,
    ),
}
_LLAMA = ADAPTERS["llama"]
_POST_NORMS = {"attn_post_norm": "post_attention_layernorm", "ffn_post_norm": "post_feedforward_layernorm"}
_PRE_FFN = {"ffn_norm": "pre_feedforward_layernorm"}
_MOE = {"ffn": "mlp", "experts": "mlp.experts", "glu_gate": None, "glu_up": None, "glu_act": None}
_VARIANTS: dict[str, dict] = {
    # Same module layout as Llama: RoPE, RMSNorm, gated MLP, GQA (Qwen3: per-head q/k norms, inside the attention).
    **{family: {} for family in ("mistral", "qwen2", "qwen3", "smollm3")},
    # fused qkv_proj and gate_up_proj: the hooks sit after them (attention function, down_proj)
    "phi3": {"glu_gate": "mlp.gate_up_proj", "glu_up": "mlp.gate_up_proj", "glu_act": "mlp.activation_fn"},
    "gemma": {"norm": GEMMA_RMS},
    "gemma2": {"norm": GEMMA_RMS, **_POST_NORMS, **_PRE_FFN, "logit_softcap": "final_logit_softcapping"},
    "gemma3_text": {"norm": GEMMA_RMS, **_POST_NORMS, **_PRE_FFN, "logit_softcap": "final_logit_softcapping"},
    "olmo2": {**_POST_NORMS, "attn_norm": None, "ffn_norm": None},  # post-norms only: both sublayers read the state itself
    "granite": {"residual_multiplier": "residual_multiplier", "logit_divisor": "logits_scaling"},
    # parallel: the FFN reads the block input through the one input norm
    "cohere": {"norm": LAYER, "parallel_default": True, "logit_multiplier": "logit_scale", "ffn_norm": "input_layernorm"},
    "mixtral": _MOE,
    "olmoe": _MOE,
    "qwen3_moe": _MOE,
    "qwen2_moe": {**_MOE, "shared_expert": "mlp.shared_expert", "shared_expert_gate": "mlp.shared_expert_gate"},
    "gpt_oss": _MOE,
}
for _family, _changes in _VARIANTS.items():
    ADAPTERS[_family] = replace(_LLAMA, family=_family, **_changes)

# Families that open in transformers but cannot be decomposed exactly yet, and the missing piece.
REFUSED = {
    "bloom": "its attention adds ALiBi biases inside its own module instead of calling transformers' attention interface, "
    "so lmtt cannot record its queries and keys",
    "mpt": "its attention (ALiBi) does not call transformers' attention interface, so lmtt cannot record its queries and keys",
    "falcon": "its ALiBi variants and two-norm (new decoder) blocks have no adapter yet, so its parts are not mapped",
}


class UnsupportedModel(ValueError):
    """The model's family has no adapter, or a setting breaks the decomposition."""


def adapter_for(config) -> Adapter:
    """The adapter for a transformers config, checked against its settings."""
    adapter = ADAPTERS.get(config.model_type)
    if adapter is None:
        why = REFUSED.get(config.model_type, "no adapter describes where its parts live")
        raise UnsupportedModel(
            f"model family {config.model_type!r} cannot be decomposed: {why}. Supported: {', '.join(sorted(ADAPTERS))}"
        )
    for attr, bad, why in adapter.rejects:
        if getattr(config, attr, None) == bad:
            raise UnsupportedModel(f"{config.model_type} with {attr}={bad!r}: {why}")
    return adapter


def is_parallel(adapter: Adapter, config) -> bool:
    """Whether attention and FFN both read the block input (GPT-J/NeoX/Phi style)."""
    if adapter.parallel_attr is None:
        return adapter.parallel_default
    return bool(getattr(config, adapter.parallel_attr, adapter.parallel_default))


def config_value(config, attr: str | None) -> float | None:
    """A numeric config attribute named by an adapter, or None where it is unnamed, missing or None."""
    value = getattr(config, attr, None) if attr else None
    return None if value is None else float(value)


def resolve(root: nn.Module, path: str) -> nn.Module | None:
    """The module at a dotted path, or None where the path is empty or an attribute is missing or None."""
    if not path:
        return None
    module = root
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def linear_weight(module: nn.Module, conv1d: bool) -> torch.Tensor:
    """The weight as torch.nn.Linear lays it out: (out_features, in_features)."""
    return module.weight.T if conv1d else module.weight
