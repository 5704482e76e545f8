"""Comparing two prompts: alignment, and changes that are the real differences of the stored weights."""

import pytest
import torch

import lmtt
from lmtt.questions.compare import compare_prompts


@pytest.fixture(scope="module")
def france_italy(default_runner):
    return lmtt.analyze(default_runner, "The capital of France is"), lmtt.analyze(default_runner, "The capital of Italy is")


def test_equal_lengths_align_by_position(france_italy):
    a, b = france_italy
    cmp = compare_prompts(a, b, top=15)
    assert cmp.alignment == "position" and cmp.offset == 0
    assert len(cmp.edges) == 15
    assert all(abs(x.delta) >= abs(y.delta) for x, y in zip(cmp.edges, cmp.edges[1:]))
    for e in cmp.edges:
        if e.kind == "attention":
            assert e.weight_a == pytest.approx(float(a.contributions.attn_edges[e.layer, e.target, e.source]))
            assert e.weight_b == pytest.approx(float(b.contributions.attn_edges[e.layer, e.target, e.source]))
    assert cmp.head_delta.shape == (a.n_layers, a.n_heads)
    assert torch.allclose(cmp.heads_a[5], a.head_contributions(5, -1).heads)


def test_different_lengths_align_the_final_tokens(default_runner):
    a = lmtt.analyze(default_runner, "The capital of France is")
    b = lmtt.analyze(default_runner, "Everyone knows that the capital of France is")
    cmp = compare_prompts(a, b)
    assert cmp.alignment == "final token" and cmp.offset == len(b.tokens) - len(a.tokens)
    # A's first token (a sink) meets B's ordinary token 4 (" the"): that position is left out, every other compared
    assert all(min(e.source, e.target) >= 1 for e in cmp.edges) and cmp.edges
    pairs = {(e.kind, e.into, e.layer, e.source, e.target) for e in compare_prompts(a, b, top=10_000).edges}
    assert {("ffn", "ffn", layer, p, p) for layer in range(a.n_layers) for p in range(1, len(a.tokens))} <= pairs
    back = compare_prompts(b, a)  # the longer prompt as A: its first compared position is the one after the sink's
    first = len(b.tokens) - len(a.tokens) + 1
    assert back.offset == -cmp.offset and back.edges and all(min(e.source, e.target) >= first for e in back.edges)
    one = lmtt.analyze(default_runner, "The")
    assert compare_prompts(one, a).edges == [] == compare_prompts(a, one).edges  # only its first token: nothing to compare
    last = [e for e in cmp.edges if e.target == len(a.tokens) - 1]
    for e in last:
        wb = {"attention": b.contributions.attn_edges[e.layer, e.target + cmp.offset, e.source + cmp.offset]}.get(e.kind)
        if wb is not None:
            assert e.weight_b == pytest.approx(float(wb))


def test_a_prompt_compared_with_itself_changes_nothing(france_italy):
    a, _ = france_italy
    cmp = compare_prompts(a, a)
    assert all(e.delta == 0 for e in cmp.edges) and torch.all(cmp.head_delta == 0)
