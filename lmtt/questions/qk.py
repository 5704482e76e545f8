"""QK attribution: why a head attends from query i to key j.

The pre-softmax score is s_ij = scale * q_i . k_j. The residual x_i is the sum of its parts z_a: the
token embedding (and a learned position embedding, GPT-2 and OPT, as a part of its own) and every
earlier attention and FFN update. With each norm's scale frozen at its value in the real pass
(lmtt.engine.norms) — the attention's input norm, and the query and key norms where a family has them
(Qwen3, OLMo-2, Gemma-3, Cohere) — the map x_i -> q_i is affine:

    q_i = f_i(n_i),  n_i = sum_a s_i g ⊙ P z_a + beta,  f_i(h) = L_i h + c_i

with L_i linear: the query projection, the frozen query norm and the rotary embedding at position i,
whatever its layout (half or interleaved, partial, scaled, YaRN, per-layer types). So

    q_i = sum_a L_i(s_i g ⊙ P z_a) + f_i(beta),   one query part per component, plus a bias part,

and likewise k_j, and s_ij = sum_{a, b} scale * q_i^a . k_j^b exactly.

lmtt does not re-implement any family's attention to get L_i: it runs the model's own modules on the
parts. One batched pass over the two positions (key, query), with the attention's input replaced by
rows [n(x), 0, each part's image, beta] and the q/k norms frozen, ends as soon as that layer's
queries and keys are known (ModelRunner.attention_inputs). A part's query is f(part) - f(0). The rows
that rebuild the whole are checked against the queries and keys the trace recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtt.engine.adapters import resolve
from lmtt.engine.levels import block_name, head_name
from lmtt.engine.norms import FrozenNorm, freeze
from lmtt.engine.runner import ModelRunner, Trace

TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}  # relative: the rebuilt query/key against the recorded one
LOW_PRECISION_TOLERANCE = 3e-2  # bf16 / fp16 weights: each part is rounded once more than the whole was


class QKError(ValueError):
    """The model's attention cannot be decomposed this way, or the indices are out of range."""


@dataclass(frozen=True)
class QKAttribution:
    """Score of (layer, head) from `query` to `key`, split into (query part, key part) pairs (scale applied)."""

    layer: int
    head: int
    query: int
    key: int
    parts: tuple[str, ...]  # P names: emb, [pos], L0.attn, L0.FFN, ..., bias
    pairs: torch.Tensor  # (P, P) [query part, key part]
    score: float  # the recorded pre-softmax score scale * q . k (before the mask, any softcap and any sink)

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

    def folded(self, k: int = 12) -> tuple[list[str], list[str], torch.Tensor]:
        """(query names, key names, table): the k query and k key parts that take part in the most |pair| (the sum of
        their pairs' sizes), and a "rest" row and column for everything else, so the (k+1, k+1) table still sums to the
        score. By |total| instead (the bars' order), a part whose pairs cancel was left out with the largest pair in it:
        on the IOI prompt, three of five (head, key) choices had their largest pair in "rest"."""

        def groups(mass: torch.Tensor) -> list[torch.Tensor]:
            top = mass.topk(min(k, len(mass))).indices.sort().values  # (k,)
            rest = torch.ones(len(mass), dtype=torch.bool).index_fill_(0, top, False).nonzero()[:, 0]
            return [top[i : i + 1] for i in range(len(top))] + ([rest] if len(rest) else [])

        size = self.pairs.abs()  # (P, P)
        rows, cols = groups(size.sum(1)), groups(size.sum(0))
        table = torch.stack([torch.stack([self.pairs[r][:, c].sum() for c in cols]) for r in rows])  # (k [+1], k [+1])

        def names(gs: list[torch.Tensor]) -> list[str]:
            return [self.parts[int(g[0])] if len(g) == 1 else f"rest ({len(g)})" for g in gs]

        return names(rows), names(cols), table

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


@dataclass(frozen=True)
class KeyScores:
    """One query's pre-softmax score against every key it may attend to (scale * q . k, before mask, softcap and sink),
    and the attention weight that each key got."""

    layer: int
    head: int
    query: int
    scores: torch.Tensor  # (J,) J = query + 1
    weights: torch.Tensor  # (J,) 0 where masked (a sliding window)


def key_scores(trace: Trace, layer: int, head: int, query: int) -> KeyScores:
    """Every key's score for one query of one head, from the recorded queries and keys (no model run)."""
    kv = int(trace.kv_index[head])
    q, k = trace.queries[layer][head, query], trace.keys[layer][kv, : query + 1]  # (hd,), (J, hd)
    scores = trace.scales[layer] * (k @ q)  # (J,)
    weights = trace.attention(layer, torch.tensor([query]), n_keys=query + 1)[head, 0]  # (J,)
    return KeyScores(layer, head, query, scores.cpu(), weights.cpu())


def part_names(runner: ModelRunner, layer: int) -> tuple[str, ...]:
    """The names of the parts of the residual entering `layer`, then the constant part."""
    pos = ("pos",) if _position_embedding(runner) else ()
    return ("emb", *pos, *(block_name(k, l) for l in range(layer) for k in ("attn", "ffn")), "bias")


def _position_embedding(runner: ModelRunner) -> bool:
    path = runner.adapter.position_embedding
    return bool(path) and resolve(runner.model, path) is not None


def residual_parts(runner: ModelRunner, trace: Trace, layer: int, positions: torch.Tensor) -> torch.Tensor:
    """(N, P-1, d) the parts of resid[layer] at N positions, in part_names' order; they sum to the residual.

    A learned position embedding is the embedding state minus the token's own embedding row.
    """
    emb = trace.resid[0][positions].float()  # (N, d)
    rows = [emb]
    if _position_embedding(runner):
        tokens = runner.model.get_input_embeddings()(trace.token_ids[positions].to(runner.device)).float().to(emb.device)  # (N, d)
        rows = [tokens, emb - tokens]
    for l in range(layer):
        rows += [trace.attn_out[l][positions].float(), trace.ffn_out[l][positions].float()]
    return torch.stack(rows, dim=1)


def _tolerance(runner: ModelRunner) -> float:
    return TOLERANCE.get(next(runner.model.parameters()).dtype, LOW_PRECISION_TOLERANCE)


def _frozen_output(module: torch.nn.Module, spec, x: torch.Tensor) -> torch.Tensor:
    """A norm's output on every batch row of x (B, T, ..., w) with the scale of row 0 (the real pass) at each position."""
    frozen = freeze(module, spec, x[0])  # scale (T, ...) from the real row, by the norm's own formula and epsilon
    out = FrozenNorm(frozen.scale[None], frozen.gain, None, frozen.center).linear(x.float())  # (B, T, ..., w)
    return out if frozen.bias is None else out + frozen.bias


@torch.no_grad()
def qk_attribution(runner: ModelRunner, trace: Trace, layer: int, head: int, query: int, key: int) -> QKAttribution:
    """The (query part x key part) table of one attention score; see the module docstring."""
    t = trace.n_tokens
    if not 0 <= layer < trace.n_layers or not 0 <= head < trace.n_heads:
        raise QKError(f"head {head_name(layer, head)} is out of range: {trace.n_layers} layers of {trace.n_heads} heads")
    if not 0 <= key <= query < t:
        raise QKError(f"need 0 <= key <= query < {t} (attention is causal), got query {query}, key {key}")
    a, block, dev = runner.adapter, runner.blocks[layer], runner.layer_devices[layer]
    positions = torch.tensor([key, query] if key < query else [query])  # (N,) the short pass's positions, in order
    parts = residual_parts(runner, trace, layer, positions).to(dev)  # (N, P-1, d)
    x = trace.resid[layer][positions].float().to(dev)  # (N, d)
    norm = resolve(block, a.attn_norm) if a.attn_norm else None
    if norm is None:  # the attention reads the state itself (OLMo-2)
        images, beta, whole = parts, torch.zeros_like(x[0]), x
    else:
        frozen = freeze(norm, a.norm, x, norm(x.to(norm.weight.dtype)).float())  # every norm of a family is one kind
        images = frozen.linear(parts)  # (N, P-1, d): s g ⊙ P z
        beta = torch.zeros_like(x[0]) if frozen.bias is None else frozen.bias.to(dev)  # (d,)
        whole = images.sum(1) + beta  # (N, d) n(x), as the frozen map rebuilds it
    rows = torch.cat([whole[None], torch.zeros_like(whole)[None], images.transpose(0, 1), beta.expand_as(whole)[None]])  # (P+2, N, d)
    norms = {site: resolve(block, path) for site, path in (("q_norm", a.q_norm), ("k_norm", a.k_norm)) if path}

    def patch(site: str, at: int, h: torch.Tensor) -> torch.Tensor | None:
        if at != layer:
            return None
        if site == "attn_in":
            return rows
        if site in norms and norms[site] is not None:
            return _frozen_output(norms[site], a.norm, h)
        return None

    b = rows.shape[0]
    ids = trace.token_ids[positions].expand(b, -1)  # (B, N): the layers below run on the real tokens; their output is replaced
    try:
        q, k, _ = runner.attention_inputs(ids, positions.expand(b, -1), layer, patch)  # (B, H, N, hd), (B, K, N, hd)
    except RuntimeError as e:  # the pass never reached the attention function: an attention lmtt cannot follow
        raise QKError(f"QK attribution cannot follow this model's attention at layer {layer}: {e}") from None
    kv = int(trace.kv_index[head])
    sides = []
    for name, got, unit, recorded in (("query", q, head, trace.queries[layer][head, query]), ("key", k, kv, trace.keys[layer][kv, key])):
        at = -1 if name == "query" else 0  # the query is the short pass's last position, the key its first
        vecs = got[:, unit, at]  # (B, hd)
        split = torch.cat([vecs[2:-1] - vecs[1], vecs[-1:]])  # (P, hd): each part's image f(z) - f(0), then the bias part f(beta)
        recorded = recorded.float().to(split.device)
        for what, rebuilt in (("rebuilt", split.sum(0)), ("re-run", vecs[0])):
            err = float((rebuilt - recorded).norm() / recorded.norm().clamp_min(1e-6))
            if err > _tolerance(runner):
                raise QKError(f"the {what} {name} differs from the model's by {err:.2g} (relative) at layer {layer}")
        sides.append(split)
    scale = trace.scales[layer]
    pairs = scale * sides[0] @ sides[1].T  # (P, P)
    score = scale * float(trace.queries[layer][head, query] @ trace.keys[layer][kv, key])
    return QKAttribution(layer, head, query, key, part_names(runner, layer), pairs.cpu(), score)
