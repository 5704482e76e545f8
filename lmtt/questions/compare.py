"""Two prompts side by side: which edges and heads changed their contribution most.

Positions are aligned one to one when the prompts have the same length, and
by their final tokens otherwise (position i of A meets position i + offset of B,
offset = len(B) - len(A)), so "the last token" always meets "the last token".
Then the overlap's first position is left out of the edges: there the shorter
prompt's first token, an attention sink in most models (it takes whatever
attention is not needed elsewhere), meets an ordinary token of the longer one,
and their edges differ by up to a whole node's share for that reason alone. A
one-token prompt against a longer one so has no edges to compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # questions take an Analysis; they never import the facade
    from lmtt.analysis import Analysis


@dataclass(frozen=True)
class EdgeChange:
    kind: str  # "attention" | "residual" | "ffn"
    layer: int
    into: str  # "attn" | "ffn": the node kind the edge leads into
    source: int  # position in A (B's is source + offset)
    target: int
    weight_a: float
    weight_b: float

    @property
    def delta(self) -> float:
        return self.weight_b - self.weight_a


@dataclass(frozen=True)
class PromptComparison:
    a: Analysis
    b: Analysis
    alignment: str  # "position" | "final token"
    offset: int
    edges: list[EdgeChange]  # largest |delta| first
    heads_a: torch.Tensor  # (L, H) head contributions at A's last token
    heads_b: torch.Tensor  # (L, H) at B's last token

    @property
    def head_delta(self) -> torch.Tensor:
        return self.heads_b - self.heads_a


def _aligned(a: Analysis, b: Analysis) -> tuple[str, int, slice, slice]:
    """(alignment, offset, A's compared positions, B's): the overlap, less its first position where one prompt's first
    token meets the other's ordinary token (module docstring)."""
    ta, tb = len(a.tokens), len(b.tokens)
    offset = tb - ta
    lo = max(0, -offset) + (offset != 0)  # first position of A that exists in B, and is not a first token against another
    return ("position" if offset == 0 else "final token"), offset, slice(lo, ta), slice(lo + offset, tb)


def _last_token_heads(analysis: Analysis) -> torch.Tensor:
    return torch.stack([analysis.head_contributions(layer, -1).heads for layer in range(analysis.n_layers)])  # (L, H)


def compare_prompts(a: Analysis, b: Analysis, top: int = 20) -> PromptComparison:
    """The `top` edges whose weight changed most between A and B, and every head's change at the last token."""
    if a.runner is not b.runner and (a.n_layers, a.n_heads) != (b.n_layers, b.n_heads):
        raise ValueError("the two analyses come from models of different shapes")
    alignment, offset, sa, sb = _aligned(a, b)
    ca, cb = a.contributions, b.contributions
    candidates: list[tuple[float, EdgeChange]] = []
    attn = cb.attn_edges[:, sb, sb] - ca.attn_edges[:, sa, sa]  # (L, n, n) [layer, target, source]
    flat = attn.abs().flatten()
    for idx in flat.topk(min(top, flat.numel())).indices.tolist():
        layer, rest = divmod(idx, attn.shape[1] * attn.shape[2])
        target, source = divmod(rest, attn.shape[2])
        i, j = target + sa.start, source + sa.start
        if j > i:
            continue
        change = EdgeChange(
            "attention", layer, "attn", j, i, float(ca.attn_edges[layer, i, j]), float(cb.attn_edges[layer, i + offset, j + offset])
        )
        candidates.append((abs(change.delta), change))
    for kind, into, wa, wb in (
        ("residual", "attn", ca.attn_resid, cb.attn_resid),
        ("residual", "ffn", ca.ffn_resid, cb.ffn_resid),
        ("ffn", "ffn", ca.ffn, cb.ffn),
    ):
        node = wb[:, sb] - wa[:, sa]  # (L, n)
        flat = node.abs().flatten()
        for idx in flat.topk(min(top, flat.numel())).indices.tolist():
            layer, pos = divmod(idx, node.shape[1])
            i = pos + sa.start
            change = EdgeChange(kind, layer, into, i, i, float(wa[layer, i]), float(wb[layer, i + offset]))
            candidates.append((abs(change.delta), change))
    candidates.sort(key=lambda c: -c[0])
    return PromptComparison(a, b, alignment, offset, [c for _, c in candidates[:top]], _last_token_heads(a), _last_token_heads(b))
