"""Node levels: the residual-stream states of the graph, numbered bottom-up.

Level 0 holds the embeddings, level 2l+1 the state after layer l's attention and
level 2l+2 the state after its FFN, so a model of L layers has 2L+1 levels.
Every module that walks or names levels uses these functions (and Trace.state).
"""

from __future__ import annotations

KINDS = ("embedding", "attn", "ffn")


def n_levels(n_layers: int) -> int:
    return 2 * n_layers + 1


def level_of(kind: str, layer: int) -> int:
    """The level of node kind "embedding" | "attn" | "ffn" at a layer (the embedding's layer is ignored)."""
    return 0 if kind == "embedding" else 2 * layer + (1 if kind == "attn" else 2)


def layer_of(level: int) -> int:
    """The layer whose block wrote the state at a level; -1 for the embeddings."""
    return (level - 1) // 2


def kind_of(level: int) -> str:
    return "embedding" if level == 0 else ("attn" if level % 2 else "ffn")


def level_names(n_layers: int) -> tuple[str, ...]:
    """Row names: emb, L0 attn, L0 ffn, ..."""
    return ("emb", *(f"L{l} {k}" for l in range(n_layers) for k in ("attn", "ffn")))


UNIT_LETTERS = {"head": "H", "neuron": "N", "expert": "E"}


def unit_name(kind: str, layer: int, index: int) -> str:
    """How every page, table and title names a unit: L23.H4 is layer 23's head 4 (the layer rows' L23, the per-head
    heatmaps' H4), L5.N100 its neuron 100 (in a mixture-of-experts layer the virtual id: shares.neuron_label says which
    expert holds it), L1.E3 its expert 3."""
    return f"L{layer}.{UNIT_LETTERS[kind]}{index}"


def head_name(layer: int, head: int) -> str:
    return unit_name("head", layer, head)


def neuron_name(layer: int, neuron: int) -> str:
    return unit_name("neuron", layer, neuron)


BLOCK_NAMES = {"attn": "attn", "ffn": "FFN"}


def block_name(kind: str, layer: int) -> str:
    """How a whole block is named as a part that writes to the residual stream: L22.attn, L29.FFN (as L23.H4 names
    one of its heads). The state after it is a level, named by level_names ("L29 ffn")."""
    return f"L{layer}.{BLOCK_NAMES[kind]}"
