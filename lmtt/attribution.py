"""Contributions of each part of a residual update (Ferrando & Voita 2024).

For a whole y and its parts z_k (with sum_k z_k = y up to bias terms), the
proximity of a part is max(|y|_1 - |y - z_k|_1, eps) and its contribution is
its proximity normalised over all parts of y.

Attention at (layer l, query i): the parts are the residual x_i and, for every
source j <= i and head h, z_ijh = a_hij * v_j W_O^h; the whole is the state
after attention. FFN at (l, i): the parts are the state after attention and
the FFN output; the whole is the state after the FFN.

The attention parts are never materialised for the whole sequence: queries
are processed in chunks whose (chunk, sources, heads, d) tensor stays under a
memory budget, and sources past the chunk's last query are never touched.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lmtt.runner import LayerWeights, Trace

log = logging.getLogger(__name__)

EPS = 1e-5
DEFAULT_BUDGET_BYTES = 64 * 2**20
MAX_CHUNK = 32


@dataclass(frozen=True)
class Contributions:
    """Normalised contributions for every node of the graph.

    attn_edges[l, i, j] sums head parts over heads: the weight of the
    attention edge j -> i at layer l (zero where j > i).
    """

    attn_edges: torch.Tensor  # (L, T, T)
    attn_resid: torch.Tensor  # (L, T): the residual's share of the state after attention
    ffn_resid: torch.Tensor  # (L, T): the state after attention's share of the state after the FFN
    ffn: torch.Tensor  # (L, T): the FFN output's share of the state after the FFN
    renorm_threshold: float | None = None


def proximity(whole: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """max(|y|_1 - |y - z|_1, eps) for whole y (..., d) and parts z (..., P, d) -> (..., P)."""
    norm = whole.abs().sum(-1, keepdim=True)  # (..., 1)
    return (norm - (whole.unsqueeze(-2) - parts).abs().sum(-1)).clamp_min(EPS)


def renormalize(contrib: torch.Tensor, threshold: float, dims: tuple[int, ...] = (-1,)) -> torch.Tensor:
    """Zero the parts below the threshold, then renormalise over `dims` (LM-TT's renormalising threshold)."""
    kept = torch.where(contrib >= threshold, contrib, torch.zeros_like(contrib))
    total = kept.sum(dim=dims, keepdim=True)
    return torch.where(total > 0, kept / total.clamp_min(torch.finfo(kept.dtype).tiny), kept)


def head_values(trace: Trace, weights: LayerWeights, layer: int) -> torch.Tensor:
    """(T, H, d): u_jh = v_j W_O^h, each head's value vector written into the residual stream."""
    v = trace.values[layer][:, weights.kv_index]  # (T, H, hd)
    return torch.einsum("thc,hcd->thd", v, weights.w_out)  # (T, H, d)


def _l1_distances_eager(y: torch.Tensor, a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """|y_i - a_ijh u_jh|_1 for y (C, d), a (C, J, H), u (J, H, d) -> (C, J, H), in place to halve memory traffic."""
    diff = a.unsqueeze(-1) * u.unsqueeze(0)  # (C, J, H, d)
    diff.sub_(y[:, None, None, :]).abs_()
    return diff.sum(-1)


def _l1_distances_fused(y: torch.Tensor, a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The same expression, written for torch.compile to fuse into one reduction (nothing materialised)."""
    return (y[:, None, None, :] - a.unsqueeze(-1) * u.unsqueeze(0)).abs().sum(-1)


class _Kernel:
    """Picks the fused (torch.compile) kernel when it works here, else the eager one.

    Compiling needs a C++ compiler and takes seconds once per process (inductor
    caches on disk across processes). LMTT_COMPILE=0 forces the eager kernel.
    Calls are serialised: torch already uses every core inside one call, and
    compilation is not safe to run from two threads at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fused = None
        self.mode = "eager" if os.environ.get("LMTT_COMPILE", "1") == "0" else "untried"

    def __call__(self, y: torch.Tensor, a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        with self._lock:
            if self.mode == "untried" and y.device.type in ("cpu", "cuda"):
                self._try_compile(y, a, u)
            if self.mode == "fused":
                return self._fused(y, a, u)
            return _l1_distances_eager(y, a, u)

    def _try_compile(self, y, a, u) -> None:
        try:
            fused = torch.compile(_l1_distances_fused, dynamic=True)
            expected = _l1_distances_eager(y, a, u)
            got = fused(y, a, u)
            if not torch.allclose(got, expected, rtol=1e-5, atol=1e-4):
                raise RuntimeError(f"fused kernel disagrees with eager by {(got - expected).abs().max():.3g}")
            self._fused, self.mode = fused, "fused"
        except Exception as e:  # noqa: BLE001 - no compiler, unsupported device, ...: eager always works
            log.warning("lmtt: torch.compile unavailable (%s); using the eager attribution kernel", e)
            self.mode = "eager"


l1_distances = _Kernel()


def attention_parts(
    trace: Trace,
    layer: int,
    u: torch.Tensor,
    queries: slice,
    renorm_threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contributions at attention nodes `queries` of one layer.

    Returns (heads, resid): heads (C, J, H) for sources j < J = queries.stop,
    zero where j > i; resid (C,) the residual's contribution.
    """
    i0, i1 = queries.start, queries.stop
    x = trace.resid[layer, i0:i1]  # (C, d) the residual part
    y = x + trace.attn_out[layer, i0:i1]  # (C, d) the whole: the state after attention
    a = trace.attention(layer, slice(i0, i1), n_keys=i1).permute(1, 2, 0).contiguous()  # (C, J, H)
    c, j = a.shape[0], a.shape[1]
    prox = (y.abs().sum(-1)[:, None, None] - l1_distances(y, a, u[:i1])).clamp_min(EPS)  # (C, J, H)
    causal = torch.arange(j, device=a.device)[None, :] <= torch.arange(i0, i1, device=a.device)[:, None]  # (C, J)
    prox = prox * causal[:, :, None]
    prox_resid = proximity(y, x.unsqueeze(-2)).squeeze(-1)  # (C,)
    total = prox.sum((1, 2)) + prox_resid  # (C,)
    heads, resid = prox / total[:, None, None], prox_resid / total
    if renorm_threshold is not None:
        both = renormalize(torch.cat([heads.reshape(c, -1), resid[:, None]], 1), renorm_threshold)
        heads, resid = both[:, :-1].reshape(heads.shape), both[:, -1]
    return heads, resid


def chunk_size(n_tokens: int, n_heads: int, d_model: int, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> int:
    """Queries per chunk so that (chunk, T, H, d) float32 stays under the budget.

    Never the whole sequence at once for T > 1: the full pos x pos x heads x d
    tensor is exactly what runs LM-TT out of memory on long prompts.
    """
    row = n_tokens * n_heads * d_model * 4
    return max(1, min(MAX_CHUNK, budget_bytes // row, (n_tokens + 1) // 2))


def ffn_parts(trace: Trace, renorm_threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(resid, ffn), each (L, T): shares of the state after attention and of the FFN output."""
    whole = trace.resid[1:]  # (L, T, d)
    parts = torch.stack([trace.resid_mid, trace.ffn_out], dim=-2)  # (L, T, 2, d)
    prox = proximity(whole, parts)  # (L, T, 2)
    c = prox / prox.sum(-1, keepdim=True)
    if renorm_threshold is not None:
        c = renormalize(c, renorm_threshold)
    return c[..., 0], c[..., 1]


def compute_contributions(
    trace: Trace,
    weights: list[LayerWeights],
    renorm_threshold: float | None = None,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    on_layer: Callable[[int, int], None] | None = None,
) -> Contributions:
    """Contributions for every node: all layers, all tokens, every head x source part.

    `on_layer(done, total)` is called after each layer, for progress bars.
    """
    n_layers, t = trace.n_layers, trace.n_tokens
    d = trace.resid.shape[-1]
    step = chunk_size(t, trace.n_heads, d, budget_bytes)
    attn_edges = torch.zeros(n_layers, t, t)  # (L, T, T)
    attn_resid = torch.zeros(n_layers, t)  # (L, T)
    for layer in range(n_layers):
        u = head_values(trace, weights[layer], layer)  # (T, H, d)
        for i0 in range(0, t, step):
            i1 = min(t, i0 + step)
            heads, resid = attention_parts(trace, layer, u, slice(i0, i1), renorm_threshold)
            attn_edges[layer, i0:i1, :i1] = heads.sum(-1).cpu()
            attn_resid[layer, i0:i1] = resid.cpu()
        if on_layer is not None:
            on_layer(layer + 1, n_layers)
    ffn_resid, ffn = ffn_parts(trace, renorm_threshold)
    return Contributions(attn_edges, attn_resid, ffn_resid.cpu(), ffn.cpu(), renorm_threshold)
