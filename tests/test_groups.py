"""Suggested groups: hand-built routes with a known answer, and the worked example of the README on the default model."""

import numpy as np
import pytest

import lmtt
from lmtt.engine.graph import ATTENTION, FFN, RESIDUAL, Subgraph, states_label
from lmtt.questions.groups import edge_profiles, suggest_groups


class _Tiny:
    """The little an Analysis is asked here: its tokens."""

    def __init__(self, tokens):
        self.tokens = tuple(tokens)
        self.trace = type("T", (), {"n_tokens": len(tokens), "token_ids": None})()


def _sub(edges, root=(4, 3)) -> Subgraph:
    kind, level, source_level, source, target, weight = (np.array(x) for x in zip(*edges))
    return Subgraph(kind.astype(np.int8), level, source_level, source, target, weight.astype(np.float32), root, 0.0)


def test_states_that_read_the_same_source_are_grouped_and_others_are_not(monkeypatch):
    """attn:0:2 and attn:0:3 both read token 0 (0.6, 0.6) and are read by no one else: one group. attn:0:4 reads
    token 1 only: alone. Residual and FFN edges stay at one token and make no group."""
    monkeypatch.setattr("lmtt.questions.groups.readable_tokens", lambda a: list(a.tokens))
    edges = [
        (ATTENTION, 1, 0, 0, 2, 0.6), (ATTENTION, 1, 0, 0, 3, 0.6), (ATTENTION, 1, 0, 1, 4, 0.5),
        (RESIDUAL, 1, 0, 2, 2, 0.4), (RESIDUAL, 1, 0, 3, 3, 0.4), (FFN, 2, 1, 3, 3, 0.3),
    ]  # fmt: skip
    sub = _sub(edges)
    keys, profiles = edge_profiles(sub, 5)
    assert keys == [(1, 2), (1, 3), (1, 4)] and profiles[0, 0] == pytest.approx(0.6) and profiles[:, 5:].sum() == 0
    groups = suggest_groups(_Tiny(["a", "b", "c", "d", "e"]), sub)
    assert [g.members for g in groups] == [("attn:0:2", "attn:0:3")]
    assert groups[0].reason.startswith("reads token 0 (a) 100%") and groups[0].cosine == pytest.approx(1.0)
    assert groups[0].label == "L0 attn · c d"


@pytest.mark.default_model
def test_the_name_mover_example(default_runner):
    """README: on the IOI prompt, the states of ␣Mary and ␣John after layer 22's FFN are read by the last token."""
    a = lmtt.analyze(default_runner, "When Mary and John went to the store, John gave a drink to")
    groups = suggest_groups(a, a.paths_to(-1, 0.04))
    movers = next(g for g in groups if set(g.members) == {"ffn:22:1", "ffn:22:3"})
    assert movers.label == "L22 ffn · ␣Mary ␣John" and "is read by token 13 (␣to) 100%" in movers.reason
    assert all(len(g.members) >= 2 for g in groups)


def test_a_state_and_a_set_of_states_are_named_as_the_lens_names_its_rows():
    """Hand-built: one state, an embedding, a set over two layers and four tokens (three shown, then …), and a mixed
    set, with whitespace shown as the pages show it."""
    tokens = ["When", " Mary", " and", "\n", " John"]
    assert states_label(["attn:23:1"], tokens) == "L23 attn · ␣Mary"
    assert states_label(["emb:3"], tokens) == "emb · ↵"
    assert states_label(["ffn:8:4", "ffn:7:1", "ffn:7:2", "ffn:8:3"], tokens) == "L7–8 ffn · ␣Mary ␣and ↵ …"
    assert states_label(["ffn:5:1", "emb:0", "attn:3:1"], tokens) == "emb, L3–5 attn & ffn · When ␣Mary"  # a user's group
