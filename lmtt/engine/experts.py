"""lmtt's mixture-of-experts implementation for transformers: the experts' neurons, recorded and editable.

Registered with transformers' ExpertsInterface as "lmtt". It computes what
transformers' experts forward computes, for the (token, expert) pairs the router
chose, grouped by expert, and while a trace is recording it keeps each chosen expert's
hidden activations multiplied by the router weight. With those, the experts'
output is an exact sum over (expert, neuron) parts plus the router-weighted
down-projection biases:

    out_t = sum_{e in top-k(t)} w_te (W_down^e h_te + b^e) = sum_{e, n} (w_te h_ten) W_down^e[:, n] + sum_e w_te b^e.

Neuron ids are virtual: expert e's neuron n is e * N + n, so one list of
(E * N, d) value vectors (lmtt.engine.values, views of the weights) serves every expert. Edits: an "expert" edit scales or
zeroes that expert's router weight; a "neuron" edit scales or zeroes one
expert neuron's activation.
"""

from __future__ import annotations

import torch

from lmtt.engine.attention import RECORDER

NAME = "lmtt"


def _project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    """x (n, in) through one expert's weight (out, in), or (in, out) when transposed -> (n, out).

    A transposed weight is laid out (out, in) first, one expert's matrix at a time: bf16 `x @ W` on an (in, out)
    matrix ran at 0.3 GFLOPS on a 2-core CPU without AVX-512 (torch 2.13), against 20 for the (out, in) layout.
    """
    out = x @ (weight.T.contiguous() if transposed else weight).T
    return out if bias is None else out + bias


def lmtt_experts(module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
    """hidden_states (T, d), top_k_index / top_k_weights (T, k) -> (T, d), with the experts' neurons recorded.

    Grouped: one matmul per expert over the (token, expert) pairs routed to it, reading the expert's weights
    where they are. Gathering a weight matrix per pair instead costs 235 MB per pair per layer on Mixtral.
    """
    t, k = top_k_index.shape
    expert = top_k_index.reshape(-1)  # (S,), S = T * k: pair s is (token s // k, its slot s % k)
    weight = top_k_weights.reshape(-1).to(hidden_states.dtype)  # (S,)
    rec = RECORDER.get()
    layer = None if rec is None else rec["experts_of"].get(id(module))
    if layer is not None and (edits := rec["edits"].get(("expert", layer))):
        weight = weight.clone()
        for e in edits:
            weight[expert == e.index] *= e.part_scale
    neuron_edits = rec["edits"].get(("neuron", layer), ()) if layer is not None else ()
    up_name = "gate_up_proj" if module.has_gate else "up_proj"
    up, down = getattr(module, up_name), module.down_proj  # (E, ., .) each
    up_bias = getattr(module, f"{up_name}_bias", None) if module.has_bias else None
    down_bias = module.down_proj_bias if module.has_bias else None
    out = hidden_states.new_zeros(t * k, hidden_states.shape[1])  # (S, d)
    hidden = None  # (S, N) every pair's activations, kept only while recording
    order = torch.argsort(expert, stable=True)  # (S,) pairs grouped by expert
    start = 0
    for e, n in enumerate(torch.bincount(expert, minlength=module.num_experts).tolist()):
        if n == 0:
            continue
        pairs = order[start : start + n]  # (n,)
        start += n
        h = _project(hidden_states[pairs // k], up[e], None if up_bias is None else up_bias[e], module.is_transposed)
        h = module._apply_gate(h) if module.has_gate else module.act_fn(h)  # (n, N)
        width = h.shape[1]
        for edit in neuron_edits:
            if edit.index < module.num_experts * width and edit.index // width == e:
                h[:, edit.index % width] *= edit.part_scale
        if layer is not None:
            hidden = h.new_empty(t * k, width) if hidden is None else hidden
            hidden[pairs] = h
        out[pairs] = _project(h, down[e], None if down_bias is None else down_bias[e], module.is_transposed)  # (n, d)
    if layer is not None:
        rec["expert_index"][layer] = top_k_index.detach().reshape(-1, rec["n_tokens"], k)[0]  # (T, k)
        rec["expert_weight"][layer] = weight.detach().float().reshape(-1, rec["n_tokens"], k)[0]  # (T, k)
        acts = (hidden * weight[:, None]).detach().float()  # (S, N): router-weighted activations
        rec["expert_acts"][layer] = acts.reshape(-1, rec["n_tokens"], k * acts.shape[1])[0]  # (T, k * N)
    return (out * weight[:, None]).view(t, k, -1).sum(1).to(hidden_states.dtype)


def value_vectors(module) -> list[torch.Tensor]:
    """E x (N, d): expert e's value vectors as rows, views of its down-projection in the model's dtype."""
    down = module.down_proj.detach()  # (E, d, N), or (E, N, d) when transposed
    return [down[e] if module.is_transposed else down[e].T for e in range(down.shape[0])]


def register() -> None:
    """Make "lmtt" a valid experts_implementation (idempotent)."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register(NAME, lmtt_experts)
