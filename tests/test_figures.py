"""Figures: text defects and the graph's layout, checked on the figure objects (no browser)."""

import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from plotly.colors import sample_colorscale

import lmtt
from lmtt.engine.graph import node_id
from lmtt.engine.tokens import readable_tokens, visible
from lmtt.questions.shares import NeuronContributions
from lmtt.questions.vocabulary import Projection, TokenScore
from lmtt.viz import figures
from lmtt.viz import questions as question_figures
from lmtt.viz.columns import columns_for, every_column


def node_traces(fig) -> list:
    """The graph's node traces (faint, the route's by kind, the selected node), in drawing order."""
    return [t for t in fig.data if t.name == "nodes"]


def test_labels_escape_markup_but_not_quotes():
    assert figures.label('"') == '"'  # plotly shows &quot; literally
    assert figures.label("<b>&") == "&lt;b&gt;&amp;"
    assert visible(" ⟨F0 9F⟩ a") == "␣⟨F0 9F⟩␣a"  # a byte group keeps its spaces


def test_projection_bars_show_quotes_as_quotes():
    proj = Projection([TokenScore('"', 1, 2.0)], [TokenScore("'", 2, -1.0)])
    ticks = figures.projection_figure(proj).data[0].y
    assert '" (1)' in ticks and "' (2)" in ticks and not any("&quot;" in t or "&#x27;" in t for t in ticks)
    assert figures.projection_figure(proj).data[0].hovertemplate == "%{y}: direct effect %{x:+.3f} on its logit<extra></extra>"


def test_the_attention_pattern_leaves_the_masked_keys_blank(default_runner):
    """Keys after the query are masked by the causal mask: blank cells with no hover, not weights of 0.000; each
    query's row of weights still sums to 1."""
    a = lmtt.analyze(default_runner, "The capital of France is")
    z = np.array(figures.attention_pattern_figure(a, 23, 4).data[0].z, dtype=float)  # (T, T): query, key
    assert np.isnan(z[np.triu_indices(5, k=1)]).all() and not np.isnan(z[np.tril_indices(5)]).any()
    assert np.nansum(z, axis=1) == pytest.approx(np.ones(5), abs=1e-5)
    assert figures.attention_pattern_figure(a, 23, 4).data[0].hoverongaps is False


def test_neuron_bars_follow_the_sign_of_the_activation():
    nc = NeuronContributions(3, 4, torch.tensor([7, 9]), torch.tensor([0.3, 0.2]), torch.tensor([1.5, -0.5]), 0.1)
    bars = figures.neuron_bar_figure(nc).data[0]
    assert bars.marker.color[0] == figures.POSITIVE and bars.marker.color[1] == figures.NEGATIVE
    assert bars.hovertext[0].startswith("L3.N7: contribution 0.3<br>activation +1.5")  # the layer's name, not a bare N7


@pytest.mark.parametrize("make", [figures.head_importance_heatmap, figures.head_delta_heatmap])
def test_per_head_heatmaps_label_every_head_and_layer(make):
    fig = make(np.random.default_rng(0).random((30, 9)))
    assert fig.layout.xaxis.dtick == 1 and fig.layout.yaxis.dtick == 1
    assert fig.layout.height >= 22 * 9 + 120


def test_head_bars_mark_the_selected_head_and_carry_indices():
    fig = figures.head_bar_figure([0.1, 0.5, 0.2], 23, selected=1)
    assert list(fig.data[0].customdata) == [0, 1, 2] and list(fig.data[0].hovertext) == ["L23.H0", "L23.H1", "L23.H2"]
    assert fig.data[0].marker.color[1] != fig.data[0].marker.color[0]


def test_graph_labels_tokens_above_and_below_and_keeps_a_revision(default_runner):
    import lmtt

    a = lmtt.analyze(default_runner, "The capital of France is")
    fig = figures.graph_figure(a, a.paths_to(-1, 0.04), explained=4)
    assert list(fig.layout.xaxis.ticktext) == list(fig.layout.xaxis2.ticktext) == ["The", "␣capital", "␣of", "␣France", "␣is"]
    assert fig.layout.xaxis2.side == "top" and fig.layout.xaxis2.matches == "x"
    assert fig.layout.uirevision == figures.graph_figure(a, a.paths_to(-1, 0.2)).layout.uirevision  # same prompt, same view
    handles = [t for t in fig.data if t.name == "tokens"]
    assert len(handles) == 2 and list(handles[1].customdata) == [f"token|{p}" for p in range(5)]
    residual = [t for t in fig.data if t.name == "residual edge"]
    assert all(t.line.width <= 3.5 and t.line.color == figures.KIND_COLOURS["residual"] for t in residual)
    assert figures.graph_min_width(120) == 120 * figures.COLUMN_PX + 100
    hovers, ids = zip(*[(h, n) for t in node_traces(fig) for h, n in zip(t.hovertext, t.customdata)])
    assert len(ids) == 5 * 61 and all(h == figures.describe_node(a, n) for h, n in zip(hovers, ids))
    route = {node_id(lv, p) for lv, p in a.paths_to(-1, 0.04).node_keys()}
    coloured = {n for t in node_traces(fig) if t.marker.size == 9 for n in t.customdata}
    assert coloured == route  # the route's nodes large and coloured by kind, every other one faint


@pytest.fixture(scope="module")
def hundred(default_runner):
    """A 100-token analysis: over PACK_ABOVE_TOKENS, so its graph packs the touched columns."""
    import lmtt

    return lmtt.analyze(default_runner, " ".join(["The quick brown fox jumps over the lazy dog."] * 10))


def test_a_long_prompts_graph_draws_only_the_touched_columns(hundred, monkeypatch):
    a = hundred
    sub = a.paths_to(99, 0.04)
    fig = figures.graph_figure(a, sub, explained=99)
    cols = columns_for(100, sub, also=[99])
    assert cols.packed and cols.gaps and len(cols.positions) < 100
    ticks = dict(zip(fig.layout.xaxis.tickvals, fig.layout.xaxis.ticktext))
    assert ticks[cols.x_of([99])[0]] == "99: ."  # position and token
    assert [ticks[g.x] for g in cols.gaps] == [f'<span style="color:{figures.GAP_TEXT}">⋯ {len(g):,} tokens</span>' for g in cols.gaps]
    assert len(fig.layout.shapes) == len(cols.gaps) and fig.layout.xaxis.range[1] == cols.width - 0.4
    drawn = [n for t in node_traces(fig) for n in t.customdata]
    assert {int(n.rsplit(":", 1)[1]) for n in drawn} == set(cols.positions.tolist())
    assert sorted({x for t in node_traces(fig) for x in t.x}) == cols.x.tolist()
    # every edge ends on a drawn column (FFN edges beside it)
    lines = [t for t in fig.data if t.mode == "lines"]
    xs = np.concatenate([np.asarray(t.x, float) for t in lines])
    offsets = np.round(xs[~np.isnan(xs)] % 1, 6)
    assert set(offsets.tolist()) <= {0.0, figures.FFN_OFFSET}
    handles = [t for t in fig.data if t.name == "tokens"]
    assert list(handles[0].customdata) == [f"token|{p}" for p in cols.positions.tolist()]
    every = figures.graph_figure(a, sub, explained=99, columns=every_column(100))
    assert len(every.layout.xaxis.tickvals) == 100 and every.layout.uirevision != fig.layout.uirevision
    assert type(node_traces(fig)[0]) is go.Scatter  # a few thousand faint nodes: SVG
    monkeypatch.setattr(figures, "GL_ABOVE_NODES", 1000)
    assert type(node_traces(figures.graph_figure(a, sub, explained=99))[0]) is go.Scattergl  # many: WebGL


def test_a_direct_edge_off_the_flow_graph_gets_its_column(hundred):
    from lmtt.questions.dla import DirectEdge

    sub = hundred.paths_to(99, 0.04)
    off = next(p for p in range(99) if p not in columns_for(100, sub).positions)
    edge = DirectEdge("head", 5, 2, source=off, target=99, effect=1.5)  # from ffn:4:off into attn:5:99
    fig = question_figures.target_graph_figure(hundred, sub, hundred.target_lens(), [edge])
    ticks = dict(zip(fig.layout.xaxis.tickvals, fig.layout.xaxis.ticktext))
    (dashed,) = [t for t in fig.data if t.mode == "lines" and t.line.dash == "dash"]
    assert [ticks[x] for x in dashed.x] == [f"{off}: {figures.label(hundred.tokens[off])}", "99: ."]
    assert list(dashed.y) == [2 * 5, 2 * 5 + 1]


@pytest.mark.parametrize("family", ["gpt_neox_parallel", "gpt_neox_sequential"])
def test_a_parallel_graph_draws_no_state_after_attention(family):
    """GPT-NeoX with and without use_parallel_residual: a parallel block's nodes are its input and output only, and every
    edge is drawn from the level its source node sits on."""
    from lmtt.analysis import _analysis_of
    from lmtt.engine.runner import ModelRunner
    from tests.tiny_models import tiny_model, token_ids

    runner = ModelRunner(tiny_model(family), tokenizer=None, name=family)
    a = _analysis_of(runner, runner.trace(token_ids(6)))
    sub = a.paths_to(-1, 0.0)
    fig = figures.graph_figure(a, sub, explained=5)
    drawn = [n for t in node_traces(fig) for n in t.customdata]
    per_token = (a.n_layers + 1) if runner.parallel else (2 * a.n_layers + 1)
    assert len(drawn) == len(set(drawn)) == per_token * 6
    assert any(str(n).startswith("attn:") for n in drawn) != runner.parallel
    lines = [t for t in fig.data if t.mode == "lines" and t.name == "attention edge"]
    sources, targets = ({y for t in lines for y in list(t.y)[k::3]} for k in (0, 1))
    assert sources == {2 * layer for layer in range(a.n_layers)}  # the block input, in both layouts
    # into the block output (two levels up), or into the state after attention (one level up)
    assert targets == {2 * layer + (2 if runner.parallel else 1) for layer in range(a.n_layers)}


def test_qk_figures_add_up_to_the_score(default_runner):
    """The QK tab's bars (each side) and its folded heatmap sum to the score; a compared key gets its own bars."""
    a = lmtt.analyze(default_runner, "When Mary and John went to the store, John gave a drink to")
    john, mary = a.qk_attribution(23, 3, -1, 9), a.qk_attribution(23, 3, -1, 3)
    fig = question_figures.qk_parts_figure(john, a.tokens, mary)
    assert len(fig.data) == 4  # query and key sides, two keys
    assert fig.data[0].name == f"key 9 ␣John: score {john.score:.2f}"
    tagged = question_figures.qk_parts_figure(john, (*a.tokens[:9], " <b>", *a.tokens[10:]))  # a token in markup
    assert tagged.data[0].name.startswith("key 9 ␣&lt;b&gt;: ") and "<b>" not in tagged.data[0].hovertemplate
    for bars, result in zip(fig.data, (john, john, mary, mary)):
        assert float(np.sum(bars.x)) == pytest.approx(result.score, rel=1e-4)
    heat = question_figures.qk_heatmap(john)
    assert float(np.sum(heat.data[0].z)) == pytest.approx(john.score, rel=1e-4)
    # the colour scale is the largest single pair's, not a rest cell's (a sum of many pairs, which had washed out the rest)
    z = np.array(heat.data[0].z)  # (k+1, k+1): the last row and column are "rest (...)"
    assert heat.data[0].y[-1].startswith("rest (") and heat.data[0].x[-1].startswith("rest (")
    assert heat.data[0].zmax == pytest.approx(float(np.abs(z[:-1, :-1]).max())) == -heat.data[0].zmin
    assert ("saturates" in heat.data[0].colorbar.title.text) == bool(np.abs(z).max() > heat.data[0].zmax)
    assert float(john.pairs.abs().max()) == pytest.approx(heat.data[0].zmax)  # the largest pair has its own cell
    whole = question_figures.qk_heatmap(john, k=len(john.parts))  # every part labelled: no rest, the largest pair sets it
    assert whole.data[0].zmax == pytest.approx(float(john.pairs.abs().max())) and whole.data[0].colorbar.title.text == "score"
    assert list(heat.layout.yaxis.ticktext) == list(heat.data[0].y)  # every row labelled
    cells = [t for row in heat.data[0].text for t in row]
    assert all(t == "0" or t[0] in "+-" for t in cells) and "-0.00" not in cells and "+0.00" not in cells
    keys = question_figures.key_scores_figure(a.key_scores(23, 3, -1), a.tokens, selected=9)
    assert keys.data[0].marker.color[9] == "#ff7f0e" and len(keys.data[0].y) == 14


def test_a_pin_on_a_token_the_long_graph_does_not_draw_is_left_out_not_a_crash(hundred):
    """Pins made at one threshold, then a threshold whose route skips their token: the packed graph draws without them."""
    from lmtt.questions.curation import Curation

    sub = hundred.paths_to(-1, 0.2)
    cols = columns_for(100, sub, also=(99,))
    hidden = next(p for p in range(100) if p not in set(cols.positions.tolist()))
    c = Curation(pins=(f"ffn:3:{hidden}", "ffn:29:99"), groups={"g": (f"ffn:2:{hidden}", f"ffn:3:{hidden}")}, labels={"ffn:29:99": "out"})
    for only in (False, True):
        fig = figures.graph_figure(hundred, sub, explained=99, columns=cols, curation=c, subgraph_only=only)
        pins = [t for t in fig.data if t.name == "pins"]
        assert len(pins) == 1 and list(pins[0].text) == ["out"]  # the drawn pin only


def test_the_graph_shows_quotes_and_markup_as_typed(default_runner):
    """Plotly reads a subset of HTML and few named entities: `&quot;` shows literally. A token '"', a pin's label and a
    group's name with <b>, & and quotes are shown as typed (escaped markup, bare quotes) in the graph's text and hovers."""
    from lmtt.questions.curation import Curation

    a = lmtt.analyze(default_runner, 'He said "go" & <b>left</b>')
    quote = next(p for p, t in enumerate(a.tokens) if '"' in t)
    sub = a.paths_to(-1, 0.04)
    on_route = [node_id(lv, p) for lv, p in sub.node_keys() if lv > 0]
    c = Curation(pins=(on_route[-1],), groups={'the "<b>" & co': tuple(on_route[:2])}, labels={on_route[-1]: 'a "<i>" pin'})
    texts = []
    for only in (False, True):
        fig = figures.graph_figure(a, sub, explained=len(a.tokens) - 1, curation=c, subgraph_only=only)
        for t in fig.data:
            texts += [x for x in [*(t.text or ()), *(t.hovertext or ())] if isinstance(x, str)]
    joined = "\n".join(texts)
    assert "&quot;" not in joined and "<b>" not in joined and "<i>" not in joined
    assert 'a "&lt;i&gt;" pin' in texts and 'the "&lt;b&gt;" &amp; co' in texts
    assert any(visible(a.tokens[quote]) in x for x in texts if x.startswith(("layer", "embedding")))


def test_margin_labels_take_the_slots_between_layer_labels():
    """Hand-worked: layer labels at 0, 1.5, 3.5, 5.5 leave slots 0.75, 2.5, 4.5 and 6.5; two labels that want the same
    slot take it and the next one up; more labels than slots get None (the caller stacks them instead)."""
    slots = question_figures.label_slots([0, 1.5, 3.5, 5.5])
    assert slots == [0.75, 2.5, 4.5, 6.5]
    assert question_figures.slotted([4.4, 4.6, 0], slots) == [4.5, 6.5, 0.75]
    assert question_figures.slotted([6.4, 6.5], slots) == [4.5, 6.5]  # the top slot is taken: the stack moves down
    assert question_figures.slotted([6.5, 6.4], slots) == [6.5, 4.5]  # the label that wants higher stays higher
    assert question_figures.slotted([6.4, 6.5, 0.8], slots) == [4.5, 6.5, 0.75]  # and no further than it must
    assert question_figures.slotted([1.0] * 5, slots) is None


def test_stacked_labels_keep_their_gap_and_stay_inside():
    """Hand-worked: labels move up from the lowest until `gap` apart; a stack past the top moves down as a whole."""
    assert question_figures.stacked([5, 5, 5.5, 0], -1, 10, 1.6) == pytest.approx([5, 6.6, 8.2, 0])
    assert question_figures.stacked([9, 9, 9], 0, 10, 1.6) == pytest.approx([6.8, 8.4, 10.0])
    assert question_figures.stacked([], 0, 10, 1.6) == []
    # a stack past the top moves down only as far as it must: a label with room below it keeps its place
    assert question_figures.stacked([9, 9, 9, 2], 0, 10, 1.6) == pytest.approx([6.8, 8.4, 10.0, 2])
    assert question_figures.stacked([9, 9, 9, 6], 0, 10, 1.6) == pytest.approx([6.8, 8.4, 10.0, 5.2])


def test_the_target_graph_labels_boosters_in_the_margin_and_colours_by_the_routes_percentile(hundred):
    """Issue 20: labels never overlap or sit on the plot (right margin, a gap apart, leaders to the plot's edge); node
    colours saturate at the route's 90th percentile of |lens|, so the route is not washed out by a few extremes."""
    a = hundred
    sub = a.paths_to(99, 0.04)
    target = a.target(99)
    direct = a.direct_edges(target, 0.3)
    assert len(direct) >= 3
    lens = a.target_lens(target)
    fig = question_figures.target_graph_figure(a, sub, lens, direct)
    notes = [n for n in fig.layout.annotations if n.xref == "paper" and n.x == 1]
    assert len(notes) == len(direct) and all(n.xanchor == "left" and n.xshift > 0 for n in notes)
    heights = sorted(n.y for n in notes)
    assert all(b - a_ >= question_figures.LABEL_GAP_LEVELS - 1e-9 for a_, b in zip(heights, heights[1:]))
    right = fig.layout.xaxis.range[1]
    leaders = [t for t in fig.data if t.mode == "lines" and t.line.dash == "dot"]
    assert sorted(t.y[1] for t in leaders) == heights and all(t.x[1] == right for t in leaders)
    # each label, and its leader on through the layer labels' column, lies between two layer labels (12+ px from both)
    ticks = list(fig.layout.yaxis2.tickvals)
    assert all(min(abs(h - t) for t in ticks) >= 0.75 for h in heights), (heights, ticks)
    through = [s for s in fig.layout.shapes if s.type == "line" and s.xsizemode == "pixel"]
    assert sorted(s.y0 for s in through) == heights and all(s.x1 - s.x0 == question_figures.LAYER_LABELS_PX for s in through)
    widest = max(len(n.text) for n in notes) * question_figures.LABEL_CHAR_PX
    assert fig.layout.margin.r >= widest + question_figures.LAYER_LABELS_PX + question_figures.COLOUR_BAR_PX
    q = lens.quantity.numpy()
    values = np.abs([q[lv, p] for lv, p in set(sub.node_keys())])
    lim = float(np.percentile(values, 90))
    assert f"±{lim:.3g}" in next(t for t in fig.data if t.marker.showscale).marker.colorbar.title.text
    coloured = [c for t in node_traces(fig) if isinstance(t.marker.color, tuple) for c in t.marker.color]
    ends = set(sample_colorscale(question_figures.SCALE, [0.0, 1.0]))
    assert len(coloured) == len(values)
    saturated = sum(c in ends for c in coloured)  # the route's top 10% (and, by 8-bit rounding, a few just under)
    assert np.sum(values >= lim) <= saturated <= np.sum(values >= 0.97 * lim) < len(values) // 5


def test_a_graph_is_sent_so_that_plotly_can_redraw_a_copy_without_drawing_it_again(hundred):
    """Streamlit copies a new chart's figure after its first draw, and Plotly.react draws that copy in full unless
    nothing compares as changed: data arrays as plain JSON lists compared by datarevision (base64 arrays decode to
    new typed arrays), and no template (compared by identity). The revision follows what is drawn."""
    a = hundred
    sub = a.paths_to(99, 0.04)
    lens = a.target_lens(a.target(99))
    direct = a.direct_edges(a.target(99), 0.3)
    made = {
        "graph": lambda t, d: figures.graph_figure(a, a.paths_to(99, t), explained=99),
        "target": lambda t, d: question_figures.target_graph_figure(a, a.paths_to(99, t), lens, direct[:d]),
    }
    for name, make in made.items():
        fig = make(0.04, 3)
        spec = json.loads(fig.to_json())
        assert "template" not in spec["layout"], name
        assert not any(isinstance(v, dict) and "bdata" in v for t in spec["data"] for v in t.values()), name
        rev = spec["layout"]["datarevision"]
        assert rev == make(0.04, 3).layout.datarevision, name  # the same figure: the same revision (the chart is kept)
        assert rev != make(0.1, 3).layout.datarevision, name  # fewer edges
    assert made["target"](0.04, 3).layout.datarevision != made["target"](0.04, 2).layout.datarevision  # one booster fewer
    assert len(sub) > len(a.paths_to(99, 0.1))


def test_a_patching_heatmap_is_sent_to_be_drawn_once_with_its_undefined_cells_blank():
    """The heatmap follows drawn_once too (lists, a revision, no template), and a NaN cell (the clean and corrupted
    values too close to divide) is sent as null, drawn blank and read "undefined"; the revision follows the values."""
    from lmtt.questions.dla import Target
    from lmtt.questions.patching import PatchingResult

    def result(corner: float) -> PatchingResult:
        grid = torch.tensor([[0.25, corner], [float("nan"), 1.0]])  # (L=2, T=2)
        return PatchingResult(Target(1, 7, " Paris"), ("a", "b"), ("a", "c"), 2.0, -1.0, grid, grid, grid, grid, 0.1, 1)

    fig = question_figures.patching_heatmap(result(0.5), "resid")
    spec = json.loads(fig.to_json())
    assert "template" not in spec["layout"]
    assert spec["data"][0]["z"] == [[0.25, 0.5], [None, 1.0]]
    assert spec["data"][0]["text"][1][0] == "undefined"
    assert fig.layout.datarevision == question_figures.patching_heatmap(result(0.5), "resid").layout.datarevision
    assert fig.layout.datarevision != question_figures.patching_heatmap(result(0.75), "resid").layout.datarevision


def test_the_curve_labels_no_threshold_over_another():
    """Two thresholds that keep about the same edges (within 5% of the x range and 8% of the y range of a labelled
    one) get one label; a point without a value gets none."""
    labels = question_figures.spaced_labels([10, 11, 50, 100, 60], [0.5, 0.51, 0.7, 1.0, float("nan")], ["a", "b", "c", "d", "e"])
    assert labels == ["a, b", "", "c", "d", ""]  # b's point is a's: a's label names both (NaN: no label)
    assert question_figures.spaced_labels([10, 11, 12, 90], [0.5, 0.5, 0.5, 1.0], ["a", "b", "c", "d"]) == ["a … c", "", "", "d"]
    # "…" says "and those between": points that are not in a row are listed
    assert question_figures.spaced_labels([10, 11, 90, 12], [0.5, 0.5, 1.0, 0.5], ["a", "b", "c", "d"]) == ["a, b, d", "", "c", ""]
    assert question_figures.spaced_labels([10, 11, 100], [0.5, 0.9, 0.5], ["a", "b", "c"]) == ["a", "b", "c"]  # close in x only
    # the p(A)-kept curve and the line at 1 share the axis: faithfulness values 0.97 and 0.99 are close on it
    assert question_figures.spaced_labels([10, 11, 100], [0.97, 0.99, 0.98], ["a", "b", "c"], also_y=(0.0, 1.0)) == ["a, b", "", "c"]


def test_small_probabilities_keep_their_digits():
    """A kept probability of 1e-9 is not "0.000" (the Faithfulness page's metric); fractions keep 3 decimals."""
    assert question_figures.number(1.29e-9, significant=True) == "1.29e-09"
    assert question_figures.number(0.7734, significant=True) == "0.773"
    assert question_figures.number(0.2716) == "0.272"
    assert question_figures.number(float("nan"), significant=True) == "undefined"


def test_a_cell_that_rounds_to_zero_reads_0_never_minus_0():
    """The QK and head heatmaps printed "-0.00" for a tiny negative part; signed cells keep their sign otherwise."""
    assert question_figures.number(-0.004, 2) == "0" and question_figures.number(0.004, 2, signed=True) == "0"
    assert question_figures.number(-1e-12, 3, significant=True) == "-1e-12"  # significant digits never round to 0
    assert question_figures.number(0.236, 2, signed=True) == "+0.24" and question_figures.number(-0.236, 2, signed=True) == "-0.24"


def test_patching_cells_carry_their_value_only_where_it_fits():
    """Up to CELL_TEXT_MAX_COLUMNS positions each cell shows its value at CELL_FONT_PX; a longer prompt's cells are too
    narrow, so the value is in the hover alone (it had been printed over its neighbours at 8 px)."""
    from lmtt.questions.dla import Target
    from lmtt.questions.patching import PatchingResult

    def figure(width: int):
        grid = torch.full((2, width), 0.5)  # (L=2, T)
        toks = tuple("ab"[i % 2] for i in range(width))
        result = PatchingResult(Target(1, 7, " Paris"), toks, toks, 2.0, -1.0, grid, grid, grid, grid, 0.1, 1)
        return question_figures.patching_heatmap(result, "resid")

    narrow, wide = figure(question_figures.CELL_TEXT_MAX_COLUMNS), figure(question_figures.CELL_TEXT_MAX_COLUMNS + 1)
    assert narrow.data[0].texttemplate == "%{text}" and narrow.data[0].textfont.size == question_figures.CELL_FONT_PX
    assert wide.data[0].texttemplate == "" and wide.data[0].text[0][0] == "0.50"  # still in the hover


def test_the_lens_grid_names_every_level(hundred):
    """Every node level's row has its label (plotly drops every other one when rows are tight), and each row has
    LENS_ROW_PX pixels."""
    levels = 2 * hundred.n_layers + 1  # 61
    values = np.zeros((levels, len(hundred.tokens)))
    fig = question_figures.lens_value_heatmap(hundred, values, "lens", centre=True)
    assert fig.layout.yaxis.dtick == 1 and len(fig.data[0].y) == levels
    assert fig.layout.height >= question_figures.LENS_ROW_PX * levels
    assert fig.data[0].texttemplate == ""  # 100 positions: cells too narrow for their values (8 px text had overlapped)
    short = lmtt.analyze(hundred.runner, "The capital of France is")
    small = question_figures.lens_value_heatmap(short, np.zeros((levels, len(short.tokens))), "lens", centre=True)
    assert small.data[0].texttemplate and small.data[0].textfont.size == question_figures.CELL_FONT_PX
    signs = question_figures.lens_value_heatmap(short, np.full((levels, len(short.tokens)), -0.01), "lens", centre=True)
    assert signs.data[0].text[0][0] == "0"  # not "-0.0"
    assert question_figures.CELL_FONT_PX < question_figures.LENS_ROW_PX  # the value fits its row


def test_the_graph_legend_names_what_a_node_colour_means(hundred):
    """The legend had named the edges only: each route-node colour now has its entry (no points: nothing to click).
    The Target graph colours its nodes by the quantity, so it has none of them."""
    sub = hundred.paths_to(-1, 0.04)
    fig = figures.graph_figure(hundred, sub)
    legend = {t.name: t.marker.color for t in fig.data if t.legendgroup == figures.NODE_LEGEND}
    assert legend == {"node: embedding": "#2ca02c", "node: after attention": "#1f77b4", "node: after FFN": "#d62728"}
    assert all(list(t.x) == [None] for t in fig.data if t.legendgroup == figures.NODE_LEGEND)
    route_colours = {t.marker.color for t in fig.data if t.name == "nodes" and t.marker.size == 9}
    assert route_colours and route_colours <= set(legend.values())
    target = hundred.target(-1)
    coloured = question_figures.target_graph_figure(hundred, sub, hundred.target_lens(target))
    assert not [t for t in coloured.data if t.legendgroup == figures.NODE_LEGEND]


def test_every_signed_heatmap_draws_positive_in_red():
    """Compare's and Dataset's head heatmaps had drawn positive in blue (RdBu) while Target and Patching drew it in red:
    a reader moving between pages misread the sign. Each one's top end is now red, its bottom end blue."""
    from plotly.colors import unlabel_rgb

    def ends(fig):
        scale = fig.data[0].colorscale
        return unlabel_rgb(scale[0][1]), unlabel_rgb(scale[-1][1])  # (r, g, b) at the low and the high end

    z = np.array([[-1.0, 0.5], [0.25, 1.0]])  # (L, H)
    for fig in (figures.head_importance_heatmap(z, signed=True), figures.head_delta_heatmap(z)):
        (low, high) = ends(fig)
        assert high[0] > high[2] and low[2] > low[0], (low, high)


def test_heads_that_share_an_edge_get_their_own_diamonds(hundred):
    """Two heads of one layer whose largest part reads the same source share one dashed edge: their diamonds had been
    drawn on one point (L29.H1 hidden under L29.H0). Now they stand DIAMOND_STEP columns apart, centred on the edge."""
    from lmtt.questions.dla import DirectEdge

    a = hundred
    sub = a.paths_to(99, 0.04)
    shared = [DirectEdge("head", 3, h, 99, 99, effect) for h, effect in ((0, 1.5), (1, -1.2))]  # both read token 99
    fig = question_figures.target_graph_figure(a, sub, a.target_lens(a.target(99)), shared)
    diamonds = [t for t in fig.data if t.mode == "markers" and t.marker.symbol == "diamond"]
    xs, ys = sorted(t.x[0] for t in diamonds), {t.y[0] for t in diamonds}
    assert len(diamonds) == 2 and len(ys) == 1
    assert xs[1] - xs[0] == pytest.approx(question_figures.DIAMOND_STEP)
    column = float(columns_for(100, sub, also=[99]).x_of([99])[0])
    assert (xs[0] + xs[1]) / 2 == pytest.approx(column)  # centred on the (vertical) edge
    # the hover names the edge's two states in words, as the Graph page does, not by node id (attn:3:99)
    booster = next(t for t in diamonds if "booster" in t.hovertext[0]).hovertext[0]
    token = visible(readable_tokens(a)[99])
    assert f"from layer 2 after FFN, token 99 {token}<br>into layer 3 after attention, token 99 {token}" in booster, booster
    assert "attn:3:99" not in booster and booster.startswith("booster L3.H0: direct effect +1.500 logits")


def test_the_heads_heatmap_reads_as_the_heads_table(hundred):
    """The Target page's heads heatmap wrote 2 decimals (-1.00) beside a table of 3 significant digits (-0.995); and
    no cell goes finer than 0.001, where 3 significant digits would write -8.53e-05 beside 0.000921."""
    e = hundred.direct_effects(hundred.target(99))
    fig = question_figures.head_effect_heatmap(e)
    for row, texts in zip(e.heads.tolist(), fig.data[0].text):
        for v, text in zip(row, texts):
            assert abs(float(text) - v) <= max(0.0005, 0.005 * abs(v)) and "e" not in text, (v, text)
            assert len(text.lstrip("-").replace(".", "").lstrip("0")) <= 3, (v, text)  # 3 significant digits at most
    cells = [question_figures.cell_number(v) for v in (-0.99512, 2.657, -8.53e-05, 0.000921, 12.34)]
    assert cells == ["-0.995", "2.66", "0", "0.001", "12.3"]


def test_no_edge_dot_takes_a_diamonds_hover_on_the_target_graph(hundred):
    """A diamond sits on its edge's midpoint, where the Graph page's edge dot is: the dot's hover ("attention edge …
    click to split it by head") had come up instead of the diamond's, and a click there selects nothing on this page."""
    a = hundred
    sub = a.paths_to(99, 0.04)
    direct = a.direct_edges(a.target(99), 0.3)
    fig = question_figures.target_graph_figure(a, sub, a.target_lens(a.target(99)), direct)
    dots = next(t for t in fig.data if t.name == "edges")
    plain = next(t for t in figures.graph_figure(a, sub, explained=99).data if t.name == "edges")
    diamonds = [(t.x[0], t.y[0]) for t in fig.data if t.mode == "markers" and t.marker.symbol == "diamond"]
    covered = [c for c, x, y in zip(plain.customdata, plain.x, plain.y) if any(abs(x - dx) < 0.3 and y == dy for dx, dy in diamonds)]
    assert covered, "no diamond on a drawn edge: the test would pass vacuously"
    assert not set(covered) & set(dots.customdata)
    assert len(dots.customdata) == len(plain.customdata) - len(covered) == len(dots.x) == len(dots.marker.color)
    assert not any("click" in h for h in dots.hovertext) and all("weight" in h for h in dots.hovertext)
    handles = [t for t in fig.data if t.customdata is not None and str(t.customdata[0]).startswith("token|")]
    assert len(handles) == 2 and not any("click" in h for t in handles for h in t.hovertext)  # its token clicks do nothing too
    shown = [t for t in figures.graph_figure(a, sub, explained=99).data if t.customdata is not None]
    assert any("click to explain" in h for t in shown if str(t.customdata[0]).startswith("token|") for h in t.hovertext)


def test_a_graph_figure_knows_the_width_it_needs(hundred):
    """The Target and Compare pages squeezed a 64-token graph into the page's width (labels over each other): they now
    scroll it sideways at the Graph page's readable column width, which the figure's own columns and margins give."""
    sub = hundred.paths_to(99, 0.04)
    cols = columns_for(100, sub, also=[99])
    plain = figures.graph_figure(hundred, sub, explained=99, columns=cols)
    assert figures.figure_min_width(plain) == figures.graph_min_width(cols.width)
    every = figures.graph_figure(hundred, sub, explained=99, columns=every_column(100))
    assert figures.figure_min_width(every) == figures.COLUMN_PX * 100 + sum(figures.GRAPH_MARGIN_PX[k] for k in "lr")
    t = hundred.target(99)
    target = question_figures.target_graph_figure(hundred, sub, hundred.target_lens(t), hundred.direct_edges(t, 0.3))
    assert figures.figure_min_width(target) > figures.figure_min_width(plain)  # its labels and colour bar take room too


def test_the_lens_names_its_rows_on_both_sides(default_runner):
    """The lens opens scrolled to its right end (the explained token): on a 16-token prompt its only row names, on the
    left, were out of view, and its title read "f every state". The rows are named on the right too, in the same
    order, and the title sits at the right."""
    a = lmtt.analyze(default_runner, "The capital of France is")
    ids, probs = a.top_lens_grid()
    rows = ["emb", *(f"L{layer} {kind}" for layer in range(30) for kind in ("attn", "ffn"))]
    for fig in (figures.lens_top_heatmap(a, [["x"] * 5] * 61, probs.numpy()), figures.lens_heatmap(a, probs.numpy(), "t", False)):
        assert list(fig.data[0].y) == rows and fig.layout.yaxis2.side == "right" and fig.layout.yaxis2.matches == "y"
        assert list(fig.layout.yaxis2.categoryarray) == rows and any(t.yaxis == "y2" for t in fig.data)
        assert fig.layout.title.xanchor == "right"


def test_a_groups_square_stands_on_one_of_its_members(default_runner):
    """A group of states at tokens 1 and 3 had its ■ at their centre, in token 2's column, where a faint node of
    token 2 took its hover. Now the ■ sits on the member nearest the centre, a dotted spoke goes to each other member,
    and in the pinned-subgraph view the faint nodes outside the curation take no hover (the curated ones, faint when
    no drawn edge touches them, stay clickable)."""
    from lmtt.questions.curation import Curation

    a = lmtt.analyze(default_runner, "The capital of France is")
    sub = a.paths_to(-1, 0.04)
    members = ("ffn:22:1", "ffn:22:3", "ffn:21:3")  # centre: token 2.33, level 45.33; nearest: ffn:22:3 (token 3, level 46)
    c = Curation(pins=(*members, "ffn:29:4"), groups={"g": members})
    fig = figures.graph_figure(a, sub, explained=4, curation=c, subgraph_only=True)
    square = next(t for t in fig.data if t.name == "groups")
    cols = columns_for(5, sub, also=(4,))
    x_of = dict(zip(cols.positions.tolist(), cols.x.tolist()))
    assert (square.x[0], square.y[0]) == (x_of[3], 46.0)
    assert list(square.textposition) == ["middle left"]  # in the right half its name reads leftwards, not off the figure
    spokes = next(t for t in fig.data if t.name == "group member")
    assert sorted(zip(spokes.x[1::3], spokes.y[1::3])) == sorted([(x_of[1], 46.0), (x_of[3], 44.0)])
    faint = [(t.hoverinfo, n) for t in node_traces(fig) if t.marker.size == 3 for n in t.customdata]
    on_route = {n for t in node_traces(fig) if t.marker.size == 9 for n in t.customdata}
    assert {n for info, n in faint if info == "text"} == c.nodes - on_route and c.nodes - on_route  # the curated stay clickable
    assert {info for info, n in faint if n not in c.nodes} == {"skip"}  # no other faint node takes a hover or a click
    plain = figures.graph_figure(a, sub, explained=4, curation=c)
    assert {t.hoverinfo for t in node_traces(plain)} == {"text"}  # the whole graph: every node hovers
