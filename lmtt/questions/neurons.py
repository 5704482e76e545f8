"""Neurons worth trusting: the parts of a gated (GLU) neuron at every position.

A GLU FFN computes, per neuron n, a_n = act(g_n) * u_n with g = W_gate h (the gate's
pre-activation) and u = W_up h (the up projection) of the FFN input h. The activation
a_n alone hides how it came about: a large |a_n| from a negative up projection and
an open gate means something else than one from a closed gate. GLUScope sorts
positions into sign quadrants of (g, u); here each position gets its quadrant, and
the neuron gets two summaries: the share of positions where the gate is open
(g > 0) and the mean |a_n| over positions.

The recomputed a_n is checked against the trace's recorded activations, so a
family that computes its FFN otherwise is refused with a message.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtt.engine.adapters import resolve
from lmtt.engine.levels import neuron_name
from lmtt.engine.runner import ModelRunner, Trace

TOLERANCE = 1e-4


class NeuronError(ValueError):
    """The FFN is not a dense GLU lmtt can take apart, or the neuron is out of range."""


@dataclass(frozen=True)
class NeuronProfile:
    """One GLU neuron at every position of the prompt (T tokens)."""

    layer: int
    neuron: int
    gate_pre: torch.Tensor  # (T,) g = W_gate h
    gate_act: torch.Tensor  # (T,) act(g)
    up: torch.Tensor  # (T,) u = W_up h
    product: torch.Tensor  # (T,) act(g) * u: the activation the down projection reads

    @property
    def quadrants(self) -> list[str]:
        """GLUScope's sign quadrant (gate, up) per position: '+ +', '+ -', '- +' or '- -'."""
        sign = lambda v: "+" if v > 0 else "-"  # noqa: E731
        return [f"{sign(g)} {sign(u)}" for g, u in zip(self.gate_pre.tolist(), self.up.tolist())]

    @property
    def active_share(self) -> float:
        """Share of positions where the gate is open (g > 0)."""
        return float((self.gate_pre > 0).float().mean())

    @property
    def mean_abs(self) -> float:
        return float(self.product.abs().mean())

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "neuron": self.neuron,
            "gate_pre": self.gate_pre.tolist(),
            "gate_act": self.gate_act.tolist(),
            "up": self.up.tolist(),
            "product": self.product.tolist(),
            "quadrants": self.quadrants,
            "active_share": self.active_share,
            "mean_abs": self.mean_abs,
        }


@torch.no_grad()
def neuron_profile(runner: ModelRunner, trace: Trace, layer: int, neuron: int) -> NeuronProfile:
    """Gate, act(gate), up and their product for one neuron at every position, in any gated (GLU) dense FFN.

    Where the FFN's modules live comes from the adapter (gate, up, activation, the norm it reads through), and the
    product is checked against the activation the model itself fed to its down-projection.
    """
    a = runner.adapter
    if not 0 <= layer < trace.n_layers:
        raise NeuronError(f"layer {layer} is out of range: the model has {trace.n_layers} layers")
    if runner.layer_weights[layer].n_experts:
        raise NeuronError(f"layer {layer}'s FFN is a mixture of experts: neuron profiles need a dense gated FFN")
    if a.glu_gate is None:
        raise NeuronError(f"neuron profiles need a gated (GLU) dense FFN, act(gate) * up; {a.family}'s FFN is not gated")
    block = runner.blocks[layer]
    gate_proj, up_proj, act_fn = (resolve(block, path) for path in (a.glu_gate, a.glu_up, a.glu_act))
    fused = a.glu_gate == a.glu_up  # one projection: the gate's rows, then the up's
    width = gate_proj.weight.shape[0] // (2 if fused else 1)
    if not 0 <= neuron < width:
        raise NeuronError(f"neuron {neuron} is out of range: layer {layer} has {width} neurons")
    norm = resolve(block, a.ffn_norm) if a.ffn_norm else None
    state = trace.resid[layer] if runner.parallel else trace.mid(layer)  # (T, d): what the FFN reads
    p = next(gate_proj.parameters())
    h = state.to(p.device, p.dtype) if norm is None else norm(state.to(p.device, p.dtype))  # (T, d) the FFN input

    def row(proj: torch.nn.Module, index: int) -> torch.Tensor:  # (T,) one output of a projection, float32
        out = (h @ proj.weight[index].to(h.dtype)).float()
        return out if proj.bias is None else out + proj.bias[index].float()

    g = row(gate_proj, neuron)  # (T,)
    u = row(up_proj, neuron + width if fused else neuron)  # (T,)
    act = act_fn(g)  # (T,)
    product = act * u
    recorded = trace.neuron_activation(layer, neuron)  # (T,)
    scale = float(recorded.abs().max().clamp_min(1.0))
    if float((product.cpu() - recorded.cpu()).abs().max()) > TOLERANCE * scale:
        raise NeuronError(f"the recomputed activation of neuron {neuron_name(layer, neuron)} differs from the model's: not a plain GLU")
    return NeuronProfile(layer, neuron, g.cpu(), act.cpu(), u.cpu(), product.cpu())


QUADRANTS = ("+ +", "+ -", "- +", "- -")


@dataclass(frozen=True)
class QuadrantStats:
    """One GLUScope sign quadrant (gate, up) of a neuron over a dataset: how often, its mean activation, its examples."""

    quadrant: str  # "+ +", "+ -", "- +" or "- -"
    count: int  # positions, over every prompt
    share: float  # of all positions
    mean_activation: float  # mean act(gate) * up over those positions (NaN where none)
    examples: list[tuple[float, int, int, str]]  # (activation, prompt index, position, token), largest |activation| first

    def to_dict(self) -> dict:
        rows = [{"activation": a, "prompt": p, "position": i, "token": t} for a, p, i, t in self.examples]
        return {"quadrant": self.quadrant, "count": self.count, "share": self.share, "mean_activation": self.mean_activation,
                "examples": rows}  # fmt: skip


def glu_quadrants(profiles: list[tuple[tuple[str, ...], NeuronProfile]], k: int = 5) -> list[QuadrantStats]:
    """The four quadrants of one neuron over prompts given as (tokens, profile): GLUScope's view of a dataset."""
    rows = [
        (q, float(a), p, i, tokens[i])
        for p, (tokens, profile) in enumerate(profiles)
        for i, (q, a) in enumerate(zip(profile.quadrants, profile.product.tolist()))
    ]
    total = max(len(rows), 1)
    out = []
    for quadrant in QUADRANTS:
        mine = [r for r in rows if r[0] == quadrant]
        mean = sum(r[1] for r in mine) / len(mine) if mine else float("nan")
        top = sorted(mine, key=lambda r: -abs(r[1]))[:k]
        out.append(QuadrantStats(quadrant, len(mine), len(mine) / total, mean, [(a, p, i, t) for _q, a, p, i, t in top]))
    return out
