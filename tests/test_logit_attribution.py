"""Direct logit attribution: the parts sum to the model's own logit difference; targets and lens are checked."""

import pytest
import torch

import lmtt
from lmtt.analysis import _analysis_of
from lmtt.engine.norms import freeze
from lmtt.engine.runner import PromptError
from lmtt.questions import dla, shares
from tests.tiny_models import token_ids

TOL = 1e-4


@pytest.fixture
def analysis(tiny_runner):
    return _analysis_of(tiny_runner, tiny_runner.trace(token_ids(9)))


def runner_up(analysis, k: int = 1, token: int = -1) -> int:
    """The k-th most likely token (k >= 1): a contrast that is never the target."""
    return analysis.predictions(token, k + 1)[k].token_id


def close(a: float, b: float, tol: float = TOL) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))


@pytest.mark.parametrize("with_contrast", [False, True])
def test_direct_effects_sum_to_the_models_logit_difference(analysis, with_contrast):
    contrast = runner_up(analysis) if with_contrast else None
    target = analysis.target(-1, None, contrast)
    e = analysis.direct_effects(target)
    logits = dla.pre_softcap(analysis.runner, analysis.trace.last_logits)
    expected = float(logits[target.token_id] - (0 if contrast is None else logits[contrast]))
    assert e.value == pytest.approx(expected)
    assert close(e.total, expected)
    assert close(sum(c.value for c in e.components()), expected)  # heads, neurons, biases, embedding
    assert abs(e.unexplained) < TOL


def test_parts_sum_to_their_updates(analysis):
    e = analysis.direct_effects(analysis.target(-1, None, runner_up(analysis)))
    assert torch.allclose(e.head_sources.sum(-1), e.heads, atol=1e-5)
    assert torch.allclose(e.heads.sum(-1) + e.attention_bias, e.attention, atol=1e-5)
    assert torch.allclose(e.neurons.sum(-1) + e.ffn_bias, e.ffn, atol=1e-5)
    assert (e.head_sources[..., analysis.trace.n_tokens :] == 0).all()


def test_a_heads_direct_effect_is_its_update_through_the_frozen_norm(analysis):
    """Oracle: the head's update through norms.freeze's linear map, unembedded, read at A - B."""
    runner, trace = analysis.runner, analysis.trace
    b = runner_up(analysis)
    target = analysis.target(-1, None, b)
    e = analysis.direct_effects(target)
    x = trace.resid[trace.n_layers][-1]
    frozen = freeze(runner.final_norm, runner.adapter.norm, x[None], runner.final_norm(x[None]))
    for layer, head in ((0, 1), (trace.n_layers - 1, 2)):
        update = shares.head_update(runner, trace, layer, trace.n_tokens - 1, head)
        logits = runner.unembed_direction(frozen.linear(update[None])[0])
        assert float(e.heads[layer, head]) == pytest.approx(float(logits[target.token_id] - logits[b]), rel=1e-4, abs=1e-5)


def test_lens_at_the_last_node_is_the_models_logits(analysis):
    b = runner_up(analysis, 2)
    target = analysis.target(-1, None, b)
    grid = analysis.target_lens(target)
    with torch.no_grad():  # the model's own pass: the trace unembeds only its last position
        own = analysis.runner.model(input_ids=analysis.trace.token_ids[None]).logits[0].float()  # (T, V)
    logits = dla.pre_softcap(analysis.runner, own)
    assert grid.a.shape == (2 * analysis.n_layers + 1, analysis.trace.n_tokens)
    assert torch.allclose(grid.a[-1], logits[:, target.token_id], atol=1e-4)
    assert torch.allclose(grid.quantity[-1], logits[:, target.token_id] - logits[:, b], atol=1e-4)


def test_direct_edges_pick_the_largest_effects(analysis):
    e = analysis.direct_effects(analysis.target(-1, None, runner_up(analysis, 3)))
    biggest = float(e.heads.abs().max())
    edges = dla.direct_edges(e, biggest)
    assert edges and edges[0].kind in ("head", "ffn") and abs(edges[0].effect) >= biggest
    assert all(abs(x.effect) >= biggest for x in edges)
    assert dla.direct_edges(e, float("1e9")) == []
    with pytest.raises(ValueError, match="min_effect"):
        dla.direct_edges(e, -1)


def test_bad_targets_say_why(analysis):
    with pytest.raises(dla.TargetError, match="out of range"):
        analysis.target(-1, 10**6)
    with pytest.raises(dla.TargetError, match="no tokenizer"):
        analysis.target(-1, " Paris")
    top = analysis.target().token_id
    with pytest.raises(dla.TargetError, match="contrast token is the target"):
        analysis.target(-1, top, top)
    assert analysis.target(-1, f"<{top}>").token_id == top


def test_analyze_accepts_token_ids(tiny_runner):
    ids = token_ids(6)
    a = lmtt.analyze(tiny_runner, ids.tolist())
    assert torch.equal(a.trace.token_ids, ids)
    assert torch.equal(a.trace.logits, tiny_runner.trace(ids).logits)
    for bad, why in (([], "no token ids"), ([1, 10**6], "must lie in"), ([0.5, 1.0], "integers")):
        with pytest.raises(PromptError, match=why):
            lmtt.analyze(tiny_runner, bad)


MARY_JOHN = "When Mary and John went to the store, John gave a drink to"


@pytest.mark.default_model
def test_suppressor_of_john_is_head_23_3(default_runner):
    a = lmtt.analyze(default_runner, MARY_JOHN)
    target = a.target(-1, " John")
    e = a.direct_effects(target)
    assert close(e.total, e.value)
    worst = min(e.top_heads(20), key=lambda c: c.value)
    assert (worst.layer, worst.index) == (23, 3) and worst.value < -2
    edges = a.direct_edges(target)
    head = next(x for x in edges if x.name == "L23.H3")
    assert head.effect < 0 and a.tokens[head.source] == " John"
    # and with the contrast Mary - John it is the largest booster
    assert a.direct_effects(a.target(-1, " Mary", " John")).top_heads(1)[0].name == "L23.H3"


def test_vocabulary_search_finds_exact_tokens_first(tiny_runner):
    assert dla.search_vocabulary(tiny_runner, "<12>")[0] == 12
    assert dla.search_vocabulary(tiny_runner, "  ") == []


@pytest.mark.default_model
def test_vocabulary_search_prefers_the_word_with_a_leading_space(default_runner):
    assert [default_runner.decode(i) for i in dla.search_vocabulary(default_runner, "Rome", 3)] == [" Rome", "Rome", "rome"]


def test_a_probe_at_any_node_splits_over_the_components_below_it(tiny_runner):
    """Oracle: the model's own pass with one head (or neuron) zeroed. At the state right after that sublayer, nothing
    downstream can react, so the probe's reading drops by exactly that head's (neuron's) effect."""
    from lmtt.analysis import _analysis_of
    from lmtt.engine.edits import Edit

    ids = token_ids(7)
    a = _analysis_of(tiny_runner, tiny_runner.trace(ids))
    w = torch.randn(a.trace.d_model, generator=torch.Generator().manual_seed(3))
    layer = 1
    node = f"ffn:{layer}:5"
    effects = a.probe_effects(w, node)
    assert effects.total == pytest.approx(effects.value, rel=1e-4, abs=1e-4)
    assert torch.all(effects.heads[layer + 1 :] == 0) and torch.all(effects.ffn[layer + 1 :] == 0)  # nothing above the node
    post_norm = tiny_runner.adapter.attn_post_norm or tiny_runner.adapter.ffn_post_norm  # a norm after a sublayer reacts
    if not post_norm and not tiny_runner.parallel:
        level = 2 * layer + 1  # attn:1:5, the state right after layer 1's attention
        at_attn = a.probe_effects(w, f"attn:{layer}:5")
        for h in range(a.n_heads):
            edited = tiny_runner.trace(ids, (Edit("head", layer, h),))
            drop = float((a.trace.state(level, 5) - edited.state(level, 5)) @ w)
            assert float(at_attn.heads[layer, h]) == pytest.approx(drop, rel=1e-3, abs=1e-4)
    with pytest.raises(ValueError, match="shape"):
        a.probe_effects(torch.zeros(3), node)


def test_direct_edges_are_named_as_units_and_blocks():
    """A head's edge reads L23.H4 and an FFN's L29.FFN, as QK names its parts (L0.attn, L0.FFN)."""
    assert dla.DirectEdge("head", 23, 4, 0, 5, 1.0).name == "L23.H4"
    assert dla.DirectEdge("ffn", 29, -1, 5, 5, 1.0).name == "L29.FFN"
