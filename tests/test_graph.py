"""paths_to on arrays against a networkx search over the full graph."""

import json

import networkx as nx
import pytest
import torch

from lmtt.analysis import Analysis
from lmtt.engine.attribution import compute_contributions
from lmtt.engine.graph import ContributionGraph, node_id, parse_node
from tests.tiny_models import token_ids


@pytest.fixture(scope="module")
def graph(tiny_runner) -> ContributionGraph:
    trace = tiny_runner.trace(token_ids(10))
    return ContributionGraph(compute_contributions(trace, tiny_runner.layer_weights))


def edge_set(sub):
    return {(e["source"], e["target"], e["kind"]) for e in sub.edges()}


@pytest.mark.parametrize("threshold", [0.0, 0.02, 0.05, 0.2])
@pytest.mark.parametrize("token", [-1, 0, 4])
def test_paths_to_equals_backward_search_on_the_full_graph(graph, token, threshold):
    full = graph.edges_above(threshold).to_networkx()
    root = node_id(graph.top_level, token % graph.n_tokens)
    keep = (nx.ancestors(full, root) | {root}) if root in full else {root}
    expected = {(u, v, k) for u, v, k in full.edges(keys=True) if v in keep}
    assert edge_set(graph.paths_to(token, threshold)) == expected


@pytest.mark.parametrize("threshold", [0.0, 0.05])
def test_paths_to_any_node_equal_a_backward_search_on_the_full_graph(graph, threshold):
    """Any state, not only a token's output: the edges that reach node (level, 3), found by networkx over every edge."""
    full = graph.edges_above(threshold).to_networkx()
    levels = range(2, graph.top_level + 1, 2) if graph.parallel else range(1, graph.top_level + 1)  # no mid state in parallel blocks
    for level in levels:
        root = node_id(level, 3)
        keep = (nx.ancestors(full, root) | {root}) if root in full else {root}
        expected = {(u, v, k) for u, v, k in full.edges(keys=True) if v in keep}
        assert edge_set(graph.paths_to_node(level, 3, threshold)) == expected, root
    assert edge_set(graph.paths_to_node(graph.top_level, 3, threshold)) == edge_set(graph.paths_to(3, threshold))


def test_threshold_zero_keeps_every_edge(graph):
    sub = graph.paths_to(-1, 0.0)
    t, n_layers = graph.n_tokens, graph.n_layers
    # every node reaches the last token's top node at threshold 0 only through causal paths
    assert len(sub) == len(graph.edges_above(0.0)) - _edges_not_reaching_last(graph)
    assert (sub.weight > 0).all()
    assert n_layers * t * (t + 1) // 2 <= len(graph.edges_above(0.0))


def _edges_not_reaching_last(graph) -> int:
    full = graph.edges_above(0.0).to_networkx()
    root = node_id(graph.top_level, graph.n_tokens - 1)
    keep = nx.ancestors(full, root) | {root}
    return sum(1 for _, v in full.edges() if v not in keep)


def test_weights_in_json_are_the_stored_contributions(graph):
    sub = graph.paths_to(-1, 0.01)
    for edge in sub.edges():
        kind, layer, target = parse_node(edge["target"])
        source = parse_node(edge["source"])[2]
        if edge["kind"] == "attention":
            assert edge["weight"] == pytest.approx(float(graph.attn_edges[layer, target, source]))
        elif edge["kind"] == "ffn":
            assert edge["weight"] == pytest.approx(float(graph.ffn[layer, target]))
        else:
            w = graph.attn_resid if kind == "attn" or graph.parallel else graph.ffn_resid  # parallel: one node per block
            assert edge["weight"] == pytest.approx(float(w[layer, target]))


def test_parallel_edges_start_where_the_block_reads(graph):
    """A parallel block's FFN and attention read its input: no edge may start or end at a state after attention."""
    sub = graph.edges_above(0.0)
    if graph.parallel:
        assert (sub.level % 2 == 0).all() and (sub.source_level == sub.level - 2).all()
        assert all(not n["id"].startswith("attn:") for n in graph.paths_to(-1, 0.0).nodes())
    else:
        assert (sub.source_level == sub.level - 1).all()


def test_json_and_networkx_exports_agree(graph):
    sub = graph.paths_to(-1, 0.03)
    data = json.loads(sub.to_json())
    g = sub.to_networkx()
    assert {n["id"] for n in data["nodes"]} == set(g.nodes)
    assert len(data["edges"]) == g.number_of_edges()
    for n in data["nodes"]:
        assert n["kind"] in ("embedding", "attn", "ffn")
        assert isinstance(n["layer"], int) and isinstance(n["position"], int)
    assert all(e["kind"] in ("attention", "residual", "ffn") for e in data["edges"])


def test_node_ids_round_trip():
    for level, pos in [(0, 3), (1, 0), (2, 5), (7, 2)]:
        kind, layer, p = parse_node(node_id(level, pos))
        assert p == pos and (level == 0) == (kind == "embedding")
    with pytest.raises(ValueError):
        parse_node("attn:x:1")


@pytest.mark.parametrize("bad", [float("nan"), -0.1, float("inf")])
def test_bad_thresholds_are_refused(graph, bad):
    with pytest.raises(ValueError):
        graph.paths_to(-1, bad)


@pytest.mark.parametrize("token", [10, -11, 100])
def test_out_of_range_tokens_are_refused(graph, token):
    with pytest.raises(IndexError):
        graph.paths_to(token, 0.04)


def test_analysis_threshold_change_does_not_run_the_model(tiny_runner, monkeypatch):
    trace = tiny_runner.trace(token_ids(8))
    c = compute_contributions(trace, tiny_runner.layer_weights)
    analysis = Analysis(tiny_runner, trace, c, ContributionGraph(c))

    def boom(*_a, **_k):
        raise AssertionError("the model ran again")

    monkeypatch.setattr(tiny_runner.model, "forward", boom)
    sizes = [len(analysis.paths_to(tok, th)) for tok in (-1, 0, 3) for th in (0.0, 0.05, 0.5)]
    assert sizes[0] >= sizes[1] >= sizes[2]
    heads = analysis.head_contributions(1, -1)  # recomputed from the trace, with the model stubbed out
    assert torch.allclose(heads.per_source.sum(0), c.attn_edges[1, -1], atol=1e-6)
    assert heads.residual == pytest.approx(float(c.attn_resid[1, -1]), abs=1e-6)
