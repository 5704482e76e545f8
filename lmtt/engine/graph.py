"""The contribution graph and the important subgraph leading to a token.

Nodes are residual-stream states: the embedding of each token, and per
(layer, token) the state after attention ("attn") and after the FFN ("ffn").
Node levels (lmtt.engine.levels) run 0 (embeddings), 2l+1 (attn of layer l), 2l+2 (ffn of layer l).

Edges into attn (l, i): one attention edge from the previous state of every
source j <= i (weight summed over heads) and one residual edge from the
previous state of i. Edges into ffn (l, i): a residual edge and an FFN edge,
both from attn (l, i).

Parallel blocks (GPT-J, GPT-NeoX, Phi, Cohere) have no state after attention:
both sublayers read the block input. Their block output ffn (l, i) is one node
whose attention, residual and FFN edges all start at the block input (level 2l),
split together (lmtt.engine.attribution). No attn node exists for them, and
every edge carries its source level.

Everything runs on arrays: a backward sweep over the 2L levels, no per-edge
Python and no graph library search.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmtt.engine.attribution import Contributions
from lmtt.engine.levels import kind_of, layer_of, level_of
from lmtt.engine.tokens import visible

EDGE_KINDS = ("attention", "residual", "ffn")
ATTENTION, RESIDUAL, FFN = range(3)


def node_id(level: int, position: int) -> str:
    """Stable node names: emb:P, attn:L:P, ffn:L:P."""
    if level == 0:
        return f"emb:{position}"
    return f"{kind_of(level)}:{layer_of(level)}:{position}"


def states_label(nodes: Sequence[str], tokens: Sequence[str], shown: int = 3) -> str:
    """A short name for one state or a set of states, as the lens names its rows and the pages show tokens:
    'L23 attn · ␣is', 'L21–22 ffn · ␣Mary ␣John …', 'emb, L3–5 attn & ffn · …' for a user's mixed group. `tokens`
    are the prompt's readable tokens (engine.tokens)."""
    parsed = [parse_node(n) for n in nodes]
    kinds = [k for k in ("attn", "ffn") if any(p[0] == k for p in parsed)]
    layers = sorted({layer for kind, layer, _ in parsed if kind != "embedding"})
    span = f"L{layers[0]}" if len(layers) == 1 else f"L{layers[0]}–{layers[-1]}" if layers else ""
    with_emb = any(p[0] == "embedding" for p in parsed)
    depth = ", ".join((["emb"] if with_emb else []) + ([f"{span} {' & '.join(kinds)}"] if kinds else []))
    positions = sorted({p for *_, p in parsed})
    where = " ".join(visible(tokens[p]) for p in positions[:shown]) + (" …" if len(positions) > shown else "")
    return f"{depth} · {where}"


def parse_node(node: str) -> tuple[str, int, int]:
    """(kind, layer, position) from a node id; embeddings have layer -1."""
    parts = node.split(":")
    try:
        if parts[0] == "emb" and len(parts) == 2:
            return "embedding", -1, int(parts[1])
        if parts[0] in ("attn", "ffn") and len(parts) == 3:
            return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        pass
    raise ValueError(f"not a node id: {node!r} (expected emb:P, attn:L:P or ffn:L:P)")


@dataclass(frozen=True)
class Subgraph:
    """Edges as parallel arrays; nodes are the edges' endpoints plus the target."""

    kind: np.ndarray  # (E,) int8 index into EDGE_KINDS
    level: np.ndarray  # (E,) level of the target node
    source_level: np.ndarray  # (E,) level of the source node: level - 1, or level - 2 into a parallel block's output
    source: np.ndarray  # (E,) source position
    target: np.ndarray  # (E,) target position
    weight: np.ndarray  # (E,) float32
    root: tuple[int, int]  # (level, position) of the node the paths lead to
    threshold: float

    def __len__(self) -> int:
        return len(self.weight)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The per-edge arrays in field order: kind, level, source_level, source, target, weight."""
        return (self.kind, self.level, self.source_level, self.source, self.target, self.weight)

    def only(self, keep: np.ndarray) -> Subgraph:
        """The edges where `keep` (E,) is true, with the same root and threshold."""
        return Subgraph(*(x[keep] for x in self.arrays), self.root, self.threshold)

    def node_keys(self) -> list[tuple[int, int]]:
        """(level, position) of every node, sorted bottom-up."""
        keys = {self.root}
        keys.update(zip(self.source_level.tolist(), self.source.tolist()))
        keys.update(zip(self.level.tolist(), self.target.tolist()))
        return sorted(keys)

    def nodes(self) -> list[dict]:
        out = []
        for level, pos in self.node_keys():
            out.append({"id": node_id(level, pos), "layer": layer_of(level), "position": pos, "kind": kind_of(level)})
        return out

    def edges(self) -> list[dict]:
        return [
            {
                "source": node_id(sl, s),
                "target": node_id(lv, t),
                "weight": w,
                "kind": EDGE_KINDS[k],
            }
            for k, lv, sl, s, t, w in zip(
                self.kind.tolist(),
                self.level.tolist(),
                self.source_level.tolist(),
                self.source.tolist(),
                self.target.tolist(),
                self.weight.tolist(),
            )
        ]

    def to_dict(self) -> dict:
        return {"nodes": self.nodes(), "edges": self.edges()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_networkx(self):
        """A networkx MultiDiGraph (an attention and a residual edge can join the same two nodes)."""
        import networkx as nx

        g = nx.MultiDiGraph()
        for node in self.nodes():
            g.add_node(node["id"], **{k: v for k, v in node.items() if k != "id"})
        for edge in self.edges():
            g.add_edge(edge["source"], edge["target"], key=edge["kind"], weight=edge["weight"], kind=edge["kind"])
        return g


class ContributionGraph:
    """All edge weights of one analysis; answers `paths_to` without the model."""

    def __init__(self, contributions: Contributions):
        c = contributions
        self.n_layers, self.n_tokens = c.attn_resid.shape
        self.attn_edges = c.attn_edges.numpy()  # (L, T, T) [l, target i, source j]
        self.attn_resid = c.attn_resid.numpy()  # (L, T)
        self.ffn_resid = c.ffn_resid.numpy()  # (L, T)
        self.ffn = c.ffn.numpy()  # (L, T)
        self.parallel = c.parallel

    @property
    def top_level(self) -> int:
        return level_of("ffn", self.n_layers - 1)

    def _position(self, token: int) -> int:
        if not -self.n_tokens <= token < self.n_tokens:
            raise IndexError(f"token index {token} is out of range for {self.n_tokens} tokens")
        return token % self.n_tokens

    def paths_to(self, token: int = -1, threshold: float = 0.04) -> Subgraph:
        """Edges above `threshold` from which the last node of `token` can be reached."""
        return self._sweep(self.top_level, self._position(token), threshold)

    def paths_to_node(self, level: int, position: int, threshold: float = 0.04) -> Subgraph:
        """Edges above `threshold` from which node (level, position) can be reached: why any state is what it is."""
        if not 0 <= level <= self.top_level:
            raise IndexError(f"level {level} is out of range: the graph has levels 0 to {self.top_level}")
        return self._sweep(level, self._position(position), threshold)

    # ---- what the sweep reads (OnDemandGraph computes it when first asked) ----
    def attn_rows(self, layer: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, T) attention edge weights into nodes (layer, rows), and (R,) their residual edges."""
        return self.attn_edges[layer][rows], self.attn_resid[layer][rows]

    def ffn_rows(self, layer: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R,) residual and FFN edge weights into the FFN nodes (layer, rows) (parallel: the residual's are in attn_rows)."""
        return self.ffn_resid[layer][rows], self.ffn[layer][rows]

    def node_edge_weight(self, kind: str, level: int, position: int) -> float:
        """The weight of the residual or FFN edge into node (level, position)."""
        layer, is_ffn = divmod(level - 1, 2)
        at = np.array([position])
        if is_ffn and (kind == "ffn" or not self.parallel):
            resid, ffn = self.ffn_rows(layer, at)
            return float((ffn if kind == "ffn" else resid)[0])
        return float(self.attn_rows(layer, at)[1][0])

    def _sweep(self, root_level: int, position: int, threshold: float) -> Subgraph:
        if not np.isfinite(threshold) or threshold < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        if self.parallel and root_level % 2:
            raise ValueError("a parallel block has no state after attention: start from its output (an ffn node)")
        reached = np.zeros(self.n_tokens, dtype=bool)  # (T,) nodes reached at the current level
        reached[position] = True
        found: list[tuple] = []  # (kind, level, source level, sources, targets, weights)
        level = root_level
        while level > 0 and reached.any():
            layer, is_ffn = divmod(level - 1, 2)
            below = np.zeros_like(reached)
            if is_ffn and not self.parallel:
                rows = np.flatnonzero(reached)
                for kind, w in zip((RESIDUAL, FFN), self.ffn_rows(layer, rows)):
                    hit = rows[w > threshold]
                    found.append((kind, level, level - 1, hit, hit, w[w > threshold]))
                    below[hit] = True
                level -= 1
                reached = below
                continue
            source_level = level - 2 if self.parallel else level - 1  # a parallel block's parts all read its input
            rows = np.flatnonzero(reached)
            block, resid = self.attn_rows(layer, rows)  # (R, T), (R,)
            singles = [(RESIDUAL, resid)] + ([(FFN, self.ffn_rows(layer, rows)[1])] if self.parallel else [])
            for kind, w in singles:
                keep = w > threshold
                found.append((kind, level, source_level, rows[keep], rows[keep], w[keep]))
                below[rows[keep]] = True
            r, src = np.nonzero(block > threshold)
            found.append((ATTENTION, level, source_level, src, rows[r], block[r, src]))
            below[src] = True
            level = source_level
            reached = below
        return _concat(found, (root_level, position), threshold)

    def edges_above(self, threshold: float = 0.0) -> Subgraph:
        """Every edge above the threshold, reachable or not (the full graph at threshold 0)."""
        full = self.top_level
        found = []
        for layer in range(self.n_layers):
            lv_attn, lv_ffn = level_of("attn", layer), level_of("ffn", layer)
            into, src = (lv_ffn, lv_ffn - 2) if self.parallel else (lv_attn, lv_attn - 1)  # where attention edges go
            i, j = np.nonzero(self.attn_edges[layer] > threshold)
            found.append((ATTENTION, into, src, j, i, self.attn_edges[layer][i, j]))
            singles = [(RESIDUAL, into, src, self.attn_resid[layer])]
            if self.parallel:
                singles.append((FFN, lv_ffn, src, self.ffn[layer]))
            else:
                singles += [(RESIDUAL, lv_ffn, lv_attn, self.ffn_resid[layer]), (FFN, lv_ffn, lv_attn, self.ffn[layer])]
            for kind, lv, slv, w in singles:
                hit = np.flatnonzero(w > threshold)
                found.append((kind, lv, slv, hit, hit, w[hit]))
        return _concat(found, (full, self.n_tokens - 1), threshold)


def _concat(found, root: tuple[int, int], threshold: float) -> Subgraph:
    """found: (kind, level, source level, sources (n,), targets (n,), weights (n,)) runs, as one Subgraph."""

    def cat(k: int, dtype) -> np.ndarray:
        return np.concatenate([np.full(len(f[3]), f[k]) if k < 3 else f[k] for f in found]).astype(dtype) if found else np.zeros(0, dtype)

    return Subgraph(
        kind=cat(0, np.int8),
        level=cat(1, np.int32),
        source_level=cat(2, np.int32),
        source=cat(3, np.int64),
        target=cat(4, np.int64),
        weight=cat(5, np.float32),
        root=root,
        threshold=threshold,
    )
