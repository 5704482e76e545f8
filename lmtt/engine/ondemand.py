"""The graph of a long prompt, computed only where a backward sweep reaches.

`paths_to(token, threshold)` walks down from the token's top node and needs the
contributions only of the nodes it reaches. OnDemandGraph computes an
attention node's parts the first time the sweep reaches it (one query row of
one layer: O(T * H * hd * K) work, not the O(T^2 * H * d) of the whole layer)
and keeps the row, so another threshold or token reuses it. FFN nodes cost
O(T * d) per layer and are computed for a whole layer at once (a parallel
block's FFN share comes with its attention row).

Memory grows with the nodes computed, not with L * T^2: per layer it keeps the
lean head values (u_max (T, H), the values and W_O; never the (T, H, d) head
updates) and the rows computed so far. The numbers are the full graph's: the
same attention_parts, on the rows asked for.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from lmtt.engine.attribution import (
    attention_parts,
    attention_whole,
    check_decomposable,
    chunk_size,
    device_budget,
    ffn_parts,
    head_values,
    small_set,
)
from lmtt.engine.graph import ContributionGraph, Subgraph
from lmtt.engine.runner import LayerWeights, Trace

FULL_GRAPH_MAX_TOKENS = 2048  # the longest prompt that gets the full graph from analyze(graph="auto") on an accelerator
# On a CPU the full graph's L·T² work outgrows the trace early: in the bench table (bench/RESULTS.md) the full graph
# takes 0.33 s at T=256 against 0.17 s for the on-demand paths to the last token, 9.6 s against 1.4 s at T=2048.
# Up to 256 tokens it costs at most a few tenths of a second more, and then every token and threshold change is instant.
CPU_FULL_GRAPH_MAX_TOKENS = 256


def full_graph_max_tokens(device: torch.device | str) -> int:
    """The longest prompt that analyze(graph="auto") gives the full graph on `device`; longer ones get this graph."""
    return CPU_FULL_GRAPH_MAX_TOKENS if torch.device(device).type == "cpu" else FULL_GRAPH_MAX_TOKENS


class OnDemandGraph(ContributionGraph):
    """A ContributionGraph whose edges are computed when the sweep first reads them (thread-safe)."""

    def __init__(self, trace: Trace, weights: list[LayerWeights]):
        check_decomposable(trace)
        self.trace, self.weights = trace, weights
        self.n_layers, self.n_tokens = trace.n_layers, trace.n_tokens
        self._rows: list[dict[int, np.ndarray]] = [{} for _ in range(self.n_layers)]  # layer -> {i: (i+1,) edge weights}
        self._resid = np.full((self.n_layers, self.n_tokens), np.nan, dtype=np.float32)  # (L, T) residual edge weights
        self._ffn: list[tuple[np.ndarray, np.ndarray] | None] = [None] * self.n_layers
        self._joint_ffn = np.full((self.n_layers, self.n_tokens), np.nan, dtype=np.float32)  # (L, T) parallel blocks' FFN edges
        self.parallel = trace.parallel
        self._head_values: list = [None] * self.n_layers
        self._scratch: torch.Tensor | None = None  # flat float32: the by-coordinate layouts of one sweep (with_coords)
        self._lock = threading.Lock()

    @property
    def computed_rows(self) -> int:
        """How many attention nodes have been computed so far."""
        return sum(len(r) for r in self._rows)

    def attn_rows(self, layer: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            missing = [int(i) for i in rows if int(i) not in self._rows[layer]]
            if missing:
                self._compute_rows(layer, missing)
            block = np.zeros((len(rows), self.n_tokens), dtype=np.float32)  # (R, T)
            for r, i in enumerate(rows.tolist()):
                block[r, : i + 1] = self._rows[layer][i]
            return block, self._resid[layer][rows]

    def ffn_rows(self, layer: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.parallel:  # split together with the attention parts of those rows
            self.attn_rows(layer, rows)
            return np.zeros(len(rows), dtype=np.float32), self._joint_ffn[layer][rows]
        with self._lock:
            if self._ffn[layer] is None:
                resid, ffn = ffn_parts(self.trace, layer)
                self._ffn[layer] = (resid.cpu().numpy(), ffn.cpu().numpy())
            resid, ffn = self._ffn[layer]
            return resid[rows], ffn[rows]

    def _compute_rows(self, layer: int, rows: list[int]) -> None:
        if self._head_values[layer] is None:
            self._head_values[layer] = head_values(self.trace, self.weights[layer], layer, lean=True, keep_view=True)
        lean = self._head_values[layer]
        rows = sorted(rows)
        device = lean.values.device
        budget, most_queries = device_budget(device)
        step = chunk_size(self.n_tokens, self.trace.n_heads, budget, most_queries)
        # One by-coordinate layout for as many of the rows as fit twice the working-set budget: the rows'
        # small sets overlap, so a layout per chunk of rows would compute the same coordinates of u again.
        small = small_set(attention_whole(self.trace, layer, torch.tensor(rows, device=device)))[0].cpu().numpy()  # (R, K)
        coord_bytes = (rows[-1] + 2) * self.trace.n_heads * 4  # one coordinate's (J + 1, H) slab
        for group in _groups_by_coords(small, max(small.shape[1], 2 * budget // coord_bytes)):
            coords = torch.from_numpy(np.unique(small[group])).to(device)
            need = len(coords) * (rows[group[-1]] + 2) * self.trace.n_heads  # (U, J + 1, H)
            if self._scratch is None or self._scratch.numel() < need:
                grown = 2 * self._scratch.numel() if self._scratch is not None else 0  # a layer's layout often outgrows the last's
                self._scratch = torch.empty(max(need, grown), device=device)
            hv = lean.with_coords(coords, rows[group[-1]] + 1, self._scratch)
            for start in range(0, len(group), step):
                chunk = torch.tensor([rows[g] for g in group[start : start + step]])
                heads, resid, joint_ffn = attention_parts(self.trace, layer, hv, chunk)  # (C, J, H), (C,), (C,) or None
                edges = heads.sum(-1).cpu().numpy()  # (C, J)
                for r, i in enumerate(chunk.tolist()):
                    self._rows[layer][i] = edges[r, : i + 1].copy()
                self._resid[layer][chunk.numpy()] = resid.cpu().numpy()
                if joint_ffn is not None:
                    self._joint_ffn[layer][chunk.numpy()] = joint_ffn.cpu().numpy()

    def _sweep(self, root_level: int, position: int, threshold: float) -> Subgraph:
        """The sweep, with one layout buffer for all the layers it computes, freed when it ends (never kept with
        the analysis)."""
        try:
            return super()._sweep(root_level, position, threshold)
        finally:
            with self._lock:
                self._scratch = None

    def edges_above(self, threshold: float = 0.0):
        raise ValueError("the on-demand graph holds only the nodes its paths reach; analyse with graph='full' to list every edge")


def _groups_by_coords(small: np.ndarray, most: int) -> list[list[int]]:
    """Consecutive runs of rows (indices into small (R, K)) whose small sets together hold at most `most` coordinates."""
    groups: list[list[int]] = []
    seen: set[int] = set()
    for r, coords in enumerate(small.tolist()):
        if groups and len(seen.union(coords)) <= most:
            groups[-1].append(r)
            seen.update(coords)
        else:
            groups.append([r])
            seen = set(coords)
    return groups
