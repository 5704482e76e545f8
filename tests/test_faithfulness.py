"""Faithfulness of a route: the full graph keeps everything (1), no route equals every head and neuron zeroed."""

import pytest
import torch

import lmtt
from lmtt.analysis import _analysis_of
from lmtt.engine.edits import Edit
from lmtt.questions import faithfulness as fa
from tests.tiny_models import token_ids


@pytest.fixture
def analysis(tiny_runner):
    return _analysis_of(tiny_runner, tiny_runner.trace(token_ids(8)))


@pytest.mark.parametrize("ablation", fa.ABLATIONS)
def test_the_full_graph_is_faithful(analysis, ablation):
    f = analysis.faithfulness(0.0, analysis.target(-1, None, analysis.predictions(-1, 2)[1].token_id), ablation)
    assert f.faithfulness == pytest.approx(1.0, abs=1e-6)
    assert f.prob_kept == pytest.approx(1.0, abs=1e-6)
    assert f.edges == len(analysis.paths_to(-1, 0.0))


def test_no_route_equals_zeroing_every_head_and_ffn(analysis):
    """Oracle: heads zeroed by edits (the engine's own path), every FFN update zeroed."""
    runner, trace = analysis.runner, analysis.trace
    edits = tuple(Edit("head", l, h) for l in range(trace.n_layers) for h in range(trace.n_heads))
    expected = runner.trace(trace.token_ids, edits, patch=lambda site, _l, x: torch.zeros_like(x) if site == "ffn_update" else None).logits
    got = fa.run_route(runner, trace, fa.Route.empty(trace.n_layers, trace.n_tokens)).logits
    assert torch.allclose(got, expected, atol=1e-5)


def test_dropping_one_source_equals_recomputing_that_heads_context(analysis):
    """Oracle in plain torch: drop source 0 of the last query at the last layer, recompute the head contexts by hand."""
    runner, trace = analysis.runner, analysis.trace
    last, t = trace.n_layers - 1, trace.n_tokens
    route = fa.Route(torch.ones(trace.n_layers, t, t, dtype=torch.bool), torch.ones(trace.n_layers, t, dtype=torch.bool))
    route.attn[last, t - 1, 0] = False
    a = trace.attention(last)  # (H, T, T): nothing upstream changes, so the last layer's weights are the trace's
    v = trace.values[last][:, trace.kv_index]  # (T, H, hd)
    kept = a[:, t - 1].clone()
    kept[:, 0] = 0
    ctx = torch.einsum("hj,jhc->hc", kept, v)  # (H, hd)
    update = torch.einsum("hc,hcd->d", ctx, runner.layer_weights[last].w_out)
    bias = runner.layer_weights[last].b_out
    update = update + (0 if bias is None else bias)
    got = fa.run_route(runner, trace, route)
    if got.attn_map and (m := got.attn_map[last]) is not None:  # a post-norm or multiplier between head and residual
        update = m.linear(update[None], slice(t - 1, t))[0] + (0 if m.bias is None else m.bias)
    assert torch.allclose(got.attn_out[last][t - 1], update, atol=1e-5)
    assert torch.allclose(got.attn_out[last][: t - 1], trace.attn_out[last][: t - 1])  # other queries untouched
    assert torch.equal(got.resid[last], trace.resid[last])


def test_curve_runs_threshold_by_threshold(analysis):
    curve = analysis.faithfulness_curve((0.3, 0.05, 0.0))
    assert [p.threshold for p in curve.points] == [0.3, 0.05, 0.0]
    assert list(curve.edges) == sorted(curve.edges)
    assert curve.values[-1] == pytest.approx(1.0, abs=1e-6)
    assert len({p.value_empty for p in curve.points}) == 1


def test_bad_input(analysis):
    with pytest.raises(ValueError, match="ablation"):
        analysis.faithfulness(0.1, ablation="resample")
    sub = analysis.paths_to(0, 0.1)
    with pytest.raises(ValueError, match="leads to position"):
        fa.faithfulness(analysis.runner, analysis.trace, sub, analysis.target(-1))


@pytest.mark.default_model
def test_capital_curve_reaches_1_with_the_full_graph(default_runner):
    a = lmtt.analyze(default_runner, "The capital of France is")
    curve = a.faithfulness_curve((0.1, 0.04, 0.0))
    assert curve.values[-1] == pytest.approx(1.0, abs=1e-6)
    assert curve.points[0].edges < curve.points[1].edges < curve.points[2].edges
