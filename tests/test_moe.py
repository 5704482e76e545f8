"""Mixture-of-experts layers: expert shares, expert neurons, and edits of experts and their neurons."""

import pytest
import torch

from lmtt.analysis import Analysis, _analysis_of
from lmtt.engine import check
from lmtt.engine.attribution import compute_contributions
from lmtt.engine.edits import Edit
from lmtt.engine.graph import ContributionGraph
from lmtt.engine.runner import ModelRunner
from tests.tiny_models import tiny_model, token_ids

MOE = ("mixtral", "qwen2_moe", "gpt_oss")


@pytest.fixture(scope="module", params=MOE)
def runner(request) -> ModelRunner:
    return ModelRunner(tiny_model(request.param), tokenizer=None, name=request.param)


def test_expert_shares_and_the_residual_are_a_distribution(runner):
    analysis = _analysis_of(runner, runner.trace(token_ids(9)))
    ec = analysis.expert_contributions(0, 5)
    total = float(ec.contributions.sum()) + ec.residual + (ec.shared or 0.0)
    assert total == pytest.approx(1.0, abs=1e-5)
    assert ec.experts.shape == ec.router_weights.shape == (2,)
    assert (ec.shared is not None) == (runner.adapter.shared_expert is not None)


def test_every_view_gives_a_node_the_graphs_residual_share(runner):
    """The last layer's FFN node at token 7 (ffn:1:7 on Mixtral): the graph's edge, the neuron view and the expert
    view state one residual share (they gave 0.735, 0.569 and 0.746)."""
    trace = runner.trace(token_ids(9))
    c = compute_contributions(trace, runner.layer_weights)
    analysis = Analysis(runner, trace, c, ContributionGraph(c))
    layer = len(runner.blocks) - 1  # a mixture-of-experts layer in every tiny MoE model
    ec, nc = analysis.expert_contributions(layer, 7), analysis.neuron_contributions(layer, 7, k=10_000)
    assert ec.residual == pytest.approx(float(c.ffn_resid[layer, 7]), abs=1e-6)
    assert nc.residual == pytest.approx(float(c.ffn_resid[layer, 7]), abs=1e-6)
    assert float(ec.contributions.sum()) + (ec.shared or 0.0) == pytest.approx(float(c.ffn[layer, 7]), abs=1e-5)


def test_expert_neurons_are_labelled_and_projected(runner):
    analysis = _analysis_of(runner, runner.trace(token_ids(9)))
    top = analysis.neuron_contributions(0, 4, k=5)
    w = runner.layer_weights[0]
    labels = [analysis.neuron_label(0, int(n)) for n in top.neurons]
    assert all(("expert" in x or "shared" in x) for x in labels)
    # hand-worked virtual ids: expert 1's neuron 2, and the shared expert's neuron 3 (after every routed expert's)
    assert analysis.neuron_label(0, w.expert_width + 2) == f"L0.N{w.expert_width + 2} (expert 1 · neuron 2)"
    if w.w_down.shape[0] > w.n_experts * w.expert_width:
        shared = w.n_experts * w.expert_width + 3
        assert analysis.neuron_label(0, shared) == f"L0.N{shared} (shared · neuron 3)"
    for n in top.neurons.tolist():
        if n < w.n_experts * w.expert_width:
            assert int(n) // w.expert_width in analysis.trace.expert_index[0][4].tolist()  # only chosen experts' neurons
    assert len(analysis.neuron_tokens(0, int(top.neurons[0]), token=4).promoted) == 10


def test_zeroing_an_expert_removes_exactly_its_update(runner):
    ids = token_ids(9)
    before = runner.trace(ids)
    expert = int(before.expert_index[0][3, 0])
    after = runner.trace(ids, (Edit("expert", 0, expert),))
    chosen = (before.expert_index[0] == expert).any(-1)  # (T,) where the router picked it
    update = torch.zeros_like(before.ffn_out[0])
    for pos in range(9):
        if chosen[pos]:
            ec_update = _expert_update(runner, before, 0, pos, expert)
            update[pos] = ec_update
    expected = before.ffn_out[0] - update
    if runner.adapter.ffn_post_norm is None:
        assert torch.allclose(after.ffn_out[0], expected, atol=1e-5)
    assert torch.equal(after.ffn_out[0][~chosen], before.ffn_out[0][~chosen])
    assert check.run_checks(runner, ids).passed


def _expert_update(runner, trace, layer, pos, expert) -> torch.Tensor:
    from lmtt.questions.shares import neuron_parts

    w = runner.layer_weights[layer]
    ids, _acts, parts = neuron_parts(runner, trace, layer, pos)
    mine = (ids < w.n_experts * w.expert_width) & (ids // w.expert_width == expert)
    update = parts[mine].sum(0)
    experts = runner.blocks[layer].mlp.experts
    if experts.has_bias:
        k = trace.expert_index[layer][pos].tolist().index(expert)
        update = update + trace.expert_weight[layer][pos, k] * experts.down_proj_bias.detach().float()[expert]
    return update


def test_an_expert_neuron_edit_zeroes_that_neuron_only(runner):
    ids = token_ids(9)
    before = runner.trace(ids)
    layer = before.n_layers - 1  # a MoE layer in every config here (qwen2_moe's layer 1 is dense)
    w = runner.layer_weights[layer]
    expert = int(before.expert_index[layer][2, 0])
    neuron = expert * w.expert_width + 3
    after = runner.trace(ids, (Edit("neuron", layer, neuron),))
    assert float(after.neuron_activation(layer, neuron).abs().max()) == 0.0
    assert float(before.neuron_activation(layer, neuron).abs().max()) > 0.0
    other = neuron + 1
    assert torch.equal(after.neuron_activation(layer, other), before.neuron_activation(layer, other))


def test_mean_ablation_of_an_expert_is_refused_with_a_message(runner):
    with pytest.raises(ValueError, match="mean ablation is defined for heads and dense neurons"):
        runner.trace(token_ids(5), (Edit("expert", 0, 1, "mean"),))
    assert Edit.parse("expert:0.1:x0.5") == Edit("expert", 0, 1, "scale", 0.5)
