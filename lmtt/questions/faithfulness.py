"""Faithfulness of a route: run the model with everything outside the subgraph knocked out.

Definition. For the subgraph S = paths_to(i, threshold) the model is run once
more, with exact interventions inside that one forward pass:

* attention at (layer l, query q): head h's context becomes sum over kept
  sources j of a_qjh v_jh, where a source is kept when the attention edge
  j -> q of layer l is in S. The attention weights and values are the ones of
  this (intervened) pass, read from the pass itself. The removed parts are
  replaced by zero ("zero") or, with "mean", by their removed attention mass
  times the head's value averaged over positions 0..q (causal: a query never
  sees a later token) in the unintervened run.
* FFN at (l, q): its update is kept when the FFN edge of (l, q) is in S, else
  replaced by zero or by its mean over positions 0..q, taken at the site where it
  is put back (the "ffn_update" patch site: what the residual receives, before a
  residual multiplier, so Granite's multiplier applies once).
* Edits of the analysed run stay in force: an edited head's kept parts are scaled
  as its parts are (Trace.head_scale), and a mean-ablated head's constant is kept
  like a bias. The full route of an edited run is that edited run.
* Residual edges carry the stream as it is, and the attention output bias is kept:
  a route decides which *updates* reach the residual stream, not the stream itself.

Nodes outside S get every part knocked out. With m the target quantity
(log p(A) by default, which moves with p(A); or logit(A), or logit(A) - logit(B)):

    faithfulness = (m(S) - m(empty)) / (m(full) - m(empty))

where `full` is the unintervened model and `empty` the route without any
edge. It is 1 when the route keeps everything the model needs and 0 when it
keeps nothing. We also report p(A) under the route against the model's p(A).
The full graph (threshold 0, every edge kept) gives exactly the model's run,
so faithfulness 1 (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lmtt.engine import attention
from lmtt.engine.edits import causal_mean
from lmtt.engine.graph import EDGE_KINDS, Subgraph
from lmtt.engine.runner import ModelRunner, Trace
from lmtt.engine.tokens import token_text
from lmtt.questions.dla import Target, fraction_restored, json_number

ABLATIONS = ("zero", "mean")
DEFAULT_THRESHOLDS = (0.5, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.04, 0.03, 0.02, 0.01, 0.0)


@dataclass(frozen=True)
class Route:
    """Which parts a subgraph keeps: attention sources per (layer, query) and FFNs per (layer, position)."""

    attn: torch.Tensor  # (L, T, T) bool [layer, query, source]
    ffn: torch.Tensor  # (L, T) bool

    @classmethod
    def of(cls, sub: Subgraph, n_layers: int, n_tokens: int) -> Route:
        attn = torch.zeros(n_layers, n_tokens, n_tokens, dtype=torch.bool)
        ffn = torch.zeros(n_layers, n_tokens, dtype=torch.bool)
        layer = torch.from_numpy((sub.level - 1) // 2)
        is_attn = torch.from_numpy(sub.kind == EDGE_KINDS.index("attention"))
        is_ffn = torch.from_numpy(sub.kind == EDGE_KINDS.index("ffn"))
        src, dst = torch.from_numpy(sub.source), torch.from_numpy(sub.target)
        attn[layer[is_attn], dst[is_attn], src[is_attn]] = True
        ffn[layer[is_ffn], dst[is_ffn]] = True
        return cls(attn, ffn)

    @classmethod
    def empty(cls, n_layers: int, n_tokens: int) -> Route:
        return cls(torch.zeros(n_layers, n_tokens, n_tokens, dtype=torch.bool), torch.zeros(n_layers, n_tokens, dtype=torch.bool))


@dataclass(frozen=True)
class Faithfulness:
    """How much of the target quantity and of p(A) a route keeps (definition in the module docstring)."""

    target: Target
    threshold: float
    ablation: str  # "zero" | "mean"
    edges: int  # edges of the route
    value_full: float  # m of the model
    value_route: float  # m with only the route
    value_empty: float  # m with no edge at all
    prob_full: float  # p(A) of the model
    prob_route: float  # p(A) with only the route
    top_route: str  # the route's own top prediction

    @property
    def faithfulness(self) -> float:
        """NaN ("undefined") when the model's m and the empty route's are within UNDEFINED_BELOW logits."""
        return fraction_restored(self.value_route, self.value_empty, self.value_full)

    @property
    def prob_kept(self) -> float:
        return self.prob_route / self.prob_full if self.prob_full > 0 else float("nan")

    def to_dict(self) -> dict:
        return {
            "quantity": self.target.describe(),
            "threshold": self.threshold,
            "ablation": self.ablation,
            "edges": self.edges,
            "faithfulness": json_number(self.faithfulness),
            "prob_kept": json_number(self.prob_kept),
            "value_full": self.value_full,
            "value_route": self.value_route,
            "value_empty": self.value_empty,
            "prob_full": self.prob_full,
            "prob_route": self.prob_route,
            "top_route": self.top_route,
        }


def _check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")


@dataclass(frozen=True)
class AblationMeans:
    """What mean ablation puts back: causal means of each head's values and of each FFN update (at its patch site)."""

    values: list[torch.Tensor]  # L x (T, H, hd)
    ffn: list[torch.Tensor]  # L x (T, d)

    @classmethod
    @torch.no_grad()
    def of(cls, runner: ModelRunner, trace: Trace) -> AblationMeans:
        """One extra traced pass (for the FFN site); compute once per trace and share it between route runs."""
        values = [causal_mean(v[:, trace.kv_index]) for v in trace.values]
        return cls(values, [causal_mean(f) for f in site_values(runner, trace, "ffn_update")])


@torch.no_grad()
def run_route(runner: ModelRunner, trace: Trace, route: Route, ablation: str = "mean", means: AblationMeans | None = None) -> Trace:
    """The trace of the prompt with everything outside `route` knocked out, in one forward pass (`means`: see AblationMeans)."""
    return runner.trace(trace.token_ids, trace.edits, patch=_route_patch(runner, trace, [route], ablation, means))


# A batch of routes holds at most this many token rows (beyond, a pass is bound by its arithmetic and batching gains
# little; smaller batches also report progress more often) and this many bytes of attention weights, (B, H, T, T) float32.
ROUTE_BATCH_TOKENS = 512
ROUTE_BATCH_BYTES = 256 * 2**20


@torch.no_grad()
def route_logits(
    runner: ModelRunner,
    trace: Trace,
    routes: list[Route],
    ablation: str = "mean",
    means: AblationMeans | None = None,
    at: int | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(R, V) logits at position `at` (default: the last) of the prompt run once per route, many routes to a pass.

    The passes of run_route, as the rows of a batch: at 5 tokens one pass took 0.18 s and a batch of 13 took 0.26 s.
    `on_rows(done)` is told how many routes have run after each batch."""
    at = trace.n_tokens - 1 if at is None else at
    size = max(1, min(ROUTE_BATCH_TOKENS // trace.n_tokens, ROUTE_BATCH_BYTES // (trace.n_heads * trace.n_tokens**2 * 4)))
    out = []
    for start in range(0, len(routes), size):
        chunk = routes[start : start + size]
        ids = trace.token_ids[None].expand(len(chunk), -1)  # (B, T)
        patch = _route_patch(runner, trace, chunk, ablation, means)
        out.append(runner.run_patched(ids, patch, at=at, edits=trace.edits, read_attention=True)[:, 0])  # (B, V)
        if on_rows is not None:
            on_rows(start + len(chunk))
    return torch.cat(out)


def _route_patch(runner: ModelRunner, trace: Trace, routes: list[Route], ablation: str, means: AblationMeans | None) -> Callable:
    """The patch that runs row b of a pass with only routes[b] (see the module docstring), for a trace (one row, whose
    attention inputs the recorder keeps without a batch axis) or a batched pass (every row's)."""
    _check_ablation(ablation)
    t, kv_index = trace.n_tokens, trace.kv_index
    causal = torch.ones(t, t, dtype=torch.bool).tril()  # (T, T) [query, source]
    mean = ablation == "mean"
    if mean and means is None:
        means = AblationMeans.of(runner, trace)
    v_mean, ffn_mean = (means.values, means.ffn) if mean else (None, None)
    attn_kept = torch.stack([r.attn for r in routes])  # (B, L, T, T)
    ffn_kept = torch.stack([r.ffn for r in routes])  # (B, L, T)

    def patch(site: str, layer: int, x: torch.Tensor) -> torch.Tensor | None:  # x: (B, T, .)
        if site == "head_context":
            on = causal.to(x.device)
            keep = attn_kept[:, layer].to(x.device) & on  # (B, T, T)
            lost = on & ~keep  # (B, T, T) the sources each query loses
            if not lost.any():
                return None
            rec = attention.RECORDER.get()  # this pass's queries, keys and values at this layer
            a = trace_attention(rec, layer, kv_index, t)  # (B, H, T, T)
            v = rec["v"][layer]
            v = (v if v.dim() == 4 else v[None])[:, :, kv_index.to(x.device)]  # (B, T, H, hd)
            ctx = torch.einsum("bhqj,bjhc->bqhc", a * keep[:, None], v)  # (B, T, H, hd) the kept parts, summed exactly
            if mean:  # removed mass (sinks keep theirs) x the head's causal mean value
                mass = (a * lost[:, None]).sum(-1).transpose(1, 2)  # (B, T, H)
                ctx = ctx + mass[..., None] * v_mean[layer].to(x.device)
            scale = trace.head_scale[layer].to(x.device) if trace.edits else torch.ones(ctx.shape[2], device=x.device)  # (H,)
            rows = lost.any(-1)  # (B, T) queries that lose a source; the others stay exactly as computed
            out = x.clone().reshape(*ctx.shape)  # (B, T, H, hd)
            # an edited head writes its kept parts scaled; a zeroed or mean-ablated one (scale 0) keeps what the edit wrote
            new = torch.where(scale[:, None] == 0, out, scale[:, None] * ctx.to(x.dtype))  # (B, T, H, hd)
            out[rows] = new[rows]
            return out.reshape(x.shape)
        if site == "ffn_update":
            drop = ~ffn_kept[:, layer].to(x.device)  # (B, T)
            if not drop.any():
                return None
            x = x.clone()
            x[drop] = ffn_mean[layer].to(x.device, x.dtype).expand(len(drop), -1, -1)[drop] if mean else 0
            return x
        return None

    return patch


def site_values(runner: ModelRunner, trace: Trace, site: str) -> list[torch.Tensor]:
    """L x (T, .) what the patch site `site` sees in the analysed run (edits applied): means are taken where they go back."""
    seen: dict[int, torch.Tensor] = {}

    def keep(at: str, layer: int, x: torch.Tensor) -> None:
        if at == site:
            seen[layer] = x[0].detach().float().clone()

    runner.trace(trace.token_ids, trace.edits, patch=keep)
    return [seen[layer] for layer in range(trace.n_layers)]


def trace_attention(rec: dict, layer: int, kv_index: torch.Tensor, t: int) -> torch.Tensor:
    """(B, H, T, T) attention weights of the running pass at `layer`, per row, from what lmtt's attention recorded."""
    q, k = rec["q"][layer], rec["k"][layer]
    q, k = (q, k) if q.dim() == 4 else (q[None], k[None])  # a trace records its one row without a batch axis
    extra = [rec[name][layer] for name in ("softcap", "sinks") if name in rec]  # softcapped or sink attention
    mask, scale, kv = rec["mask"][layer], rec["scale"][layer], kv_index.to(q.device)
    return torch.stack([attention.attention_weights(qb, kb, mask, scale, kv, slice(0, t), t, *extra) for qb, kb in zip(q, k)])


def _measure(row: torch.Tensor, target: Target) -> tuple[float, float, int]:
    """(m, p(A), the top token) of one position's logits (V,)."""
    return float(target.measure(row)), float(row.softmax(-1)[target.token_id]), int(row.argmax())


def faithfulness(
    runner: ModelRunner,
    trace: Trace,
    sub: Subgraph,
    target: Target,
    ablation: str = "mean",
    empty: float | None = None,
    means: AblationMeans | None = None,
) -> Faithfulness:
    """Faithfulness of the subgraph `sub` for the target (one batched pass: the route, and the empty one unless given)."""
    return _faithfulness_of(runner, trace, [sub], target, ablation, means, empty)[0]


def _faithfulness_of(
    runner: ModelRunner,
    trace: Trace,
    subs: list[Subgraph],
    target: Target,
    ablation: str,
    means: AblationMeans | None,
    empty: float | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> list[Faithfulness]:
    """One Faithfulness per subgraph; their routes and the empty one (unless `empty` is given) run as rows of a batch."""
    for sub in subs:
        if sub.root[1] != target.position:
            raise ValueError(f"the subgraph leads to position {sub.root[1]}, the target is at {target.position}")
    _check_ablation(ablation)
    if ablation == "mean" and means is None:
        means = AblationMeans.of(runner, trace)  # once for every route and the empty one
    routes = [Route.of(sub, trace.n_layers, trace.n_tokens) for sub in subs]
    if empty is None:
        routes.append(Route.empty(trace.n_layers, trace.n_tokens))
    rows = route_logits(runner, trace, routes, ablation, means, target.position, on_rows)  # (R, V)
    if empty is None:
        empty = _measure(rows[-1], target)[0]
    m_full, p_full, _ = _measure(trace.logits_at(target.position), target)
    out = []
    for sub, row in zip(subs, rows):
        m_route, p_route, top = _measure(row, target)
        top_text = token_text(runner, top)
        out.append(Faithfulness(target, sub.threshold, ablation, len(sub), m_full, m_route, empty, p_full, p_route, top_text))
    return out


@dataclass(frozen=True)
class FaithfulnessCurve:
    """Faithfulness against the number of edges kept, one point per threshold."""

    points: list[Faithfulness]

    @property
    def edges(self) -> np.ndarray:
        return np.array([p.edges for p in self.points])

    @property
    def values(self) -> np.ndarray:
        return np.array([p.faithfulness for p in self.points])

    def to_dict(self) -> dict:
        return {"points": [p.to_dict() for p in self.points]}


def faithfulness_curve(
    runner: ModelRunner,
    trace: Trace,
    subgraphs: list[Subgraph],
    target: Target,
    ablation: str = "mean",
    on_progress: Callable[[int, int], None] | None = None,
) -> FaithfulnessCurve:
    """One route per subgraph and the empty route, as rows of batched passes, sharing the means for mean ablation.

    `on_progress(done, total)` counts the steps: the means, then the routes, the empty one last (a batch at a time)."""
    _check_ablation(ablation)
    report = on_progress or (lambda _done, _total: None)
    total = len(subgraphs) + 2
    report(0, total)
    means = AblationMeans.of(runner, trace) if ablation == "mean" else None
    report(1, total)
    points = _faithfulness_of(runner, trace, subgraphs, target, ablation, means, on_rows=lambda done: report(1 + done, total))
    return FaithfulnessCurve(points)
