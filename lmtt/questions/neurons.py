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
    """Gate, act(gate), up and their product for one neuron at every position (Llama-layout GLU FFNs)."""
    if not 0 <= layer < trace.n_layers:
        raise NeuronError(f"layer {layer} is out of range: the model has {trace.n_layers} layers")
    block = runner.blocks[layer]
    mlp, norm = getattr(block, "mlp", None), getattr(block, "post_attention_layernorm", None)
    parts = [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "act_fn")]
    if norm is None or any(p is None for p in parts) or runner.parallel:
        family = runner.adapter.family
        raise NeuronError(f"neuron profiles need a dense gated FFN after post_attention_layernorm (Llama layout); {family} differs")
    gate_proj, up_proj, act_fn = parts
    width = gate_proj.weight.shape[0]
    if not 0 <= neuron < width:
        raise NeuronError(f"neuron {neuron} is out of range: layer {layer} has {width} neurons")
    h = norm(trace.mid(layer).to(runner.device, norm.weight.dtype))  # (T, d) the FFN input
    g = (h @ gate_proj.weight[neuron].to(h.dtype)).float()  # (T,)
    if gate_proj.bias is not None:
        g = g + gate_proj.bias[neuron].float()
    u = (h @ up_proj.weight[neuron].to(h.dtype)).float()  # (T,)
    if up_proj.bias is not None:
        u = u + up_proj.bias[neuron].float()
    a = act_fn(g)  # (T,)
    product = a * u
    recorded = trace.neuron_activation(layer, neuron)  # (T,)
    scale = float(recorded.abs().max().clamp_min(1.0))
    if float((product.cpu() - recorded.cpu()).abs().max()) > TOLERANCE * scale:
        raise NeuronError(f"the recomputed activation of neuron {layer}.{neuron} differs from the model's: not a plain GLU")
    return NeuronProfile(layer, neuron, g.cpu(), a.cpu(), u.cpu(), product.cpu())
