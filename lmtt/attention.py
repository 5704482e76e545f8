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

# Set by the runner while it traces: {"layer_of": {id(module): layer}, "q": [...], "k": [...], "v": [...], ...}
RECORDER: contextvars.ContextVar[dict | None] = contextvars.ContextVar("lmtt_recorder", default=None)
UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks")


def lmtt_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """query (B, H, T, hd), key/value (B, K, T, hd), attention_mask boolean (B, 1, T, T) or None (causal)."""
    for name in UNSUPPORTED_KWARGS:
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"lmtt attention does not support {name!r} (its weights are not a plain softmax)")
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    if (rec := RECORDER.get()) is not None and id(module) in rec["layer_of"]:
        layer = rec["layer_of"][id(module)]
        rec["q"][layer] = query[0].detach().float()  # (H, T, hd)
        rec["k"][layer] = key[0].detach().float()  # (K, T, hd)
        rec["v"][layer] = value[0].detach().float().transpose(0, 1)  # (T, K, hd)
        rec["mask"][layer] = additive(attention_mask)  # (T, T) or None for plain causal
        rec["scale"][layer] = float(scale)
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


def additive(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(T, T) additive float mask from transformers' (B, 1, T, T) mask: boolean (True = attend) or float."""
    if mask is None:
        return None
    mask = mask[0, 0].detach()
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))
    return mask.float()


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, scale: float, kv_index: torch.Tensor, queries: slice, n_keys: int
) -> torch.Tensor:
    """(H, C, J) eager attention weights for query rows `queries` over the first `n_keys` keys.

    q (H, T, hd), k (K, T, hd), mask (T, T) additive. Keys past the last query
    row are masked for a causal model, so restricting to n_keys changes nothing.
    """
    scores = torch.einsum("hcd,hjd->hcj", q[:, queries], k[kv_index, :n_keys]) * scale  # (H, C, J)
    if mask is not None:
        scores = scores + mask[queries, :n_keys]
    else:
        rows = torch.arange(queries.start or 0, queries.stop, device=q.device)[:, None]
        scores = scores.masked_fill(torch.arange(n_keys, device=q.device)[None, :] > rows, float("-inf"))
    return scores.softmax(-1)


def register() -> None:
    """Make "lmtt" a valid attn_implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, lmtt_attention)
    # SDPA's masks: None for a plain causal prompt (the fast is_causal path), boolean otherwise (sliding windows)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
