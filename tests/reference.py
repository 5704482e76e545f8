"""A plain reference implementation of the attribution: every part materialised.

It reads the projection weights from the modules itself, loops over queries
in Python and builds each part z_ijh = a_hij * v_j W_O^h explicitly. Where a
norm sits after the attention (Gemma-2/3, OLMo-2) it computes that norm's
scale at query i from the textbook formula, sqrt(mean((P o_i)^2) + eps) of the
raw attention output o_i, and maps each part through it; a residual
multiplier (Granite) scales each part. The attention weights are the model's
own, from transformers' eager attention (softcaps and sinks included), not
lmtt's recomputation. It is slow and only for small T; the fast engine must
match it to 1e-5.
"""

from __future__ import annotations

import torch

from lmtt.engine.adapters import linear_weight, resolve
from lmtt.engine.runner import ModelRunner, Trace

EPS = 1e-5


def l1(x: torch.Tensor) -> torch.Tensor:
    return x.abs().sum(-1)


def post_map(runner: ModelRunner, layer: int, raw: torch.Tensor):
    """The map from a raw attention part to what the residual receives at the query whose raw output is `raw` (d,)."""
    a = runner.adapter
    m = getattr(runner.model.config, a.residual_multiplier, 1.0) if a.residual_multiplier else 1.0
    if not a.attn_post_norm:
        return lambda z: z * m
    norm = resolve(runner.blocks[layer], a.attn_post_norm)
    center = a.norm.kind == "layer"
    eps = getattr(norm, "eps", None) or norm.variance_epsilon
    gain = norm.weight.detach().double() + a.norm.weight_offset
    p = raw - raw.mean() if center else raw
    scale = 1.0 / torch.sqrt((p * p).mean() + eps)
    return lambda z: m * scale * gain * ((z - z.mean(-1, keepdim=True)) if center else z)


def eager_weights(runner: ModelRunner, trace: Trace) -> list[torch.Tensor]:
    """L x (H, T, T) the model's own attention weights (an unedited trace), from transformers' eager attention."""
    from lmtt.engine.check import eager_forward

    assert not trace.edits, "the oracle explains unedited passes"
    return [a[0].double() for a in eager_forward(runner, trace.token_ids).attentions]


def attention_parts(runner: ModelRunner, trace: Trace, layer: int, i: int, weights: torch.Tensor) -> torch.Tensor:
    """(i+1, H, d) every part z_ijh at query i, built head by head, as the residual received it; weights (H, T, T)."""
    block = runner.blocks[layer]
    out_proj = resolve(block, runner.adapter.out_proj)
    w_o = linear_weight(out_proj, runner.adapter.conv1d).detach().double()  # (d, H*hd)
    n_heads, hd = trace.n_heads, runner.head_dim
    group = n_heads // trace.values[layer].shape[1]
    parts = torch.zeros(i + 1, n_heads, w_o.shape[0], dtype=torch.float64)
    for h in range(n_heads):
        w_h = w_o[:, h * hd : (h + 1) * hd]  # (d, hd)
        for j in range(i + 1):
            v = trace.values[layer][j, h // group].double()  # (hd,)
            parts[j, h] = weights[h, i, j] * (w_h @ v)
    bias = out_proj.bias.detach().double() if out_proj.bias is not None else 0.0
    return post_map(runner, layer, parts.sum((0, 1)) + bias)(parts)


def contributions(runner: ModelRunner, trace: Trace, renorm_threshold: float | None = None):
    """(attn_edges, attn_resid, ffn_resid, ffn) as in lmtt.engine.attribution.Contributions, in float64.

    A parallel block (attention and FFN read the block input) is one node: its output y is split among the
    residual, every head part and the FFN update together; ffn_resid stays zero.
    """
    n_layers, t = trace.n_layers, trace.n_tokens
    attn_edges = torch.zeros(n_layers, t, t, dtype=torch.float64)
    attn_resid = torch.zeros(n_layers, t, dtype=torch.float64)
    ffn_resid = torch.zeros(n_layers, t, dtype=torch.float64)
    ffn = torch.zeros(n_layers, t, dtype=torch.float64)
    weights = eager_weights(runner, trace)
    for layer in range(n_layers):
        for i in range(t):
            x = trace.resid[layer][i].double()
            f = trace.ffn_out[layer][i].double()
            # a parallel block's output is one node: its residual, head parts and FFN update split it together
            y = trace.resid[layer + 1][i].double() if runner.parallel else x + trace.attn_out[layer][i].double()
            parts = attention_parts(runner, trace, layer, i, weights[layer])  # (i+1, H, d)
            prox_heads = (l1(y) - l1(y - parts)).clamp_min(EPS)  # (i+1, H)
            singles = [x, f] if runner.parallel else [x]
            prox_singles = torch.stack([(l1(y) - l1(y - z)).clamp_min(EPS) for z in singles])  # (1 or 2,)
            total = prox_heads.sum() + prox_singles.sum()
            c_heads, c_singles = prox_heads / total, prox_singles / total
            if renorm_threshold is not None:
                c_heads = torch.where(c_heads >= renorm_threshold, c_heads, 0.0)
                c_singles = torch.where(c_singles >= renorm_threshold, c_singles, 0.0)
                total = c_heads.sum() + c_singles.sum()
                c_heads, c_singles = c_heads / total, c_singles / total
            attn_edges[layer, i, : i + 1] = c_heads.sum(1)
            attn_resid[layer, i] = c_singles[0]
            if runner.parallel:
                ffn[layer, i] = c_singles[1]
                continue

            whole = trace.resid[layer + 1][i].double()
            p = torch.stack([(l1(whole) - l1(whole - y)).clamp_min(EPS), (l1(whole) - l1(whole - f)).clamp_min(EPS)])
            p = p / p.sum()
            if renorm_threshold is not None:
                p = torch.where(p >= renorm_threshold, p, 0.0)
                p = p / p.sum()
            ffn_resid[layer, i], ffn[layer, i] = p
    return attn_edges, attn_resid, ffn_resid, ffn
