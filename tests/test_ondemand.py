"""The on-demand graph of a long prompt gives the full graph's paths, computing only the nodes they reach."""

import numpy as np
import pytest
import torch

from lmtt.analysis import _analysis_of
from lmtt.engine import attribution
from lmtt.engine.attribution import compute_contributions
from lmtt.engine.graph import ContributionGraph
from lmtt.engine.ondemand import OnDemandGraph
from tests.tiny_models import token_ids


def same_subgraph(a, b) -> None:
    key = lambda s: sorted(zip(s.kind.tolist(), s.level.tolist(), s.source.tolist(), s.target.tolist()))  # noqa: E731
    assert key(a) == key(b)
    order_a = np.lexsort((a.target, a.source, a.level, a.kind))
    order_b = np.lexsort((b.target, b.source, b.level, b.kind))
    assert np.allclose(a.weight[order_a], b.weight[order_b], atol=1e-5)


def test_paths_equal_the_full_graphs(tiny_runner):
    trace = tiny_runner.trace(token_ids(14))
    full = ContributionGraph(compute_contributions(trace, tiny_runner.layer_weights))
    lazy = OnDemandGraph(trace, tiny_runner.layer_weights)
    for token, threshold in ((-1, 0.04), (-1, 0.01), (6, 0.04), (3, 0.0)):
        same_subgraph(lazy.paths_to(token, threshold), full.paths_to(token, threshold))


def test_nodes_are_computed_once_and_only_where_paths_reach(tiny_runner):
    trace = tiny_runner.trace(token_ids(14))
    lazy = OnDemandGraph(trace, tiny_runner.layer_weights)
    lazy.paths_to(5, 0.2)
    first = lazy.computed_rows
    assert 0 < first < trace.n_layers * trace.n_tokens  # token 5 cannot reach rows 6..13
    assert all(i <= 5 for rows in lazy._rows for i in rows)
    lazy.paths_to(5, 0.3)  # a higher threshold reaches a subset: nothing new
    assert lazy.computed_rows == first


@pytest.mark.parametrize("fused", [False, True])
def test_lean_head_values_give_the_dense_proximities(tiny_runner, fused, monkeypatch, request):
    if fused:  # tiny inputs would otherwise always take the eager small-coordinate kernel
        request.getfixturevalue("compiled_kernels")
        monkeypatch.setattr(attribution, "EAGER_BELOW", 0)
    trace = tiny_runner.trace(token_ids(12))
    dense = attribution.head_values(trace, tiny_runner.layer_weights[1], 1)
    lean = attribution.head_values(trace, tiny_runner.layer_weights[1], 1, lean=True)
    assert lean.u is None and torch.allclose(lean.u_max, dense.u_max, atol=1e-5)
    rows = torch.tensor([2, 7, 11])
    h_dense, r_dense, _ = attribution.attention_parts(trace, 1, dense, rows)
    h_lean, r_lean, _ = attribution.attention_parts(trace, 1, lean, rows)
    assert torch.allclose(h_dense, h_lean, atol=1e-6) and torch.allclose(r_dense, r_lean, atol=1e-6)
    contiguous, *_ = attribution.attention_parts(trace, 1, dense, slice(0, 12))
    assert torch.allclose(h_dense, contiguous[rows], atol=1e-6)
    needed = torch.unique(attribution.small_set(trace.mid(1, rows))[0])
    assert not torch.isin(needed, torch.arange(3)).all()
    # a layout prepared for these rows (what OnDemandGraph builds once per layer), and one that lacks
    # coordinates the rows need (the kernel must then build its own, not read row -1)
    for coords in (needed, torch.arange(3)):
        prepared = lean.with_coords(coords, 12)
        assert prepared.by_coord.shape == (len(coords), 13, dense.u_max.shape[1]) and (prepared.coord_rows >= 0).sum() == len(coords)
        h_prep, r_prep, _ = attribution.attention_parts(trace, 1, prepared, rows)
        assert torch.allclose(h_dense, h_prep, atol=1e-6) and torch.allclose(r_dense, r_prep, atol=1e-6)


def test_analyses_of_long_prompts_are_on_demand(tiny_runner, monkeypatch):
    import lmtt.analysis

    monkeypatch.setattr(lmtt.analysis, "full_graph_max_tokens", lambda device: 10)
    long, short = _analysis_of(tiny_runner, tiny_runner.trace(token_ids(12))), _analysis_of(tiny_runner, tiny_runner.trace(token_ids(8)))
    assert long.on_demand and not short.on_demand
    forced = _analysis_of(tiny_runner, tiny_runner.trace(token_ids(12)), graph="full")
    assert not forced.on_demand
    same_subgraph(long.paths_to(-1, 0.04), forced.paths_to(-1, 0.04))
    assert torch.allclose(long.contributions.attn_edges, forced.contributions.attn_edges)  # computed in full on first use
    with pytest.raises(ValueError, match="graph must be one of"):
        _analysis_of(tiny_runner, tiny_runner.trace(token_ids(5)), graph="sparse")


def test_rows_grouped_under_a_small_layout_budget_give_the_same_paths(tiny_runner, monkeypatch):
    """Under a tiny budget each layout holds a few coordinates: many groups, the same numbers."""
    import lmtt.engine.ondemand

    trace = tiny_runner.trace(token_ids(14))
    full = ContributionGraph(compute_contributions(trace, tiny_runner.layer_weights))
    monkeypatch.setattr(lmtt.engine.ondemand, "device_budget", lambda _device: (1, 3))  # layouts of K coordinates, chunks of 1 row
    lazy = OnDemandGraph(trace, tiny_runner.layer_weights)
    same_subgraph(lazy.paths_to(-1, 0.0), full.paths_to(-1, 0.0))  # the groups' layouts share one buffer, stale between them
    assert lazy._scratch is None  # and the sweep does not keep it with the analysis


def test_groups_by_coords():
    from lmtt.engine.ondemand import _groups_by_coords

    small = np.array([[0, 1], [1, 2], [5, 6], [6, 5], [0, 7]])
    assert _groups_by_coords(small, 3) == [[0, 1], [2, 3], [4]]
    assert _groups_by_coords(small, 2) == [[0], [1], [2, 3], [4]]
    assert _groups_by_coords(small, 8) == [[0, 1, 2, 3, 4]]


def test_a_cpu_gives_the_full_graph_only_to_short_prompts():
    """On a CPU the full graph's L·T² work outgrows the trace from a few hundred tokens (bench/RESULTS.md), so "auto"
    gives longer prompts the on-demand graph there (2.6 s against 4.6 s to the first paths at 500 tokens); an
    accelerator keeps the full graph longer."""
    import lmtt
    from lmtt.engine.ondemand import full_graph_max_tokens
    from lmtt.engine.runner import ModelRunner
    from tests.tiny_models import tiny_model

    runner = ModelRunner(tiny_model("qwen3"), tokenizer=None, name="qwen3")
    limit = full_graph_max_tokens("cpu")
    assert full_graph_max_tokens("cuda") > limit
    short, long = lmtt.analyze(runner, token_ids(limit)), lmtt.analyze(runner, token_ids(limit + 1))
    assert not short.on_demand and long.on_demand
    full = lmtt.analyze(runner, token_ids(limit + 1), graph="full")
    same_subgraph(long.paths_to(-1, 0.04), full.paths_to(-1, 0.04))
