"""Which token columns the graph draws: every one for short prompts, the touched ones packed with gap columns for long ones."""

import numpy as np
import pytest

from lmtt.engine.graph import Subgraph
from lmtt.viz.columns import EVERY_COLUMN_MAX_TOKENS, PACK_ABOVE_TOKENS, Gap, columns_for, every_column, touched_columns


def subgraph(sources: list[int], targets: list[int], root: int) -> Subgraph:
    n = len(sources)
    return Subgraph(
        kind=np.zeros(n, np.int8),
        level=np.ones(n, int),
        source_level=np.zeros(n, int),
        source=np.array(sources, int),
        target=np.array(targets, int),
        weight=np.full(n, 0.5, np.float32),
        root=(1, root),
        threshold=0.04,
    )


def test_touched_columns_sit_side_by_side_with_one_gap_column_per_skipped_run():
    cols = touched_columns(20, subgraph([3, 4, 10], [10, 10, 10], root=10))
    assert cols.positions.tolist() == [3, 4, 10] and cols.packed
    assert cols.gaps == (Gap(0, 2, 0.0), Gap(5, 9, 3.0), Gap(11, 19, 5.0))  # before, between, after the explained token
    assert cols.x_of([3, 4, 10]).tolist() == [1.0, 2.0, 4.0]
    assert cols.width == 6 and [len(g) for g in cols.gaps] == [3, 5, 9]
    assert set(cols.x.tolist()).isdisjoint(g.x for g in cols.gaps)


def test_adjacent_tokens_get_no_gap_and_also_adds_columns():
    cols = touched_columns(5, subgraph([0, 1], [4, 4], root=4), also=[2])
    assert cols.positions.tolist() == [0, 1, 2, 3, 4] and cols.gaps == () and not cols.packed  # 3: a lone skipped token is drawn
    assert cols.x.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert touched_columns(10, subgraph([1], [8], root=8)).positions.tolist() == [0, 1, 8, 9]  # at either end too


def test_a_position_without_a_column_has_no_x():
    cols = touched_columns(20, subgraph([3], [10], root=10))
    with pytest.raises(ValueError, match="not drawn"):
        cols.x_of([5])
    with pytest.raises(ValueError, match="not drawn"):
        cols.x_of([19])


def test_short_prompts_draw_every_column_and_long_ones_only_the_touched():
    sub = subgraph([3], [10], root=10)
    assert not columns_for(PACK_ABOVE_TOKENS, sub).packed
    assert columns_for(PACK_ABOVE_TOKENS + 1, sub).positions.tolist() == [3, 10]
    assert not columns_for(EVERY_COLUMN_MAX_TOKENS, sub, every=True).packed  # asked for: every column
    assert columns_for(EVERY_COLUMN_MAX_TOKENS + 1, sub, every=True).packed  # too many to draw each
    assert columns_for(30, sub, every=False).packed


def test_the_layout_key_changes_with_the_drawn_columns():
    assert every_column(30).key() == every_column(40).key() == "all"
    a, b = touched_columns(100, subgraph([3], [10], root=10)), touched_columns(100, subgraph([4], [10], root=10))
    assert a.key() != b.key() != "all"
