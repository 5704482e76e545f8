"""Reading states and updates in the vocabulary: logit lens and promoted tokens.

Also the finer contributions at one node: each head's share of an attention
node and each neuron's share of an FFN node, with the same proximity measure
as the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtt.attribution import attention_parts, head_values, proximity
from lmtt.runner import ModelRunner, Trace


@dataclass(frozen=True)
class TokenScore:
    token: str
    token_id: int
    score: float  # a probability for the logit lens, a logit for projections


@dataclass(frozen=True)
class Projection:
    """What a vector added to the residual stream pushes up and pushes down."""

    promoted: list[TokenScore]
    suppressed: list[TokenScore]


@dataclass(frozen=True)
class HeadContributions:
    """At attention node (layer, position): each head's share, and its share per source."""

    layer: int
    position: int
    heads: torch.Tensor  # (H,) sum over sources of c_ijh
    per_source: torch.Tensor  # (H, T) c_ijh for j <= i, zero beyond
    residual: float


@dataclass(frozen=True)
class NeuronContributions:
    """At FFN node (layer, position): the top neurons by contribution."""

    layer: int
    position: int
    neurons: torch.Tensor  # (k,) neuron indices, largest contribution first
    contributions: torch.Tensor  # (k,)
    activations: torch.Tensor  # (k,)
    residual: float


def top_tokens(runner: ModelRunner, scores: torch.Tensor, k: int, largest: bool = True) -> list[TokenScore]:
    vals, idx = scores.topk(min(k, scores.shape[-1]), largest=largest)
    return [TokenScore(runner.decode(i), i, v) for i, v in zip(idx.tolist(), vals.tolist())]


def logit_lens(runner: ModelRunner, state: torch.Tensor, k: int = 10, final_norm: bool = True) -> list[TokenScore]:
    """Top-k tokens and probabilities of a residual state (d,) read as if it were the last layer's."""
    probs = runner.unembed(state, final_norm=final_norm).softmax(-1)  # (V,)
    return top_tokens(runner, probs, k)


def project(runner: ModelRunner, vector: torch.Tensor, k: int = 10) -> Projection:
    """Tokens whose logits a residual update (d,) raises and lowers most."""
    logits = runner.unembed_direction(vector)  # (V,)
    return Projection(top_tokens(runner, logits, k), top_tokens(runner, logits, k, largest=False))


def head_contributions(runner: ModelRunner, trace: Trace, layer: int, position: int) -> HeadContributions:
    """Recomputes one query row of the attention attribution (cheap: T x H x d)."""
    hv = head_values(trace, runner.layer_weights[layer], layer)
    parts, resid = attention_parts(trace, layer, hv, slice(position, position + 1))  # (1, J, H), (1,)
    per_source = torch.zeros(trace.n_heads, trace.n_tokens)
    per_source[:, : position + 1] = parts[0].T.cpu()
    return HeadContributions(layer, position, per_source.sum(1), per_source, float(resid[0]))


def head_update(runner: ModelRunner, trace: Trace, layer: int, position: int, head: int) -> torch.Tensor:
    """(d,) what head `head` wrote at `position`: sum_j a_hij * v_j W_O^h."""
    w = runner.layer_weights[layer]
    v = trace.values[layer][: position + 1, w.kv_index[head]]  # (J, hd)
    a = trace.attention(layer, slice(position, position + 1), n_keys=position + 1)[head, 0]  # (J,)
    scale = trace.head_scale[layer][head] if trace.edits else 1.0  # an edited head writes less
    return scale * (a @ v) @ w.w_out[head]  # (d,)


def neuron_vector(runner: ModelRunner, trace: Trace, layer: int, position: int, neuron: int) -> torch.Tensor:
    """(d,) neuron's value vector scaled by its activation at `position`."""
    return trace.neuron_acts[layer][position, neuron] * runner.layer_weights[layer].w_down[neuron]


def neuron_contributions(runner: ModelRunner, trace: Trace, layer: int, position: int, k: int = 20) -> NeuronContributions:
    """Neuron shares of the state after the FFN, with the state after attention as the extra part."""
    w = runner.layer_weights[layer]
    acts = trace.neuron_acts[layer][position]  # (N,)
    parts = acts[:, None] * w.w_down  # (N, d)
    resid = trace.mid(layer, position)  # (d,)
    whole = trace.resid[layer + 1][position]  # (d,)
    prox = proximity(whole, torch.cat([parts, resid[None]]))  # (N + 1,)
    c = prox / prox.sum()
    vals, idx = c[:-1].topk(min(k, c.shape[0] - 1))
    return NeuronContributions(layer, position, idx.cpu(), vals.cpu(), acts[idx].cpu(), float(c[-1]))
