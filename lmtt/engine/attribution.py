"""Contributions of each part of a residual update (Ferrando & Voita 2024).

For a whole y and its parts z_k (with sum_k z_k = y up to bias terms), the
proximity of a part is max(|y|_1 - |y - z_k|_1, eps) and its contribution is
its proximity normalised over all parts of y.

Attention at (layer l, query i): the parts are the residual x_i and, for every
source j <= i and head h, z_ijh = a_hij * u_jh with u_jh = v_j W_O^h; the whole
is the state after attention. FFN at (l, i): the parts are the state after
attention and the FFN output; the whole is the state after the FFN.

Parallel blocks (GPT-J, GPT-NeoX, Phi, Cohere): attention and FFN both read the
block input x, and "x + attention" is a state the model never forms. So the
block output is one node, and its parts are split together: the residual x_i,
every head part z_ijh and the FFN update f_i, each against the whole y = the
block output, normalised over all of them. Every edge then starts at a state
that its component read.

How the attention proximities are computed, exactly and fast
-------------------------------------------------------------
p_ijh = |y|_1 - |y - a u|_1 = sum_d (|y_d| - |y_d - a u_d|). Wherever a|u_d| <= |y_d|
the term is linear: |y_d| - |y_d - a u_d| = a s_d u_d with s = sign(y). So, with S_i
the K coordinates where |y_i| is smallest and tau_i the smallest |y_id| outside S_i:

    p_ijh = a_ijh * (s_i masked outside S_i) . u_jh      one GEMM for all (i, j, h), in head space:
                                                         s . (v_j W_O^h) = (W_O^h s) . v_j, so the GEMM
                                                         costs T^2 H hd, not T^2 H d (9x less for SmolLM2)
          + sum_{d in S_i} (|y_id| - |y_id - a_ijh u_jhd|)  K coordinates, not d
    valid whenever a_ijh * max_d |u_jhd| <= tau_i.

The few (i, j, h) where that bound fails (under 1% on SmolLM2) are recomputed
over every coordinate. The result is the same quantity as the plain formula,
with fewer cancellation errors; tests/reference.py checks it to 1e-5.

Where a norm or a multiplier sits between the attention output and the
residual (Gemma-2/3, OLMo-2, Granite), the residual receives
scale_i * gain ⊙ P(a u) at query i (lmtt.engine.norms, scale frozen): u is replaced by
gain ⊙ P u, which does not depend on i, and a_ijh by scale_i * a_ijh. The
parts then sum to exactly what the residual received, and the method above
runs unchanged.

Queries are processed in chunks, so no (T, T, H, d) tensor (what runs LM-TT out of
memory) and no (T, T, H) tensor for the whole sequence is ever built.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from lmtt.engine.runner import LayerWeights, ModelRunner, Trace

log = logging.getLogger(__name__)

EPS = 1e-5
SMALL_COORDS = 32  # K: coordinates per query handled exactly; the rest go through the GEMM
DEFAULT_BUDGET_BYTES = 64 * 2**20
MAX_CHUNK = 128
# Working set per chunk and queries per chunk, by device type: a CPU chunk should stay near its
# caches; a GPU wants few, large launches (fewer chunks, fewer synchronisations).
DEVICE_BUDGETS = {"cpu": (DEFAULT_BUDGET_BYTES, MAX_CHUNK), "cuda": (2 * 2**30, 1024)}


# The full graph keeps one layer's u (T, H, d) and its by-coordinate layout, both float32, while they fit in this,
# else the layout alone (the few u rows of loose triples come from the factors), else neither, as the on-demand
# graph does. An 8B model at T=1024: 537 MB each, so the layout alone (1.07 GB less at the peak).
DENSE_LAYER_MAX_BYTES = {"cpu": 768 * 2**20, "cuda": 16 * 2**30}


def device_budget(device: torch.device) -> tuple[int, int]:
    """(working-set bytes, most queries) per chunk on a device; unknown device types get the CPU's."""
    return DEVICE_BUDGETS.get(device.type, DEVICE_BUDGETS["cpu"])
EAGER_BELOW = 300_000  # C x J x H x K elements under which the eager correction beats compiling
CHUNK_TENSORS = 6  # (C, J, H) float32 tensors alive at once inside a chunk


@dataclass(frozen=True)
class Contributions:
    """Normalised contributions for every node of the graph.

    attn_edges[l, i, j] sums head parts over heads: the weight of the
    attention edge j -> i at layer l (zero where j > i). Parallel blocks
    (see the module docstring): attn_edges, attn_resid and ffn are the joint
    shares of the block output, and ffn_resid is zero (no state after attention).
    """

    attn_edges: torch.Tensor  # (L, T, T)
    attn_resid: torch.Tensor  # (L, T): the residual's share of the state after attention (parallel: of the block output)
    ffn_resid: torch.Tensor  # (L, T): the state after attention's share of the state after the FFN (parallel: 0)
    ffn: torch.Tensor  # (L, T): the FFN output's share of the state after the FFN (parallel: of the block output)
    renorm_threshold: float | None = None
    parallel: bool = False


def proximity(whole: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """max(|y|_1 - |y - z|_1, eps) for whole y (..., d) and parts z (..., P, d) -> (..., P)."""
    norm = whole.abs().sum(-1, keepdim=True)  # (..., 1)
    return (norm - (whole.unsqueeze(-2) - parts).abs().sum(-1)).clamp_min(EPS)


def renormalize(contrib: torch.Tensor, threshold: float, dims: tuple[int, ...] = (-1,)) -> torch.Tensor:
    """Zero the parts below the threshold, then renormalise over `dims` (LM-TT's renormalising threshold)."""
    kept = torch.where(contrib >= threshold, contrib, torch.zeros_like(contrib))
    total = kept.sum(dim=dims, keepdim=True)
    return torch.where(total > 0, kept / total.clamp_min(torch.finfo(kept.dtype).tiny), kept)


@dataclass(frozen=True)
class HeadValues:
    """u_jh = v_j W_O^h, each head's value vector written into the residual stream, and its factors.

    Dense (the full graph): u and its by-coordinate layout are materialised once per layer,
    (T, H, d) each. Lean (on-demand graphs of long prompts, lean=True): only the factors and
    u_max are kept, and the few coordinates of u that a query needs are computed from them.
    """

    u_max: torch.Tensor  # (T, H): max_d |u_jhd|
    values: torch.Tensor  # (K, hd, T): key/value head k's value vectors as columns
    w_out: torch.Tensor  # (H, hd, d): W_O^h as the residual receives it (post-map direction, edits); may be the model's dtype
    kv_index: torch.Tensor  # (H,)
    u: torch.Tensor | None = None  # (T, H, d)
    by_coord: torch.Tensor | None = None  # (d, T + 1, H): one coordinate of every u_jh is one contiguous row
    coord_rows: torch.Tensor | None = None  # (d,): where by_coord holds only some coordinates, each one's row (-1: absent)

    def rows(self, j: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(n, d) u_jh for the listed (source, head) pairs, from the factors: one GEMM per head present
        (gathering W_O^h per pair would take n * hd * d floats, GBs for a long prompt of a large model)."""
        out = torch.empty(j.shape[0], self.w_out.shape[-1], device=self.w_out.device)  # (n, d)
        for head in torch.unique(h).tolist():
            pick = (h == head).nonzero(as_tuple=True)[0]  # (n_h,)
            out[pick] = self.values[self.kv_index[head], :, j[pick]].T @ self.w_out[head].float()  # (n_h, hd) @ (hd, d)
        return out

    def with_coords(self, coords: torch.Tensor, n_sources: int, scratch: torch.Tensor | None = None) -> HeadValues:
        """These head values plus the by-coordinate layout of u for coordinates coords (U,) and the first
        J sources, computed from the factors: (U, J + 1, H), one zero column of padding as in the dense layout.
        Built once for every query that an on-demand sweep computes in a layer (their small sets overlap).
        With `scratch` (flat float32, on the same device, at least U * (J + 1) * H long) the layout fills its front: a
        sweep then reuses one buffer across layers, where fresh layouts (46 MB a layer at T=4000) cost a page fault
        per 4 kB."""
        w = self.w_out[:, :, coords].float()  # (H, hd, U)
        shape = (coords.shape[0], n_sources + 1, w.shape[0])  # (U, J + 1, H)
        layout = torch.empty(shape, dtype=w.dtype, device=w.device) if scratch is None else scratch[: math.prod(shape)].view(shape)
        for head in range(w.shape[0]):  # a head at a time: no second (U, J, H) temporary (340 MB, not 170, at T=8192)
            layout[:, :-1, head] = w[head].T @ self.values[self.kv_index[head], :, :n_sources]  # (U, hd) @ (hd, J)
        layout[:, -1] = 0
        where = torch.full((self.w_out.shape[-1],), -1, dtype=torch.long, device=w.device)  # (d,)
        where[coords] = torch.arange(coords.shape[0], device=w.device)
        return replace(self, by_coord=layout, coord_rows=where)


def head_parts(
    trace: Trace, weights: LayerWeights, layer: int, position: int, heads: slice = slice(None), w_out: torch.Tensor | None = None
) -> torch.Tensor:
    """(J, H, d') every (source j, head h) part a_hij v_j W^h at query `position`: the one a·v·W_O head sum.

    W is W_O (H, hd, d) unless `w_out` (H, hd, d') gives a read-out of it (a direction, for direct effects).
    Raw: before any post-map (Trace.received maps them); edits' head scales applied. Summed over j and h,
    with the output bias, they give the attention update before its post-map.
    """
    v = trace.values[layer][: position + 1][:, weights.kv_index[heads]]  # (J, H, hd)
    a = trace.attention(layer, slice(position, position + 1), n_keys=position + 1)[heads, 0].T  # (J, H)
    if trace.edits:  # an edited head writes less
        a = a * trace.head_scale[layer][heads].to(a.device)
    w = weights.w_out if w_out is None else w_out
    return torch.einsum("jh,jhc,hcd->jhd", a, v, w[heads].to(v.device, torch.float32))  # (J, H, d')


def head_values(
    trace: Trace, weights: LayerWeights, layer: int, lean: bool = False, keep_view: bool = False, keep_u: bool = True
) -> HeadValues:
    """One layer's head values, computed once and shared by every query chunk.

    W_O is upcast to float32 for this layer's products only. With `keep_view` (lean head values that an on-demand
    graph keeps for every layer it visits), they hold the model's own W_O where no post-map or edit changes it.
    Without `keep_u`, the by-coordinate layout is filled a slice of sources at a time and u itself is not kept.
    """
    w_out = weights.w_out.float()  # (H, hd, d): this layer's W_O in float32 (no copy for a float32 model)
    if (post := trace.attn_map[layer]) is not None:  # what the residual receives, but for the per-query scale
        w_out = post.direction(w_out)
    if trace.edits:  # zeroed or scaled heads (interventions) write scaled parts
        w_out = w_out * trace.head_scale[layer].to(w_out.device)[:, None, None]
    values = trace.values[layer].permute(1, 2, 0).contiguous()  # (K, hd, T)
    v = trace.values[layer][:, weights.kv_index]  # (T, H, hd)
    t, h, d = v.shape[0], v.shape[1], w_out.shape[-1]
    # One zero column of padding: every chunk then reads J < T + 1 sources, so the fused
    # kernel sees one layout and compiles once (J == T would otherwise recompile it).
    by_coord = None if lean else torch.zeros(d, t + 1, h, device=v.device)  # (d, T + 1, H)
    if lean or not keep_u:  # u in slices of sources, never the whole (T, H, d)
        u_max = torch.empty(t, h, device=v.device)  # (T, H)
        for s in range(0, t, 128):  # (S, H, d) of u at a time, S <= 128
            e = min(s + 128, t)  # never the padding column
            u_s = torch.einsum("thc,hcd->thd", v[s:e], w_out)
            u_max[s:e] = u_s.abs().amax(-1)
            if by_coord is not None:
                by_coord[:, s:e] = u_s.permute(2, 0, 1)
        unchanged = lean and keep_view and post is None and not trace.edits
        return HeadValues(u_max, values, weights.w_out if unchanged else w_out.contiguous(), weights.kv_index, None, by_coord)
    u = torch.einsum("thc,hcd->thd", v, w_out)  # (T, H, d)
    by_coord[:, :-1] = u.permute(2, 0, 1)
    return HeadValues(u.abs().amax(-1), values, w_out.contiguous(), weights.kv_index, u, by_coord)


# ---- the small-coordinate correction: a fused kernel when torch.compile works here ----


def _small_coords_eager(y_small: torch.Tensor, small: torch.Tensor, a: torch.Tensor, u_by_coord: torch.Tensor) -> torch.Tensor:
    """sum_k (|y_ik| - |y_ik - a_ijh u_jh,S_ik|) -> (C, J, H).

    y_small (C, K) the values of y at the coordinates small (C, K); a (C, J, H);
    u_by_coord (d, T, H) with T >= J, so that one coordinate of every u is one contiguous row.
    Inputs keep one layout for every chunk, so the fused kernel compiles once.
    """
    out = torch.zeros_like(a)  # (C, J, H)
    for k in range(small.shape[1]):
        u_k = u_by_coord[small[:, k], : a.shape[1]]  # (C, J, H)
        y_k = y_small[:, k, None, None]  # (C, 1, 1)
        out = out + (y_k.abs() - (y_k - a * u_k).abs())  # out of place: inductor fuses the K steps into one loop
    return out


def _loose_exact_eager(y: torch.Tensor, a: torch.Tensor, u: torch.Tensor, ci: torch.Tensor, ji: torch.Tensor, hi: torch.Tensor):
    """|y_c|_1 - |y_c - a_cjh u_jh|_1 over every coordinate, for the listed (c, j, h) triples -> (n,)."""
    y_c = y[ci]  # (n, d)
    return y_c.abs().sum(-1) - (y_c - a[ci, ji, hi].unsqueeze(-1) * u[ji, hi]).abs().sum(-1)


class _Kernel:
    """One of the attribution's inner kernels: fused by torch.compile where it works, else eager.

    Compiling needs a C++ compiler (CPU) or Triton (CUDA) and a few seconds once per
    process and device type (inductor caches on disk). LMTT_COMPILE=0 forces eager,
    and small inputs always run eagerly (not worth a compile). The fused kernel is
    checked against eager on its first call on each device type. Calls are
    serialised: torch already uses every core inside a call, and compiling from
    two threads at once is unsafe.
    """

    def __init__(self, eager, work) -> None:
        self._eager, self._work = eager, work  # work(*args): elements the call touches
        self._lock = threading.Lock()
        self._fused = None  # torch.compile(eager), made on first use (importing the compiler is slow)
        self._forced_eager = os.environ.get("LMTT_COMPILE", "1") == "0"
        self.modes: dict[str, str] = {}  # device type -> "fused" | "eager" once tried
        self.mode = "eager" if self._forced_eager else "untried"  # the mode of the last device type used

    def __call__(self, *args) -> torch.Tensor:
        if self._work(*args) < EAGER_BELOW or _has_size_one(args):
            return self._eager(*args)
        with self._lock:
            if self._mode(*args) == "fused":
                return self._fused_call(*args)
        return self._eager(*args)

    def warm_up(self, *args) -> None:
        """Compile for inputs whose sizes are distinct and > 1, so that nothing specialises on them. The first call on
        a device type tries the compiler; a later one compiles for its own loop bound (another model's width)."""
        with self._lock:
            if self._mode(*args) == "fused":
                self._fused_call(*args)

    def _fused_call(self, *args) -> torch.Tensor:
        with _distinct_symbols():
            return self._fused(*args)

    def _mode(self, *args) -> str:
        device = args[0].device.type
        if self._forced_eager:
            self.modes[device] = "eager"
        elif device not in self.modes:
            self.modes[device] = self._try_compile(*args)
        self.mode = self.modes[device]
        return self.mode

    def _try_compile(self, *args) -> str:
        try:
            self._fused = self._fused or torch.compile(self._eager, dynamic=True)
            expected, got = self._eager(*args), self._fused_call(*args)
            scale = max(1.0, float(args[0].abs().sum(-1).max()))  # results are differences of L1 norms of y (the first argument)
            if not (got - expected).abs().max() <= 1e-5 * scale:
                raise RuntimeError(f"fused kernel disagrees with eager by {(got - expected).abs().max():.3g}")
            return "fused"
        except Exception as e:  # noqa: BLE001 - no compiler, unsupported device, ...: eager always works
            log.warning("lmtt: torch.compile unavailable on %s (%s); using the eager attribution kernel", args[0].device.type, e)
            return "eager"


small_coords_correction = _Kernel(_small_coords_eager, lambda y_small, small, a, u_by_coord: a.numel() * small.shape[1])
loose_exact = _Kernel(_loose_exact_eager, lambda y, a, u, ci, ji, hi: ci.numel() * y.shape[1])


def _distinct_symbols():
    """Compile with a symbol per size: by default two sizes that happen to be equal share one, and a loop bound (K, the
    small coordinates) is a constant, so a first call with C == K queries fixed C too (it then compiled again for every
    other C; a test saw it)."""
    import torch.fx.experimental._config as shapes

    return shapes.patch(use_duck_shape=False)


def _has_size_one(args: tuple) -> bool:
    """torch.compile specialises a size of 1: such a call (one query row, one triple) would compile a second kernel,
    2-5 s, for a few microseconds of work, so it runs eagerly."""
    return any(isinstance(t, torch.Tensor) and 1 in t.shape for t in args)


def warm_up(d_model: int, device: torch.device | str = "cpu") -> None:
    """Compile both kernels for a model width on a device (done at model load in the app, and before timing in the bench).

    The inputs are made on the device, not under `with torch.device(device)`: that context is a torch function mode,
    the compiled kernel would guard on it, and the first real call (outside it) compiled again (5 s at 4,000 tokens)."""
    k = small_coords(d_model)
    on = {"device": device}
    small_coords_correction.warm_up(
        torch.randn(3, k, **on), torch.randint(0, 11, (3, k), **on), torch.rand(3, 5, 7, **on), torch.randn(11, 13, 7, **on)
    )
    idx = (torch.tensor([0, 2, 1, 2], **on), torch.tensor([4, 1, 3, 0], **on), torch.tensor([6, 0, 2, 5], **on))
    loose_exact.warm_up(torch.randn(3, 11, **on), torch.rand(3, 5, 7, **on), torch.randn(5, 7, 11, **on), *idx)


def warm_up_for(runner: ModelRunner) -> None:
    """warm_up for a runner's width and device: what the app does when it loads a model."""
    warm_up(runner.layer_weights[0].w_out.shape[-1], runner.device)


def small_coords(d_model: int) -> int:
    """K, the coordinates per query handled exactly (a quarter of d at most, for tiny models)."""
    return min(SMALL_COORDS, d_model // 4)


def small_set(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, K) the K coordinates of each whole y (C, d) where |y| is smallest, and (C,) tau, the smallest |y| outside them."""
    k = small_coords(y.shape[1])
    small_vals, small = y.abs().topk(k + 1, dim=1, largest=False)  # (C, K+1)
    return small[:, :k].contiguous(), small_vals[:, k]


def attention_proximities(y: torch.Tensor, a: torch.Tensor, hv: HeadValues) -> torch.Tensor:
    """p_ijh = |y_i|_1 - |y_i - a_ijh u_jh|_1 (not yet clamped) -> (C, J, H).

    y (C, d) wholes, a (C, J, H) attention weights over the first J sources of
    the head values hv. See the module docstring for the method.
    """
    c, d = y.shape
    j, h = a.shape[1], a.shape[2]
    small, tau = small_set(y)  # (C, K), (C,)
    signs = y.sign().scatter(1, small, 0.0)  # (C, d): sign(y) on the large coordinates only
    n_kv = hv.values.shape[0]
    t = torch.einsum("cd,hkd->hck", signs, hv.w_out.float())  # (H, C, hd): W_O^h s_i, the sign vector in head space
    t = t.reshape(n_kv, (h // n_kv) * c, -1)  # (K, G*C, hd): the heads that share a key/value head, stacked
    p = torch.bmm(t, hv.values[:, :, :j]).reshape(h, c, j).permute(1, 2, 0).mul(a)  # (C, J, H) the linear part
    y_small = y.gather(1, small)  # (C, K)
    rows = small if hv.coord_rows is None else hv.coord_rows[small]  # (C, K) rows of the layout
    if hv.by_coord is None or (hv.coord_rows is not None and bool((rows < 0).any())):  # lean, or a coordinate it lacks
        hv = hv.with_coords(torch.unique(small), j)  # the layout of just the coordinates these queries need
        rows = hv.coord_rows[small]
    p += small_coords_correction(y_small, rows, a, hv.by_coord)
    loose = a.abs() * hv.u_max[:j].unsqueeze(0) > tau[:, None, None]  # (C, J, H) where the linear part is not proven exact
    if loose.any():
        triples = loose.nonzero(as_tuple=True)
        step = max(1, device_budget(y.device)[0] // (4 * 4 * d))  # a few (n, d) float32 temporaries per batch of triples
        for start in range(0, triples[0].shape[0], step):
            ci, ji, hi = (x[start : start + step] for x in triples)
            if hv.u is not None:
                p[ci, ji, hi] = loose_exact(y, a, hv.u[:j], ci, ji, hi)
                continue
            if hv.by_coord is not None and hv.coord_rows is None:  # every coordinate laid out: u_jh is one column
                u = hv.by_coord[:, ji, hi].T  # (n, d)
            else:  # lean: u_jh from the factors, once per (source, head) pair (attention sinks repeat across queries)
                pairs, which = torch.unique(ji * h + hi, return_inverse=True)  # (P,), (n,)
                u = hv.rows(pairs // h, pairs % h)[which]  # (n, d)
            y_c = y[ci]  # (n, d)
            p[ci, ji, hi] = y_c.abs().sum(-1) - (y_c - a[ci, ji, hi, None] * u).abs().sum(-1)
    return p


def attention_whole(trace: Trace, layer: int, rows: slice | torch.Tensor) -> torch.Tensor:
    """(C, d) what a layer's attention parts are split against: the state after attention, or a parallel block's output."""
    if trace.parallel:
        return trace.resid[layer + 1][rows].to(trace.resid[layer].device)  # the next layer may live on another device
    return trace.mid(layer, rows)


def attention_parts(
    trace: Trace,
    layer: int,
    hv: HeadValues,
    queries: slice | torch.Tensor,
    renorm_threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Contributions at attention nodes `queries` (a slice, or sorted row indices) of one layer.

    Returns (heads, resid, ffn): heads (C, J, H) for sources j < J = the last query + 1,
    zero where j > i; resid (C,) the residual's contribution; ffn None, or for a parallel
    block (C,) the FFN's: then all three are shares of the block output, split together.
    """
    rows = queries if isinstance(queries, torch.Tensor) else torch.arange(queries.start, queries.stop)  # (C,) on the CPU
    if isinstance(queries, torch.Tensor):
        queries = queries.to(trace.resid[layer].device)  # index the layer's tensors where they live
    x = trace.resid[layer][queries]  # (C, d) the residual part
    y = attention_whole(trace, layer, queries)  # (C, d)
    a = trace.attention(layer, queries, n_keys=int(rows[-1]) + 1).permute(1, 2, 0).contiguous()  # (C, J, H)
    if (post := trace.attn_map[layer]) is not None:
        a = a * post.scale[queries, None, None]  # the frozen per-query scale of the post-norm / multiplier
    c, j = a.shape[0], a.shape[1]
    prox = attention_proximities(y, a, hv).clamp_min_(EPS)  # (C, J, H)
    causal = torch.arange(j, device=a.device)[None, :] <= rows.to(a.device)[:, None]  # (C, J), one small copy of C indices
    prox = prox * causal[:, :, None]
    others = [x] if not trace.parallel else [x, trace.ffn_out[layer][queries].to(x.device)]
    prox_others = proximity(y, torch.stack(others, -2))  # (C, 1 or 2): the residual [, the FFN update]
    total = prox.sum((1, 2)) + prox_others.sum(-1)  # (C,)
    heads, shares = prox / total[:, None, None], prox_others / total[:, None]
    if renorm_threshold is not None:
        both = renormalize(torch.cat([heads.reshape(c, -1), shares], 1), renorm_threshold)
        heads, shares = both[:, : -shares.shape[1]].reshape(heads.shape), both[:, -shares.shape[1] :]
    return heads, shares[:, 0], (shares[:, 1] if trace.parallel else None)


def chunk_size(n_tokens: int, n_heads: int, budget_bytes: int = DEFAULT_BUDGET_BYTES, max_chunk: int = MAX_CHUNK) -> int:
    """Queries per chunk so that the chunk's (C, T, H) float32 working set stays under the budget.

    Nothing of size (C, T, H, d) is ever built, so short prompts may run in one chunk.
    """
    row = n_tokens * n_heads * 4 * CHUNK_TENSORS
    return max(1, min(max_chunk, budget_bytes // row))


def ffn_parts(trace: Trace, layer: int, renorm_threshold: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(resid, ffn), each (T,): shares of the state after attention and of the FFN output at one layer.

    Sequential blocks only: a parallel block's FFN share comes with its attention parts (attention_parts).
    """
    if trace.parallel:
        raise ValueError("a parallel block's FFN is split together with its attention: use attention_parts")
    parts = torch.stack([trace.mid(layer), trace.ffn_out[layer]], dim=-2)  # (T, 2, d)
    prox = proximity(trace.resid[layer + 1].to(parts.device), parts)  # (T, 2); the next layer may live on another device
    c = prox / prox.sum(-1, keepdim=True)
    if renorm_threshold is not None:
        c = renormalize(c, renorm_threshold)
    return c[:, 0], c[:, 1]


def check_decomposable(trace: Trace) -> None:
    """Refuse a pass in which a patch replaced a state, a head context or an update: the recorded parts no longer
    sum to what the residual received (and a post-norm's scale would be fitted to an output its input never made)."""
    if trace.replaced:
        raise ValueError(
            f"this pass cannot be decomposed: a patch replaced {', '.join(trace.replaced)}, so its parts no longer add "
            "up to its states. Decompose the unpatched pass, or patch neuron activations, or use edits (which the "
            "decomposition follows)."
        )


def compute_contributions(
    trace: Trace,
    weights: list[LayerWeights],
    renorm_threshold: float | None = None,
    budget_bytes: int | None = None,
    on_layer: Callable[[int, int], None] | None = None,
) -> Contributions:
    """Contributions for every node: all layers, all tokens, every head x source part, on the CPU.

    Each layer is computed on the device that holds it (its trace tensors and weights), and
    its results reach the CPU in one copy after its last chunk: nothing crosses devices inside
    the chunk loop. `on_layer(done, total)` is called after each layer, for progress bars.
    """
    check_decomposable(trace)
    n_layers, t = trace.n_layers, trace.n_tokens
    attn_edges = torch.zeros(n_layers, t, t)  # (L, T, T)
    attn_resid, ffn_resid, ffn = (torch.zeros(n_layers, t) for _ in range(3))  # (L, T) each
    for layer in range(n_layers):
        device = trace.resid[layer].device
        budget, max_chunk = device_budget(device)
        step = chunk_size(t, trace.n_heads, budget_bytes or budget, max_chunk)
        on_cpu = device.type == "cpu"
        edges = attn_edges[layer] if on_cpu else torch.zeros(t, t, device=device)  # (T, T): written in place on the CPU
        resids = attn_resid[layer] if on_cpu else torch.zeros(t, device=device)  # (T,)
        ffns = ffn[layer] if on_cpu else torch.zeros(t, device=device)  # (T,): a parallel block's FFN shares
        u_bytes = t * trace.n_heads * trace.resid[layer].shape[-1] * 4  # u (T, H, d) float32; its layout as much
        limit = DENSE_LAYER_MAX_BYTES.get(device.type, DENSE_LAYER_MAX_BYTES["cpu"])
        hv = head_values(trace, weights[layer], layer, lean=u_bytes > limit, keep_u=2 * u_bytes <= limit)
        for i0 in range(0, t, step):
            i1 = min(t, i0 + step)
            heads, resid, joint_ffn = attention_parts(trace, layer, hv, slice(i0, i1), renorm_threshold)
            edges[i0:i1, :i1] = heads.sum(-1)
            resids[i0:i1] = resid
            if joint_ffn is not None:
                ffns[i0:i1] = joint_ffn
        del hv
        if not on_cpu:
            attn_edges[layer], attn_resid[layer], ffn[layer] = edges.cpu(), resids.cpu(), ffns.cpu()
        if not trace.parallel:
            ffn_resid[layer], ffn[layer] = (x.cpu() for x in ffn_parts(trace, layer, renorm_threshold))
        if on_layer is not None:
            on_layer(layer + 1, n_layers)
    return Contributions(attn_edges, attn_resid, ffn_resid, ffn, renorm_threshold, trace.parallel)
