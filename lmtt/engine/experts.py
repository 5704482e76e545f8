"""lmtt's mixture-of-experts implementation for transformers: the experts' neurons, recorded and editable.

Registered with transformers' ExpertsInterface as "lmtt". It computes what
transformers' batched experts forward computes, for the (token, expert) pairs
the router chose, and while a trace is recording it keeps each chosen expert's
hidden activations multiplied by the router weight. With those, the experts'
output is an exact sum over (expert, neuron) parts plus the router-weighted
down-projection biases:

    out_t = sum_{e in top-k(t)} w_te (W_down^e h_te + b^e) = sum_{e, n} (w_te h_ten) W_down^e[:, n] + sum_e w_te b^e.

Neuron ids are virtual: expert e's neuron n is e * N + n, so one (E * N, d)
matrix of value vectors serves every expert. Edits: an "expert" edit scales or
zeroes that expert's router weight; a "neuron" edit scales or zeroes one
expert neuron's activation.
"""

from __future__ import annotations

import torch

from lmtt.engine.attention import RECORDER

NAME = "lmtt"


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    """x (S, in) through per-row weights (S, out, in), or (S, in, out) when transposed -> (S, out)."""
    out = torch.bmm(x.unsqueeze(1), weight).squeeze(1) if transposed else torch.bmm(weight, x.unsqueeze(-1)).squeeze(-1)
    return out if bias is None else out + bias


def lmtt_experts(module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
    """hidden_states (T, d), top_k_index / top_k_weights (T, k) -> (T, d), with the experts' neurons recorded."""
    t, k = top_k_index.shape
    x = hidden_states.repeat_interleave(k, dim=0)  # (S, d), S = T * k
    expert = top_k_index.reshape(-1)  # (S,)
    weight = top_k_weights.reshape(-1).to(hidden_states.dtype)  # (S,)
    up_name = "gate_up_proj" if module.has_gate else "up_proj"
    up_bias = getattr(module, f"{up_name}_bias", None) if module.has_bias else None
    hidden = _linear(x, getattr(module, up_name)[expert], None if up_bias is None else up_bias[expert], module.is_transposed)
    hidden = module._apply_gate(hidden) if module.has_gate else module.act_fn(hidden)  # (S, N)
    rec = RECORDER.get()
    layer = None if rec is None else rec["experts_of"].get(id(module))
    if layer is not None and (edits := rec["edits"].get(("expert", layer))):
        weight = weight.clone()
        for e in edits:
            weight[expert == e.index] *= e.part_scale
    if layer is not None and (edits := rec["edits"].get(("neuron", layer))):
        hidden = hidden.clone()
        n = hidden.shape[1]
        for e in edits:
            if e.index < module.num_experts * n:
                hidden[expert == e.index // n, e.index % n] *= e.part_scale
    down_bias = module.down_proj_bias[expert] if module.has_bias else None
    out = _linear(hidden, module.down_proj[expert], down_bias, module.is_transposed)  # (S, d)
    if layer is not None:
        rec["expert_index"][layer] = top_k_index.detach().reshape(-1, rec["n_tokens"], k)[0]  # (T, k)
        rec["expert_weight"][layer] = weight.detach().float().reshape(-1, rec["n_tokens"], k)[0]  # (T, k)
        acts = (hidden * weight[:, None]).detach().float()  # (S, N): router-weighted activations
        rec["expert_acts"][layer] = acts.reshape(-1, rec["n_tokens"], k * acts.shape[1])[0]  # (T, k * N)
    return (out * weight[:, None]).view(t, k, -1).sum(1).to(hidden_states.dtype)


def value_vectors(module) -> torch.Tensor:
    """(E * N, d) float32: the value vector of expert e's neuron n in row e * N + n."""
    down = module.down_proj.detach().float()  # (E, d, N), or (E, N, d) when transposed
    if not module.is_transposed:
        down = down.transpose(1, 2)
    return down.reshape(-1, down.shape[-1])


def register() -> None:
    """Make "lmtt" a valid experts_implementation (idempotent)."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register(NAME, lmtt_experts)
