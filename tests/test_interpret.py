"""Head and neuron shares agree with the graph, and projections are what they claim."""

import pytest
import torch

from lmtt.analysis import Analysis
from lmtt.engine import check
from lmtt.engine.attribution import compute_contributions
from lmtt.engine.graph import ContributionGraph
from lmtt.questions import shares as interpret
from tests.tiny_models import token_ids


@pytest.fixture(scope="module")
def analysis(tiny_runner) -> Analysis:
    trace = tiny_runner.trace(token_ids(9))
    c = compute_contributions(trace, tiny_runner.layer_weights)
    return Analysis(tiny_runner, trace, c, ContributionGraph(c))


def test_head_contributions_add_up_to_the_node(analysis):
    for layer in range(analysis.n_layers):
        hc = analysis.head_contributions(layer, 6)
        assert torch.allclose(hc.per_source.sum(0), analysis.contributions.attn_edges[layer, 6], atol=1e-6)
        assert hc.heads.sum() + hc.residual + (hc.ffn or 0.0) == pytest.approx(1.0, abs=1e-5)
        assert (hc.ffn is not None) == analysis.trace.parallel  # a parallel block's FFN shares the node
        if hc.ffn is not None:
            assert hc.ffn == pytest.approx(float(analysis.contributions.ffn[layer, 6]), abs=1e-6)
        assert torch.all(hc.per_source[:, 7:] == 0)


def bias_received(analysis, kind: str, layer: int, bias: torch.Tensor | None) -> torch.Tensor:
    """(T, d) a sublayer's bias as the residual received it (through a post-norm or multiplier)."""
    raw = torch.zeros_like(analysis.trace.attn_out[layer]) + (0 if bias is None else bias)
    return check.received_update(analysis.trace, kind, layer, raw)


def test_head_updates_sum_to_the_attention_update(analysis):
    runner, layer, pos = analysis.runner, analysis.n_layers - 1, 5
    total = sum(interpret.head_update(runner, analysis.trace, layer, pos, h) for h in range(analysis.n_heads))
    total = total + bias_received(analysis, "attn", layer, runner.layer_weights[layer].b_out)[pos]
    expected = analysis.trace.attn_out[layer][pos]
    assert torch.allclose(total, expected, atol=1e-5 * expected.abs().max())


def test_neuron_contributions_split_the_graphs_ffn_edge(analysis):
    """One meaning of a node's shares in every view: the residual is the graph's residual edge into the FFN node,
    and the neurons together are its FFN edge."""
    nc = analysis.neuron_contributions(0, 3, k=1000)
    c = analysis.contributions
    residual_edge = (c.attn_resid if analysis.trace.parallel else c.ffn_resid)[0, 3]
    assert nc.residual == pytest.approx(float(residual_edge), abs=1e-6)
    assert float(nc.contributions.sum()) == pytest.approx(float(c.ffn[0, 3]), abs=1e-5)
    assert torch.all(nc.contributions[:-1] >= nc.contributions[1:])
    ids, acts = analysis.trace.neurons(0, 3)
    assert torch.allclose(nc.activations, torch.stack([acts[ids == n].sum() for n in nc.neurons]))


def direct_effects_by_hand(runner, trace, z: torch.Tensor, position: int) -> torch.Tensor:
    """(V,) float64: an update's direct effect on every logit, re-derived from the final norm's formula.

    s = 1 / sqrt(mean((P x)^2) + eps) at the position's last state x, then W_U (s g ⊙ P z), times the
    family's linear logit scale. Read off the modules' weights; no lmtt code on the path.
    """
    x, z = trace.resid[trace.n_layers][position].double(), z.double()
    norm, spec = runner.final_norm, runner.adapter.norm
    if norm is not None:
        center = spec.kind == "layer"
        px, pz = (x - x.mean(), z - z.mean()) if center else (x, z)
        eps = next(float(getattr(norm, n)) for n in ("eps", "variance_epsilon", "epsilon") if hasattr(norm, n))
        gain = norm.weight.detach().double() + spec.weight_offset
        z = gain * pz / torch.sqrt(px.pow(2).mean() + eps)
    for module in runner.unembed_modules:
        w = module.weight.detach().double()
        z = (w.T if w.shape[1] != z.shape[0] else w) @ z  # a Conv1D unembedding stores (in, out)
    for factor, divide in ((runner.logit_multiplier, False), (runner.logit_divisor, True)):
        if factor is not None:
            z = z / factor if divide else z * factor
    return z


def test_projections_are_direct_effects_on_the_logits(analysis):
    """A block's, a head's and a neuron's lists: each token's direct effect on its logit, re-derived in float64."""
    runner, trace, pos = analysis.runner, analysis.trace, 6
    checks = [
        (analysis.update_tokens(f"ffn:0:{pos}", k=3), trace.ffn_out[0][pos]),
        (analysis.update_tokens(f"attn:1:{pos}", k=3), trace.attn_out[1][pos]),
        (analysis.head_tokens(1, pos, 0, k=3), interpret.head_update(runner, trace, 1, pos, 0)),
    ]
    ids, acts = trace.neurons(0, pos)
    neuron = int(ids[acts.abs().argmax()])  # an active neuron at the position (MoE: a chosen expert's)
    checks.append((analysis.neuron_tokens(0, neuron, pos, k=3), interpret.neuron_vector(runner, trace, 0, pos, neuron)))
    for proj, update in checks:
        expected = direct_effects_by_hand(runner, trace, update, pos)
        assert torch.allclose(proj.effects.double(), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max())), runner.name
        assert proj.promoted[0].token_id == int(expected.argmax()) and proj.suppressed[0].token_id == int(expected.argmin())
        assert proj.promoted[0].score == pytest.approx(float(expected.max()), rel=1e-4, abs=1e-6)


def test_a_heads_projection_equals_its_direct_logit_attribution(analysis):
    """The head panel's value for a token is that head's entry in direct_effects for the token."""
    pos = 6
    target = analysis.target(pos)
    effects = analysis.direct_effects(target)
    for layer in range(analysis.n_layers):
        for head in range(analysis.n_heads):
            value = analysis.head_tokens(layer, pos, head).effect_on(target.token_id)
            expected = float(effects.heads[layer, head])
            assert value == pytest.approx(expected, rel=1e-4, abs=1e-5 * (1 + float(effects.heads.abs().max())))


def test_logit_lens_of_the_top_node_is_the_prediction(analysis):
    last = analysis.trace.n_tokens - 1
    lens = analysis.logit_lens(f"ffn:{analysis.n_layers - 1}:{last}", k=5)
    preds = analysis.predictions(-1, k=5)
    assert [t.token_id for t in lens] == [t.token_id for t in preds]
    assert [t.score for t in lens] == pytest.approx([t.score for t in preds], abs=1e-5)


def test_lens_grid_shape_and_last_row(analysis):
    top = analysis.predictions(-1, 1)[0]
    probs, ranks = analysis.lens_grid(top.token_id)
    assert probs.shape == ranks.shape == (2 * analysis.n_layers + 1, analysis.trace.n_tokens)
    assert int(ranks[-1, -1]) == 0
    assert float(probs[-1, -1]) == pytest.approx(top.score, abs=1e-5)


@pytest.mark.parametrize("node", ["attn:99:0", "ffn:0:99", "emb:-99", "nonsense"])
def test_bad_nodes_are_refused(analysis, node):
    with pytest.raises((IndexError, ValueError)):
        analysis.logit_lens(node)


def test_neuron_and_head_indices_are_checked(analysis):
    with pytest.raises(IndexError):
        analysis.neuron_tokens(0, 10**6)
    with pytest.raises(IndexError):
        analysis.head_tokens(0, 0, analysis.n_heads)


def test_list_headings_say_what_the_lists_hold():
    """Hand-built lists: "Suppressed" only when every listed effect lowers its logit, "Promoted" only when every one raises it."""
    from lmtt.questions.vocabulary import Projection, TokenScore

    up = [TokenScore("a", 1, 5.1), TokenScore("b", 2, 4.9)]
    down = [TokenScore("c", 3, -0.2), TokenScore("d", 4, -1.0)]
    assert Projection(up, down).headings() == ("Promoted", "Suppressed")
    all_raised = Projection(up, [TokenScore("c", 3, 3.9), TokenScore("d", 4, 4.2)])  # the last FFN of a long prompt
    assert all_raised.headings() == ("Promoted", "Lowest effects (not all lower their logit)")
    all_lowered = Projection([TokenScore("a", 1, -0.1)], down)
    assert all_lowered.headings()[0] == "Highest effects (not all raise their logit)"
