"""QK attribution: why a head attends from query i to key j.

The pre-softmax score is s_ij = scale * q_i . k_j with q_i = R_i (W_Q n_i + b_Q) and
k_j = R_j (W_K n_j + b_K), n = the block's input norm of the residual x, R_i the rotary
embedding at position i (a rotation: linear). With the input norm's scale frozen at each
position (lmtt.engine.norms), n_i = s_i g ⊙ P x_i + beta is affine in x_i, and x_i is the sum of
the embedding and every earlier attention and FFN update. So

    q_i = sum_a R_i W_Q (s_i g ⊙ P z_a) + R_i (W_Q beta + b_Q)      (one query part per component a, plus a bias part)

and likewise k_j, and s_ij = sum_{a, b} scale * q_i^a . k_j^b exactly: a (query part) x
(key part) table that sums to the score. The map is checked against the recorded queries
and keys of the trace, so a family whose attention does something else (no RoPE on some
layers, q/k norms) is refused with a message rather than explained wrongly.

Supported: families with the Llama layout (input_layernorm, self_attn.q_proj / k_proj,
model.rotary_emb): Llama, Mistral, Qwen2, Gemma, SmolLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtt.engine.norms import freeze
from lmtt.engine.runner import ModelRunner, Trace

TOLERANCE = 1e-3  # relative: the rebuilt query/key against the recorded one


class QKError(ValueError):
    """The model's attention cannot be decomposed this way, or the indices are out of range."""


@dataclass(frozen=True)
class QKAttribution:
    """Score of (layer, head) from `query` to `key`, split into (query part, key part) pairs (scale applied)."""

    layer: int
    head: int
    query: int
    key: int
    parts: tuple[str, ...]  # P names: emb, attn L0, ffn L0, ..., bias
    pairs: torch.Tensor  # (P, P) [query part, key part]
    score: float  # the recorded pre-softmax score scale * q . k (before the mask and any attention softcap)

    @property
    def query_parts(self) -> torch.Tensor:
        """(P,) each query part's total over key parts."""
        return self.pairs.sum(1)

    @property
    def key_parts(self) -> torch.Tensor:
        return self.pairs.sum(0)

    def top(self, k: int = 10) -> list[tuple[str, str, float]]:
        flat = self.pairs.flatten()
        idx = flat.abs().topk(min(k, flat.numel())).indices.tolist()
        p = len(self.parts)
        return [(self.parts[i // p], self.parts[i % p], float(flat[i])) for i in idx]

    def to_dict(self, k: int = 10) -> dict:
        return {
            "layer": self.layer,
            "head": self.head,
            "query": self.query,
            "key": self.key,
            "score": self.score,
            "sum_of_pairs": float(self.pairs.sum()),
            "parts": list(self.parts),
            "pairs": self.pairs.tolist(),
            "top_pairs": [{"query_part": a, "key_part": b, "value": v} for a, b, v in self.top(k)],
        }


def _modules(runner: ModelRunner, layer: int):
    block = runner.blocks[layer]
    norm = getattr(block, "input_layernorm", None)
    attn = getattr(block, "self_attn", None)
    rotary = getattr(getattr(runner.model, "model", None), "rotary_emb", None)
    if norm is None or attn is None or not hasattr(attn, "q_proj") or rotary is None or runner.parallel:
        family = runner.adapter.family
        raise QKError(f"QK attribution needs the Llama layout (input_layernorm, q_proj, k_proj, rotary_emb); {family} differs")
    return norm, attn, rotary


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


@torch.no_grad()
def qk_attribution(runner: ModelRunner, trace: Trace, layer: int, head: int, query: int, key: int) -> QKAttribution:
    """The (query part x key part) table of one attention score; see the module docstring."""
    t = trace.n_tokens
    if not 0 <= layer < trace.n_layers or not 0 <= head < trace.n_heads:
        raise QKError(f"head {layer}.{head} is out of range: {trace.n_layers} layers of {trace.n_heads} heads")
    if not 0 <= key <= query < t:
        raise QKError(f"need 0 <= key <= query < {t} (attention is causal), got query {query}, key {key}")
    norm, attn, rotary = _modules(runner, layer)
    dev, hd = runner.device, runner.head_dim
    names = ("emb", *(f"{k} L{l}" for l in range(layer) for k in ("attn", "ffn")), "bias")
    positions = torch.tensor([query, key])

    def parts_at(pos: int) -> torch.Tensor:  # (P-1, d) the components of resid[layer][pos]
        rows = [trace.resid[0][pos]]
        for l in range(layer):
            rows += [trace.attn_out[l][pos], trace.ffn_out[l][pos]]
        return torch.stack(rows).to(dev)

    x = trace.resid[layer][positions].to(dev)  # (2, d)
    frozen = freeze(norm, runner.adapter.norm, x, norm(x.to(norm.weight.dtype)).float())  # every norm of a family is one kind
    try:
        cos, sin = rotary(x[None], torch.arange(t, device=dev)[None])  # (1, T, hd) each
    except TypeError as e:  # a rotary embedding with another signature (per-layer types: Gemma-3)
        raise QKError(f"QK attribution does not know this model's rotary embedding ({e})") from None
    if cos.shape[-1] != hd:  # another rotation scheme (GPT-OSS rotates halves with half-width tables)
        raise QKError(f"QK attribution does not know this model's rotary embedding (tables of width {cos.shape[-1]}, heads of {hd})")
    kv = int(trace.kv_index[head])
    out = []
    for which, (pos, proj, unit) in enumerate(((query, attn.q_proj, head), (key, attn.k_proj, kv))):
        w = proj.weight.detach()[unit * hd : (unit + 1) * hd].float()  # (hd, d): this head's rows only
        b = torch.zeros(hd, device=dev) if proj.bias is None else proj.bias.detach()[unit * hd : (unit + 1) * hd].float()
        parts = parts_at(pos)  # (P-1, d)
        lin = frozen.linear(parts, which)  # (P-1, d): s g ⊙ P z
        beta = torch.zeros_like(x[0]) if frozen.bias is None else frozen.bias.to(dev)
        vecs = torch.cat([lin @ w.T, (beta @ w.T + b)[None]])  # (P, hd) before RoPE
        c, s = cos[0, pos].float(), sin[0, pos].float()  # (hd,)
        rotated = vecs * c + _rotate_half(vecs) * s  # (P, hd)
        recorded = (trace.queries[layer][head, pos] if which == 0 else trace.keys[layer][kv, pos]).to(dev)  # (hd,)
        err = float((rotated.sum(0) - recorded).norm() / recorded.norm().clamp_min(1e-6))
        if err > TOLERANCE:
            side = "query" if which == 0 else "key"
            raise QKError(f"the rebuilt {side} differs from the model's by {err:.2g} (relative) at layer {layer}")
        out.append(rotated)
    scale = trace.scales[layer]
    pairs = scale * out[0] @ out[1].T  # (P, P)
    score = scale * float(trace.queries[layer][head, query] @ trace.keys[layer][kv, key])
    return QKAttribution(layer, head, query, key, names, pairs.cpu(), score)
