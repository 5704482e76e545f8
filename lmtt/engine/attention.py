"""lmtt's attention implementation for transformers: fast forward, exact weights on demand.

Registered with transformers' AttentionInterface as "lmtt". It computes the
attention output with torch's scaled_dot_product_attention (the fast path) and,
while a trace is recording, keeps the post-RoPE queries and keys, the values,
the additive mask and the scale of each layer. From those the attention
weights of any rows can be recomputed exactly as eager attention does:
softmax(q k^T * scale + mask).

Keeping q and k costs L x T x (H + K) x hd floats; keeping the weights would
cost L x H x T x T (4.5 GB for SmolLM2 at T=2048), which is what makes long
prompts run out of memory in other tools.
"""

from __future__ import annotations

import contextvars

import torch
import torch.nn.functional as F

NAME = "lmtt"

# Set by the runner while it traces: {"layer_of": {id(module): layer}, "whole_batch": bool, "q": [...], "k": [...], ...}
RECORDER: contextvars.ContextVar[dict | None] = contextvars.ContextVar("lmtt_recorder", default=None)
# Set by ModelRunner.attention_inputs: the id of the attention module whose queries, keys and values end the pass
STOP_AT: contextvars.ContextVar[int | None] = contextvars.ContextVar("lmtt_stop_at", default=None)


class Captured(Exception):
    """Ends a forward pass at the attention module named by STOP_AT, carrying its queries, keys and values
    (B, H or K, T, hd)."""

    def __init__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
        super().__init__("queries, keys and values captured")
        self.query, self.key, self.value = query, key, value


def lmtt_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None, **kwargs):
    """query (B, H, T, hd), key/value (B, K, T, hd), attention_mask boolean (B, 1, T, T) or None (causal).

    `softcap` (Gemma-2: scores -> cap * tanh(scores / cap)) and sinks (GPT-OSS: one extra
    logit per head in the softmax's denominator, passed as `s_aux` or `sinks`) are computed
    eagerly, exactly as transformers' eager attention does; everything else runs through SDPA.
    """
    if STOP_AT.get() == id(module):
        raise Captured(query.detach().float(), key.detach().float(), value.detach().float())
    sinks = kwargs.get("s_aux", kwargs.get("sinks"))
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if (rec := RECORDER.get()) is not None and id(module) in rec["layer_of"]:
        layer = rec["layer_of"][id(module)]
        rows = slice(None) if rec["whole_batch"] else 0  # a trace keeps its one prompt's; a batch of routes every row's
        rec["q"][layer] = query[rows].detach().float()  # (H, T, hd), or (B, H, T, hd) for the whole batch
        rec["k"][layer] = key[rows].detach().float()  # (K, T, hd) / (B, K, T, hd)
        rec["v"][layer] = value[rows].detach().float().transpose(-3, -2)  # (T, K, hd) / (B, T, K, hd)
        rec["mask"][layer] = additive(attention_mask)  # (T, T) or None for plain causal
        rec["scale"][layer] = float(scale)
        rec["softcap"][layer] = None if softcap is None else float(softcap)
        rec["sinks"][layer] = None if sinks is None else sinks.detach().float()  # (H,)
    if softcap is not None or sinks is not None:
        return _eager(query, key, value, attention_mask, scale, softcap, sinks), None
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout if module.training else 0.0,
        scale=scale,
        is_causal=attention_mask is None and query.shape[2] > 1,
        enable_gqa=key.shape[1] != query.shape[1],
    )  # (B, H, T, hd)
    return out.transpose(1, 2).contiguous(), None


def _eager(query, key, value, attention_mask, scale, softcap, sinks) -> torch.Tensor:
    """(B, T, H, hd) attention output with softcapped scores and/or sinks; weights in float32, as transformers does."""
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)  # (B, H, T, hd)
    scores = torch.matmul(query, key.transpose(2, 3)) * scale  # (B, H, T, T)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    t = query.shape[2]
    if attention_mask is None:
        causal = torch.ones(t, key.shape[2], dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    else:
        scores = scores + attention_mask
    weights = _softmax(scores.float(), None if sinks is None else sinks.float()).to(value.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous()


def _softmax(scores: torch.Tensor, sinks: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dim; with sinks (H,), each head's sink logit joins the denominator only.

    scores (..., H, C, J): the head axis is third from the end.
    """
    if sinks is None:
        return scores.softmax(-1)
    sink = sinks.reshape(-1, 1, 1).expand(*scores.shape[:-1], 1)  # (..., H, C, 1)
    return torch.cat([scores, sink], dim=-1).softmax(-1)[..., :-1]


def additive(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(T, T) additive float mask from transformers' (B, 1, T, T) mask: boolean (True = attend) or float."""
    if mask is None:
        return None
    mask = mask[0, 0].detach()
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))
    return mask.float()


def attention_weights(
    q: torch.Tensor,
    k: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    kv_index: torch.Tensor,
    queries: slice | torch.Tensor,
    n_keys: int,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """(H, C, J) eager attention weights for query rows `queries` over the first `n_keys` keys.

    q (H, T, hd), k (K, T, hd), mask (T, T) additive. Keys past the last query
    row are masked for a causal model, so restricting to n_keys changes nothing.
    With sinks, a row sums to less than 1: the rest went to the head's sink.
    """
    if isinstance(queries, torch.Tensor):
        queries = queries.to(q.device)  # row indices may come from the CPU; the layer may live on another device
    scores = torch.einsum("hcd,hjd->hcj", q[:, queries], k[kv_index.to(k.device), :n_keys]) * scale  # (H, C, J)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores + mask.to(q.device)[queries, :n_keys]
    else:
        rows = queries if isinstance(queries, torch.Tensor) else torch.arange(queries.start or 0, queries.stop, device=q.device)
        rows = rows[:, None]
        scores = scores.masked_fill(torch.arange(n_keys, device=q.device)[None, :] > rows, float("-inf"))
    return _softmax(scores, sinks)


def register() -> None:
    """Make "lmtt" a valid attn_implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, lmtt_attention)
    # SDPA's masks: None for a plain causal prompt (the fast is_causal path), boolean otherwise (sliding windows)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
