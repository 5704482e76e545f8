"""Interventions: ablating heads equals removing their output; parts stay consistent with the edited run."""

import pytest
import torch

import lmtt
from lmtt.analysis import Analysis
from lmtt.engine import check
from lmtt.engine.attribution import compute_contributions
from lmtt.engine.edits import Edit
from lmtt.engine.graph import ContributionGraph
from lmtt.engine.runner import ModelRunner
from tests.tiny_models import tiny_model, token_ids


def analysis_of(runner: ModelRunner, ids: torch.Tensor) -> Analysis:
    trace = runner.trace(ids)
    c = compute_contributions(trace, runner.layer_weights)
    return Analysis(runner, trace, c, ContributionGraph(c))


def logits_without_attention(runner: ModelRunner, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The model's own forward with one layer's attention update replaced by its bias alone."""
    out_proj = runner.blocks[layer].get_submodule(runner.adapter.out_proj)

    def only_bias(_m, _args, output):
        return torch.zeros_like(output) + (out_proj.bias if out_proj.bias is not None else 0)

    handle = out_proj.register_forward_hook(only_bias)
    try:
        with torch.no_grad():
            return runner.model(input_ids=ids[None]).logits[0]
    finally:
        handle.remove()


def test_zeroing_every_head_of_a_layer_removes_its_attention_output(tiny_runner):
    ids = token_ids(10)
    analysis = analysis_of(tiny_runner, ids)
    result = analysis.intervene([Edit("head", 1, h) for h in range(tiny_runner.n_heads)])
    expected = logits_without_attention(tiny_runner, ids, 1)
    assert torch.allclose(result.analysis.trace.logits, expected, atol=1e-5 * expected.abs().max())
    bias = tiny_runner.layer_weights[1].b_out
    only_bias = torch.zeros_like(result.analysis.trace.attn_out[1]) + (bias if bias is not None else 0)
    only_bias = check.received_update(result.analysis.trace, "attn", 1, only_bias)  # through a post-norm or multiplier
    assert torch.allclose(result.analysis.trace.attn_out[1], only_bias, atol=1e-5)
    # no head writes anything attributable: every head part sits at the eps floor
    assert result.analysis.contributions.attn_edges[1].max() < 1e-3


@pytest.mark.parametrize("edit", [Edit("head", 0, 1), Edit("head", 1, 2, "scale", 0.5), Edit("head", 0, 3, "scale", -2.0)])
def test_edited_parts_still_sum_to_the_edited_update(tiny_runner, edit):
    analysis = analysis_of(tiny_runner, token_ids(9))
    edited = analysis.intervene([edit]).analysis.trace
    total = check.attention_sum(tiny_runner, edited, edit.layer)  # the edited head's parts scaled
    assert torch.allclose(total, edited.attn_out[edit.layer], atol=1e-5 * edited.attn_out[edit.layer].abs().max())


def test_neuron_edits_change_the_activation_they_name():
    runner = ModelRunner(tiny_model("llama_gqa_bias"), tokenizer=None, name="tiny")
    analysis = analysis_of(runner, token_ids(8))
    edited = analysis.intervene([Edit("neuron", 2, 5), Edit("neuron", 0, 7, "mean")]).analysis.trace
    assert torch.all(edited.neuron_acts[2][:, 5] == 0)
    clean = analysis.trace.neuron_acts[0][:, 7]  # (8,)
    prefix_means = torch.stack([clean[: i + 1].mean() for i in range(8)])  # causal: position i sees positions 0..i
    assert torch.allclose(edited.neuron_acts[0][:, 7], prefix_means, atol=1e-6)
    untouched = [n for n in range(edited.neuron_acts[0].shape[1]) if n != 7]  # layer 0 runs before any edit takes effect
    assert torch.equal(edited.neuron_acts[0][:, untouched], analysis.trace.neuron_acts[0][:, untouched])


def test_results_report_before_and_after(default_runner):
    analysis = lmtt.analyze(default_runner, "The capital of France is")
    layer, heads = 20, range(default_runner.n_heads)
    result = analysis.intervene([Edit("head", layer, h) for h in heads])
    assert result.target.token == " Paris" and result.before[0].token == " Paris"
    assert result.prob_before == pytest.approx(0.7725, abs=1e-3)
    assert result.prob_after != result.prob_before and len(result.after) == 10
    assert len(result.analysis.paths_to(-1, 0.04)) > 0
    assert analysis.predictions()[0].token == " Paris"  # the original analysis is unchanged


@pytest.mark.parametrize("text", ["head:3.2:zero", "neuron:5.100:mean", "head:3.2:x0.5", "head:0.0:x-1"])
def test_edit_round_trip(text):
    assert str(Edit.parse(text)) == text


@pytest.mark.parametrize("text", ["head:3:zero", "bogus", "head:3.2:double", "head:3.2:xnan"])
def test_bad_edits_are_refused(text):
    with pytest.raises(ValueError):
        Edit.parse(text)


def test_out_of_range_edits_are_refused(tiny_runner):
    analysis = analysis_of(tiny_runner, token_ids(5))
    with pytest.raises(IndexError):
        analysis.intervene([Edit("head", 99, 0)])
    with pytest.raises(IndexError):
        analysis.intervene([Edit("neuron", 0, 10**6)])
