"""Suggested groups ("supernodes") among a route's nodes: states that carry the same information flow.

circuit-tracer's maintainers have no automatic grouping; Neuronpedia's draft clusters nodes by the cosine
similarity of their edge profiles. lmtt does the same on its own graph, where nodes are residual states:

- a node's profile is the weight of its route's attention edges by token position: what it reads from each
  source position, then what other positions read from it (over the route `sub`, what the user sees). Residual
  and FFN edges stay at one token: they would make every token's chain of states one group, which says nothing;
- two nodes may join when they are of one kind (attention or FFN state) and either neighbours in depth at one
  token (layer l and l+1) or at one depth on different tokens (the same layer reading the same sources);
- pairs are merged greedily, in the order of cosine times the smaller node's flow, while their cosine is at least
  `min_cosine` and both carry at least `min_flow` of the route's busiest node's flow, so small nodes do not fill the groups.

Each group says why: its members, the cosine that joined its weakest pair, and where its flow comes from and goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lmtt.engine.graph import ATTENTION, Subgraph, node_id, states_label
from lmtt.engine.levels import kind_of, layer_of
from lmtt.engine.tokens import readable_tokens, visible

if TYPE_CHECKING:
    from lmtt.analysis import Analysis


@dataclass(frozen=True)
class SuggestedGroup:
    """A proposed supernode: lmtt node ids, a default label and the reason the method gives."""

    label: str
    members: tuple[str, ...]
    cosine: float  # the lowest similarity of the pairs that joined it
    flow: float  # the members' summed edge weight in the route
    reason: str

    def to_dict(self) -> dict:
        return {"label": self.label, "members": list(self.members), "cosine": self.cosine, "flow": self.flow, "reason": self.reason}


def edge_profiles(sub: Subgraph, n_tokens: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """(nodes, (n, 2T) profiles): the nodes that read or are read by attention across tokens, and their attention
    weight in by source position, then out by target position."""
    across = (sub.kind == ATTENTION) & (sub.source != sub.target)  # (E,)
    ends = set(zip(sub.level[across].tolist(), sub.target[across].tolist())) | set(
        zip(sub.source_level[across].tolist(), sub.source[across].tolist())
    )
    keys = sorted(k for k in ends if k[0] > 0)
    index = {k: n for n, k in enumerate(keys)}
    profiles = np.zeros((len(keys), 2 * n_tokens))  # (n, 2T)
    for lv, slv, s, t, w in zip(*(x[across].tolist() for x in (sub.level, sub.source_level, sub.source, sub.target, sub.weight))):
        if (lv, t) in index:
            profiles[index[lv, t], s] += w
        if (slv, s) in index:
            profiles[index[slv, s], n_tokens + t] += w
    return keys, profiles


def suggest_groups(
    analysis: Analysis, sub: Subgraph, min_cosine: float = 0.9, min_flow: float = 0.1, max_size: int = 8
) -> list[SuggestedGroup]:
    """Groups of the route's nodes by edge-profile similarity, weighted by flow (module docstring); largest flow first."""
    t = analysis.trace.n_tokens
    keys, profiles = edge_profiles(sub, t)
    if not keys:
        return []
    flow = profiles.sum(1)  # (n,)
    unit = profiles / np.linalg.norm(profiles, axis=1, keepdims=True).clip(1e-12)  # (n, 2T)
    cosine = unit @ unit.T  # (n, n)
    big = flow >= min_flow * flow.max()
    pairs = []
    for a, (la, pa) in enumerate(keys):
        for b in range(a + 1, len(keys)):
            lb, pb = keys[b]
            neighbours = (pa == pb and abs(layer_of(la) - layer_of(lb)) == 1) or (la == lb and pa != pb)
            if neighbours and kind_of(la) == kind_of(lb) and big[a] and big[b] and cosine[a, b] >= min_cosine:
                pairs.append((cosine[a, b] * min(flow[a], flow[b]), a, b))
    parent = list(range(len(keys)))
    weakest: dict[int, float] = {}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    size = [1] * len(keys)
    for _score, a, b in sorted(pairs, reverse=True):
        ra, rb = root(a), root(b)
        if ra != rb and size[ra] + size[rb] <= max_size:
            parent[rb] = ra
            size[ra] += size[rb]
            weakest[ra] = min(weakest.get(ra, 1.0), weakest.pop(rb, 1.0), float(cosine[a, b]))
    members: dict[int, list[int]] = {}
    for n in range(len(keys)):
        members.setdefault(root(n), []).append(n)
    tokens = readable_tokens(analysis)
    groups = []
    for r, group in members.items():
        if len(group) < 2:
            continue
        names = tuple(node_id(*keys[n]) for n in group)
        total = profiles[group].sum(0)  # (2T,)
        reason = _reason(total, tokens, weakest[r])
        groups.append(SuggestedGroup(states_label(names, tokens), names, weakest[r], float(flow[group].sum()), reason))
    return sorted(groups, key=lambda g: -g.flow)


def _reason(total: np.ndarray, tokens: list[str], cosine: float, k: int = 3) -> str:
    """What the group's attention edges read and who reads it, by token, and how alike its members are."""
    t = len(tokens)

    def top(weights: np.ndarray) -> str:
        order = [p for p in np.argsort(-weights)[:k] if weights[p] > 0]
        return ", ".join(f"token {p} ({visible(tokens[p])}) {weights[p] / weights.sum():.0%}" for p in order)

    parts = [f"reads {top(total[:t])}" if total[:t].any() else "", f"is read by {top(total[t:])}" if total[t:].any() else ""]
    return "; ".join(p for p in parts if p) + f" (edge profiles alike: cosine ≥ {cosine:.2f})"
