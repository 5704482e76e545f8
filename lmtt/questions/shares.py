"""The finer contributions at one node: each head's share of an attention node, each neuron's (or expert's)
share of an FFN node, with the graph's proximity measure; and the parts they are shares of.

A node's residual share means one thing in every view: the weight of the graph's residual edge into it.
Heads split the attention edges exactly as the graph does. Neurons and experts split the FFN edge's weight,
in proportion to their proximities to the node's state, so they sum to the graph's FFN edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtt.engine.adapters import resolve
from lmtt.engine.attribution import attention_parts, ffn_parts, head_parts, head_values, proximity
from lmtt.engine.levels import neuron_name
from lmtt.engine.runner import ModelRunner, Trace


@dataclass(frozen=True)
class HeadContributions:
    """At attention node (layer, position): each head's share, and its share per source.

    For a parallel block the node is the block's output, and the FFN's share completes the sum to 1.
    """

    layer: int
    position: int
    heads: torch.Tensor  # (H,) sum over sources of c_ijh
    per_source: torch.Tensor  # (H, T) c_ijh for j <= i, zero beyond
    residual: float
    ffn: float | None = None  # a parallel block's FFN share of the same node


@dataclass(frozen=True)
class NeuronContributions:
    """At FFN node (layer, position): the top neurons by contribution (shares of the graph's FFN edge; see the module docstring)."""

    layer: int
    position: int
    neurons: torch.Tensor  # (k,) neuron indices, largest contribution first
    contributions: torch.Tensor  # (k,)
    activations: torch.Tensor  # (k,)
    residual: float


@dataclass(frozen=True)
class ExpertContributions:
    """At a mixture-of-experts FFN node (layer, position): each chosen expert's share, with its router weight.

    The parts are each chosen expert's update (its neurons and its router-weighted bias, as the
    residual received them) and the shared expert's; they split the graph's FFN edge (module docstring).
    """

    layer: int
    position: int
    experts: torch.Tensor  # (k,) expert indices, in the router's order
    router_weights: torch.Tensor  # (k,)
    contributions: torch.Tensor  # (k,)
    shared: float | None  # the shared expert's share, where the layer has one
    residual: float


def neuron_label(runner: ModelRunner, layer: int, neuron: int) -> str:
    """'L3.N12', or 'L3.N1036 (expert 4 · neuron 12)' / 'L3.N2060 (shared · neuron 5)' for a mixture-of-experts
    layer's virtual id."""
    w = runner.layer_weights[layer]
    routed = w.n_experts * w.expert_width
    name = neuron_name(layer, neuron)
    if w.n_experts == 0:
        return name
    if neuron < routed:
        return f"{name} (expert {neuron // w.expert_width} · neuron {neuron % w.expert_width})"
    return f"{name} (shared · neuron {neuron - routed})"


def expert_contributions(runner: ModelRunner, trace: Trace, layer: int, position: int) -> ExpertContributions:
    """Proximity shares of the state after the FFN among the chosen experts (one forward pass's records)."""
    w = runner.layer_weights[layer]
    if w.n_experts == 0:
        raise ValueError(f"layer {layer} has a dense FFN, not experts")
    ids, _acts, parts = neuron_parts(runner, trace, layer, position)  # (M,), (M,), (M, d)
    chosen = trace.expert_index[layer][position].long()  # (k,)
    owner = torch.where(ids < w.n_experts * w.expert_width, ids // max(w.expert_width, 1), -1)  # (M,): -1 = shared
    updates = [parts[owner == e].sum(0) for e in chosen.tolist()]  # k x (d,)
    moe = resolve(runner.blocks[layer], runner.adapter.experts)
    if moe.has_bias:  # each expert's router-weighted output bias belongs to it
        bias = trace.expert_weight[layer][position][:, None] * moe.down_proj_bias.detach().float()[chosen]  # (k, d)
        updates = [u + trace.received("ffn", layer, b, position) for u, b in zip(updates, bias)]
    has_shared = bool((owner == -1).any())
    if has_shared:
        updates.append(parts[owner == -1].sum(0))
    residual, c = _split_ffn_edge(runner, trace, layer, position, torch.stack(updates))  # (k [+1],)
    k = chosen.shape[0]
    shared = float(c[k]) if has_shared else None
    return ExpertContributions(layer, position, chosen.cpu(), trace.expert_weight[layer][position].cpu(), c[:k].cpu(), shared, residual)


def ffn_edge_weights(runner: ModelRunner, trace: Trace, layer: int, position: int) -> tuple[float, float]:
    """(residual, FFN): the graph's two edge weights into the FFN node (layer, position)."""
    if trace.parallel:  # split together with the block's heads
        hv = head_values(trace, runner.layer_weights[layer], layer)
        _, resid, ffn = attention_parts(trace, layer, hv, slice(position, position + 1))
        return float(resid[0]), float(ffn[0])
    resid, ffn = ffn_parts(trace, layer)  # (T,) each: O(T d)
    return float(resid[position]), float(ffn[position])


def _split_ffn_edge(runner: ModelRunner, trace: Trace, layer: int, position: int, parts: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(the residual edge's weight, (P,) the FFN edge's weight split in proportion to the parts' proximities)."""
    residual, ffn = ffn_edge_weights(runner, trace, layer, position)
    prox = proximity(trace.resid[layer + 1][position], parts)  # (P,)
    return residual, ffn * prox / prox.sum()


def head_contributions(runner: ModelRunner, trace: Trace, layer: int, position: int) -> HeadContributions:
    """Recomputes one query row of the attention attribution (cheap: T x H x d)."""
    hv = head_values(trace, runner.layer_weights[layer], layer)
    parts, resid, ffn = attention_parts(trace, layer, hv, slice(position, position + 1))  # (1, J, H), (1,), (1,) or None
    per_source = torch.zeros(trace.n_heads, trace.n_tokens)
    per_source[:, : position + 1] = parts[0].T.cpu()
    return HeadContributions(layer, position, per_source.sum(1), per_source, float(resid[0]), None if ffn is None else float(ffn[0]))


def head_source_parts(runner: ModelRunner, trace: Trace, layer: int, position: int, heads: slice = slice(None)) -> torch.Tensor:
    """(J, H, d) each (source, head) part at `position` (of the heads asked for), as the residual received it.

    a_hij * v_j W_O^h, mapped. Summed over every head, with the attention bias (and a post-norm's bias)
    added, they give trace.attn_out[layer][position].
    """
    parts = head_parts(trace, runner.layer_weights[layer], layer, position, heads)  # (J, H, d)
    return trace.received("attn", layer, parts, position)


def head_update(runner: ModelRunner, trace: Trace, layer: int, position: int, head: int) -> torch.Tensor:
    """(d,) what head `head` wrote at `position`, as the residual received it: sum_j a_hij * v_j W_O^h."""
    return head_source_parts(runner, trace, layer, position, slice(head, head + 1))[:, 0].sum(0)


def neuron_vector(runner: ModelRunner, trace: Trace, layer: int, position: int, neuron: int) -> torch.Tensor:
    """(d,) neuron's value vector scaled by its activation at `position`, as the residual received it."""
    ids, acts = trace.neurons(layer, position)
    act = acts[ids == neuron].sum()  # 0 where the neuron's expert was not chosen
    return trace.received("ffn", layer, act * runner.layer_weights[layer].w_down[neuron].to(act.device), position)


def neuron_parts(runner: ModelRunner, trace: Trace, layer: int, position: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids (M,), acts (M,), parts (M, d)): every neuron's part of the FFN update at a position, as received.

    With trace.ffn_bias (mapped) and a post-norm's bias, the parts sum to trace.ffn_out[layer][position].
    """
    ids, acts = trace.neurons(layer, position)
    parts = acts[:, None] * runner.layer_weights[layer].w_down[ids].to(acts.device)  # (M, d)
    return ids, acts, trace.received("ffn", layer, parts, position)


def neuron_contributions(runner: ModelRunner, trace: Trace, layer: int, position: int, k: int = 20) -> NeuronContributions:
    """Neuron shares of the graph's FFN edge into (layer, position), and the residual edge's weight (module docstring)."""
    ids, acts, parts = neuron_parts(runner, trace, layer, position)  # (M,), (M,), (M, d)
    residual, c = _split_ffn_edge(runner, trace, layer, position, parts)  # (M,)
    vals, idx = c.topk(min(k, c.shape[0]))
    return NeuronContributions(layer, position, ids[idx].cpu(), vals.cpu(), acts[idx].cpu(), residual)
