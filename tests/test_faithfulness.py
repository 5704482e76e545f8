"""Faithfulness of a route: the full graph keeps everything (1), no route equals every head and neuron zeroed."""

import json

import pytest
import torch

import lmtt
from lmtt.analysis import _analysis_of
from lmtt.engine.edits import Edit
from lmtt.questions import faithfulness as fa
from lmtt.questions.dla import TargetError
from tests.tiny_models import token_ids


@pytest.fixture
def analysis(tiny_runner):
    return _analysis_of(tiny_runner, tiny_runner.trace(token_ids(8)))


@pytest.mark.parametrize("ablation", fa.ABLATIONS)
def test_the_full_graph_is_faithful(analysis, ablation):
    f = analysis.faithfulness(0.0, analysis.target(-1, None, analysis.predictions(-1, 2)[1].token_id), ablation)
    # the route runs as a row of a batch, whose matrix products round differently from the trace's one-row pass
    assert f.faithfulness == pytest.approx(1.0, abs=1e-4)
    assert f.prob_kept == pytest.approx(1.0, abs=1e-4)
    assert f.edges == len(analysis.paths_to(-1, 0.0))


def test_no_route_equals_zeroing_every_head_and_ffn(analysis):
    """Oracle: heads zeroed by edits (the engine's own path), every FFN update zeroed."""
    runner, trace = analysis.runner, analysis.trace
    edits = tuple(Edit("head", l, h) for l in range(trace.n_layers) for h in range(trace.n_heads))
    expected = runner.trace(trace.token_ids, edits, patch=lambda site, _l, x: torch.zeros_like(x) if site == "ffn_update" else None).logits
    got = fa.run_route(runner, trace, fa.Route.empty(trace.n_layers, trace.n_tokens), "zero").logits
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
    got = fa.run_route(runner, trace, route, "zero")
    if got.attn_map and (m := got.attn_map[last]) is not None:  # a post-norm or multiplier between head and residual
        update = m.linear(update[None], slice(t - 1, t))[0] + (0 if m.bias is None else m.bias)
    assert torch.allclose(got.attn_out[last][t - 1], update, atol=1e-5)
    assert torch.allclose(got.attn_out[last][: t - 1], trace.attn_out[last][: t - 1])  # other queries untouched
    assert torch.equal(got.resid[last], trace.resid[last])


@pytest.mark.parametrize("ablation", fa.ABLATIONS)
def test_routes_in_one_batch_equal_one_pass_each(analysis, ablation):
    """The batched passes (route_logits) against one traced pass per route (run_route, checked by the oracles here),
    with edits in force, mean-ablated ones included, and routes in batches of two."""
    edited = analysis.with_edits(list(EDITS))
    runner, trace = edited.runner, edited.trace
    routes = [fa.Route.of(edited.paths_to(-1, th), trace.n_layers, trace.n_tokens) for th in (0.3, 0.1, 0.0)]
    routes.append(fa.Route.empty(trace.n_layers, trace.n_tokens))
    at = trace.n_tokens - 2
    expected = torch.stack([fa.run_route(runner, trace, r, ablation).logits[at] for r in routes])  # (R, V)
    old = fa.ROUTE_BATCH_TOKENS
    try:
        fa.ROUTE_BATCH_TOKENS = 2 * trace.n_tokens
        done: list[int] = []
        got = fa.route_logits(runner, trace, routes, ablation, at=at, on_rows=done.append)
    finally:
        fa.ROUTE_BATCH_TOKENS = old
    assert done == [2, 4]
    assert torch.allclose(got, expected, atol=1e-4 * (1 + float(expected.abs().max())))


def test_curve_runs_threshold_by_threshold(analysis):
    seen: list[tuple[int, int]] = []
    curve = analysis.faithfulness_curve((0.3, 0.05, 0.0), on_progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 5) and seen[-1] == (5, 5)  # the means, then the routes (three and the empty one), a batch at a time
    assert [d for d, _ in seen] == sorted({d for d, _ in seen}) and {n for _, n in seen} == {5}
    assert [p.threshold for p in curve.points] == [0.3, 0.05, 0.0]
    assert list(curve.edges) == sorted(curve.edges)
    assert curve.values[-1] == pytest.approx(1.0, abs=1e-4)
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
    assert curve.values[-1] == pytest.approx(1.0, abs=1e-4)
    assert curve.points[0].edges < curve.points[1].edges < curve.points[2].edges


EDITS = (Edit("head", 0, 1), Edit("head", 1, 0, "scale", 0.5), Edit("head", 1, 1, "mean"), Edit("neuron", 0, 3, "scale", 2.0))


@pytest.mark.parametrize("ablation", fa.ABLATIONS)
def test_an_edited_runs_full_route_keeps_exactly_everything(analysis, ablation):
    """Issue 19: the route ran without the analysis's edits (1.145 and 2.12 on the default model); it must be the edited run."""
    edited = analysis.with_edits(list(EDITS))
    target = edited.target(-1, None, edited.predictions(-1, 2)[1].token_id)
    f = edited.faithfulness(0.0, target, ablation)
    assert f.value_route == pytest.approx(f.value_full, abs=1e-4 * (1 + abs(f.value_full)))
    assert f.faithfulness == pytest.approx(1.0, abs=1e-4)
    assert f.prob_kept == pytest.approx(1.0, abs=1e-4)


def hf_ffn_mean_ablated_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Oracle with plain transformers hooks: every block's MLP output replaced by its causal mean in the clean run."""
    mlps = [layer.mlp for layer in model.model.layers]
    clean: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _a, out, i=i: clean.__setitem__(i, out.detach())) for i, m in enumerate(mlps)]
    with torch.no_grad():
        model(input_ids=ids[None])
    for h in handles:
        h.remove()
    count = torch.arange(1, ids.numel() + 1, dtype=torch.float32)[:, None]  # (T, 1)
    means = {i: out[0].cumsum(0) / count for i, out in clean.items()}  # (T, d): position t averages 0..t
    handles = [m.register_forward_hook(lambda _m, _a, _out, i=i: means[i][None]) for i, m in enumerate(mlps)]
    try:
        with torch.no_grad():
            return model(input_ids=ids[None]).logits[0]
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("family", ["llama_gqa_bias", "granite"])
def test_mean_ablation_is_causal_and_taken_where_it_is_put_back(family):
    """A route with every attention edge and no FFN edge, mean-ablated, against transformers' own modules.

    Granite multiplies each update after the block's hooks: a mean taken of what the residual received would be
    scaled twice (issue 19). Position 0's mean is position 0 itself, so causal means leave the first logits alone.
    """
    from lmtt.engine.runner import ModelRunner
    from tests.tiny_models import tiny_model

    model = tiny_model(family)
    runner = ModelRunner(model, tokenizer=None, name=family)
    ids = token_ids(7)
    trace = runner.trace(ids)
    t = trace.n_tokens
    route = fa.Route(torch.ones(trace.n_layers, t, t, dtype=torch.bool), torch.zeros(trace.n_layers, t, dtype=torch.bool))
    got = fa.run_route(runner, trace, route, "mean").logits
    expected = hf_ffn_mean_ablated_logits(model, ids)
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()))
    assert torch.allclose(got[0], trace.logits[0], atol=1e-4 * float(expected.abs().max()))


def test_the_default_measure_moves_with_p_a(analysis):
    """The default quantity is log p(A) of the top prediction. Hand-built logits show why: a shift of every logit
    leaves it alone, and a third token that takes p(A) away lowers it, where logit(A) - logit(runner-up) stays put."""
    f = analysis.faithfulness(0.1)
    assert f.target.log_prob and f.target.token_id == analysis.predictions(-1, 1)[0].token_id
    assert f.target.describe() == f"log p({f.target.token!r})"
    a_id, b_id, c_id = 0, 1, 2  # a hand-built vocabulary of 7
    logits = torch.zeros(7)
    logits[a_id], logits[b_id] = 2.0, 1.0
    third = logits.clone()
    third[c_id] = 10.0  # p(A) falls from 0.39 to 0.0003
    log_p = fa.Target(0, a_id, "A", log_prob=True)
    expected = 2.0 - torch.tensor([2.0, 1.0, *[0.0] * 5]).exp().sum().log()  # by hand: logit(A) - logsumexp
    assert float(log_p.measure(logits)) == pytest.approx(float(expected), abs=1e-6)
    assert float(log_p.measure(logits + 3.0)) == pytest.approx(float(expected), abs=1e-6)
    assert float(log_p.measure(third)) < float(expected) - 7
    difference = fa.Target(0, a_id, "A", b_id, "B")
    assert float(difference.measure(third)) == float(difference.measure(logits)) == 1.0  # blind to the third token


def test_log_p_has_no_direct_effects(analysis):
    with pytest.raises(TargetError, match="not a linear function"):
        analysis.direct_effects(analysis.log_prob_target())


def test_the_curve_table_shows_small_probabilities_and_visible_tokens(analysis):
    """The Faithfulness page's table: probabilities in scientific notation (p(A) kept spans 1 to 1e-9), the route's
    top prediction with its white space visible, and a kept fraction that keeps its value (1e-9 is not dropped)."""
    from lmtt.ui.questions import curve_table

    target = analysis.contrast_target()
    rows = ((0.5, 1.29e-9, " Paris"), (0.1, 0.5, "\n"))  # (threshold, p(A) on the route, its top prediction)
    points = [fa.Faithfulness(target, t, "mean", 10, 3.0, 2.5, 1.0, 0.773, p, top) for t, p, top in rows]
    table, columns = curve_table(fa.FaithfulnessCurve(points))
    assert list(table["top_route"]) == ["␣Paris", "↵"]
    assert table["prob_kept"].iloc[0] == pytest.approx(1.29e-9 / 0.773)
    assert all(columns[c]["type_config"]["format"] == "%.2e" for c in ("prob_kept", "prob_full", "prob_route"))
    assert columns["faithfulness"]["type_config"]["format"] == "%.3f"
    # headed in the page's terms; the quantity and the ablation, the same in every row, are in the chart's title
    assert "quantity" not in table and "ablation" not in table
    assert [columns[c]["label"] for c in ("prob_kept", "value_route", "value_empty", "top_route")] == [
        "p(A) kept", "m(route)", "m(nothing)", "route's top prediction"]


def test_a_near_zero_denominator_reads_undefined(analysis):
    """m(model) and m(nothing) within 1e-3 logits: the fraction is noise, so it is NaN in the API and null in JSON."""
    target = analysis.contrast_target()
    f = fa.Faithfulness(target, 0.1, "zero", 10, value_full=2.0, value_route=5.0, value_empty=2.0 + 1e-5,
                        prob_full=0.5, prob_route=0.4, top_route="x")  # fmt: skip
    assert f.faithfulness != f.faithfulness  # NaN
    assert f.to_dict()["faithfulness"] is None
    assert json.loads(json.dumps(f.to_dict()))["faithfulness"] is None  # valid JSON, no NaN token
    kept = fa.Faithfulness(target, 0.1, "zero", 10, 3.0, 2.5, 1.0, 0.5, 0.4, "x")
    assert kept.faithfulness == pytest.approx(0.75)  # (2.5 - 1) / (3 - 1)
