"""Which token columns the graph draws, and where: every token, or only those the paths touch, packed side by side.

A 4,000-token prompt drawn one column per token is 128,000 px wide and a quarter of a million markers. The paths to one
token touch a few dozen positions, so a long prompt's graph draws those (and the explained token) next to each other,
with one narrow gap column where tokens were skipped. Plain numpy: no plotly, no Streamlit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from lmtt.engine.graph import Subgraph

PACK_ABOVE_TOKENS = 64  # longer prompts draw only the touched columns unless every column is asked for
EVERY_COLUMN_MAX_TOKENS = 512  # above this, every column is never drawn (16,000+ px and 30,000+ markers)


@dataclass(frozen=True)
class Gap:
    """A run of token positions that are not drawn, shown as one narrow column at `x`."""

    first: int
    last: int  # inclusive
    x: float

    def __len__(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Columns:
    """The drawn token positions (ascending) with their x coordinates, and the gaps between them."""

    n_tokens: int
    positions: np.ndarray  # (C,) int
    x: np.ndarray  # (C,) float
    gaps: tuple[Gap, ...] = ()

    @property
    def packed(self) -> bool:
        return len(self.positions) < self.n_tokens

    @property
    def width(self) -> int:
        """How many column widths the graph spans (drawn tokens and gaps)."""
        return len(self.positions) + len(self.gaps)

    def x_of(self, positions) -> np.ndarray:
        """x of drawn positions (every one must be drawn)."""
        positions = np.asarray(positions)
        index = np.searchsorted(self.positions, positions)
        if positions.size and (index.max() >= len(self.positions) or not np.array_equal(self.positions[index], positions)):
            raise ValueError("a position that is not drawn has no column")
        return self.x[index]

    def key(self) -> str:
        """Identifies the layout: the same key, the same x for every position (a view can be kept across it)."""
        return "all" if not self.packed else ",".join(map(str, self.positions.tolist()))


def every_column(n_tokens: int) -> Columns:
    """One column per token, at x = its position (the layout of short prompts)."""
    positions = np.arange(n_tokens)
    return Columns(n_tokens, positions, positions.astype(float))


def touched_columns(n_tokens: int, sub: Subgraph, also: Iterable[int] = ()) -> Columns:
    """The positions that an edge of `sub` starts or ends at, its root's, and `also`, packed, with a gap column per skipped run
    of two or more tokens (a lone skipped token is drawn: its column costs no more than the gap's)."""
    drawn = np.unique(np.concatenate([sub.source, sub.target, [sub.root[1]], np.fromiter(also, int)]).astype(int))
    drawn = drawn[(drawn >= 0) & (drawn < n_tokens)]
    bounded = np.concatenate([[-1], drawn, [n_tokens]])
    holes = bounded[:-1][np.diff(bounded) == 2] + 1  # a gap column is as wide as a token: one skipped token is drawn instead
    drawn = np.union1d(drawn, holes)
    x, gaps, at, previous = [], [], 0.0, -1
    for p in drawn.tolist():
        if p > previous + 1:
            gaps.append(Gap(previous + 1, p - 1, at))
            at += 1
        x.append(at)
        at += 1
        previous = p
    if previous < n_tokens - 1:  # tokens after the last drawn one (after the explained token: never on its paths)
        gaps.append(Gap(previous + 1, n_tokens - 1, at))
    return Columns(n_tokens, drawn, np.array(x, dtype=float), tuple(gaps))


def columns_for(n_tokens: int, sub: Subgraph, every: bool | None = None, also: Iterable[int] = ()) -> Columns:
    """Every column for short prompts (or when asked, up to EVERY_COLUMN_MAX_TOKENS), else the touched ones.

    `every=None` chooses by length (PACK_ABOVE_TOKENS)."""
    if every is None:
        every = n_tokens <= PACK_ABOVE_TOKENS
    if every and n_tokens <= EVERY_COLUMN_MAX_TOKENS:
        return every_column(n_tokens)
    return touched_columns(n_tokens, sub, also)
