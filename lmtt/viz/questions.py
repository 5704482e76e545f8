"""Plotly figures for the target, faithfulness and patching views. Plain functions: no Streamlit here.

Signed quantities (direct effects, logit differences, restored fractions) use
one diverging scale centred on 0: red pushes the target up, blue pushes it down.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from lmtt.analysis import Analysis
from lmtt.engine.graph import Subgraph, parse_node
from lmtt.engine.levels import head_name, level_names, level_of, n_levels
from lmtt.questions.curation import Curation
from lmtt.questions.dla import DirectEdge, DirectEffects, LensGrid
from lmtt.questions.faithfulness import FaithfulnessCurve
from lmtt.questions.patching import PatchingResult
from lmtt.questions.qk import KeyScores, QKAttribution
from lmtt.viz import figures
from lmtt.viz.columns import columns_for

SCALE = figures.DIVERGING  # red: raises the quantity, blue: lowers it
COLOUR_BAR_PX = 110  # the right margin a colour bar and its tick labels need beside the graph's layer labels
BOOSTER, SUPPRESSOR = "#2ca02c", "#9467bd"
LABEL_GAP_LEVELS = 1.6  # rows between the margin's labels: about 19 px at ROW_PX, an 11 px line with its border
LABEL_CHAR_PX = 7  # the width of a character of 11 px text: the margin that holds the labels
LAYER_LABELS_PX = 48  # the right-hand layer labels ("L29 FFN") between the plot's edge and the direct-effect labels
ROUTE_PERCENTILE = 90  # the Target graph's colours saturate at this percentile of |value| over the route's nodes
CELL_FONT_PX, CELL_ROW_PX = 10, 20  # the value written in a heatmap's cell (layer rows), and the row that holds it
CELL_TEXT_MAX_COLUMNS = 24  # more columns (a long prompt's positions) leave no room for a value in each cell
QK_FONT_PX = 11  # the QK pairs' 13 x 13 cells are wide
DIAMOND_STEP = 0.25  # columns between the diamonds of heads that share an edge (else drawn on one point)


def stacked(wanted: list[float], low: float, high: float, gap: float) -> list[float]:
    """Heights for labels that want `wanted`, each at least `gap` from the others, kept inside [low, high] where they
    fit: up from the lowest, then down from `high` as far as the labels that ran past it need (those with room below
    keep their place; never below `low`)."""
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    placed: list[float] = []
    for i in order:
        placed.append(max(wanted[i], placed[-1] + gap if placed else low))
    ceiling = high
    for k in reversed(range(len(placed))):
        placed[k] = max(min(placed[k], ceiling), low + k * gap)
        ceiling = placed[k] - gap
    out = [0.0] * len(wanted)
    for i, y in zip(order, placed):
        out[i] = y
    return out


def label_slots(axis_labels: list[float]) -> list[float]:
    """Heights for the right margin's labels: midway between two layer labels, and one above the last, so that a
    label and the leader that runs to it through the layer labels' column touch none of them."""
    return [(a + b) / 2 for a, b in zip(axis_labels, axis_labels[1:])] + [axis_labels[-1] + (axis_labels[-1] - axis_labels[-2]) / 2]


def slotted(wanted: list[float], slots: list[float]) -> list[float] | None:
    """Each label in the slot nearest its `wanted` height, one label a slot, moved up (then down, as `stacked` does) where
    taken; None when there are more labels than slots."""
    if len(wanted) > len(slots):
        return None
    nearest = [min(range(len(slots)), key=lambda k: abs(slots[k] - y)) for y in wanted]
    # two labels that want one slot keep the order of the heights they want (else their leaders cross)
    order = [k + (y - slots[k]) / (1000 * (1 + abs(y - slots[k]))) for k, y in zip(nearest, wanted)]
    return [slots[round(k)] for k in stacked(order, 0, len(slots) - 1, 1)]


def _symmetric(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def head_effect_heatmap(effects: DirectEffects) -> go.Figure:
    """Layer x head: each head's direct effect on the quantity at the explained position, value in each cell."""
    z = effects.heads.numpy()  # (L, H)
    n_layers, n_heads = z.shape
    lim = _symmetric(z)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"H{h}" for h in range(n_heads)],
            y=[f"L{layer}" for layer in range(n_layers)],
            colorscale=SCALE,
            zmin=-lim,
            zmax=lim,
            text=[[cell_number(v) for v in row] for row in z.tolist()],
            texttemplate="%{text}",
            textfont={"size": CELL_FONT_PX},
            customdata=[[head_name(layer, h) for h in range(n_heads)] for layer in range(n_layers)],
            hovertemplate="head %{customdata}: %{z:.3f} logits<extra></extra>",
            colorbar={"title": "logits"},
        )
    )
    fig.update_layout(
        title=f"Direct effect of each head on {figures.quantity_text(effects.target)}",
        height=max(360, CELL_ROW_PX * n_layers + 120),
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
    )
    return fig


def neuron_effect_figure(effects: DirectEffects, k: int = 20) -> go.Figure:
    top = effects.top_neurons(k)
    fig = go.Figure(
        go.Bar(
            x=[c.value for c in top][::-1],
            y=[c.name for c in top][::-1],
            orientation="h",
            marker_color=[BOOSTER if c.value > 0 else SUPPRESSOR for c in top][::-1],
            hovertemplate="%{y}: %{x:.3f} logits<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Top {len(top)} neurons by |direct effect|", height=max(300, 18 * len(top) + 80), margin={"l": 90, "r": 10, "t": 40, "b": 30}
    )
    return fig


LENS_ROW_PX = 14  # a row per node level, tall enough for its label


def lens_value_heatmap(analysis: Analysis, values: np.ndarray, title: str, centre: bool) -> go.Figure:
    """(2L+1, T) logit lens values at every node level and position, each value written in its cell."""
    levels = values.shape[0]
    names = list(level_names((levels - 1) // 2))
    kwargs = {"zmid": 0, "colorscale": SCALE} if centre else {"colorscale": "Viridis"}
    wide = len(analysis.tokens) <= CELL_TEXT_MAX_COLUMNS  # cells with room for their value
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[f"{p}: {figures.label(t)}" for p, t in enumerate(analysis.tokens)],
            y=names,
            # a value in each cell where cells are wide enough ("0", never "-0.0"), else in the hover only
            text=[[number(v, 1) for v in row] for row in values.tolist()] if wide else None,
            texttemplate="%{text}" if wide else "",
            textfont={"size": CELL_FONT_PX},
            hovertemplate="%{y} at %{x}: %{z:.3f}<extra></extra>",
            colorbar={"title": "logit"},
            **kwargs,
        )
    )
    fig.update_layout(
        title=figures.plain_text(title),
        height=max(420, LENS_ROW_PX * levels + 140),
        margin={"l": 70, "r": 10, "t": 40, "b": 90},
        xaxis={"tickangle": -60},
        yaxis={"dtick": 1, "tickfont": {"size": 10}},  # every level named: plotly skips every other label when rows are tight
    )
    return fig


def _node_level_position(node: str) -> tuple[int, int]:
    kind, layer, pos = parse_node(node)
    return level_of(kind, layer), pos


def target_graph_figure(
    analysis: Analysis,
    sub: Subgraph,
    lens: LensGrid,
    direct: list[DirectEdge] | None = None,
    curation: Curation | None = None,
    subgraph_only: bool = False,
) -> go.Figure:
    """The flow graph with its nodes coloured by the quantity (logit lens of A - B) of their state,
    and, when `direct` is given, boosters and suppressors drawn as dashed direct-effect edges; a curation's pins,
    labels and groups as on the Graph page."""
    direct = direct or []
    ends = [_node_level_position(node) for edge in direct for node in (edge.from_node, edge.into)]
    pinned = sorted(curation.positions) if curation else []  # pins keep their columns
    cols = columns_for(len(analysis.tokens), sub, also=[*(pos for _level, pos in ends), *pinned])  # direct edges may leave the graph
    # a click on an edge's dot selects nothing on the Target page: its hover does not offer one
    fig = figures.graph_figure(analysis, sub, columns=cols, curation=curation, subgraph_only=subgraph_only, clicks=False)
    fig.data = [t for t in fig.data if t.legendgroup != figures.NODE_LEGEND]  # its nodes are coloured by the quantity
    q = lens.quantity.numpy()  # (2L+1, T)
    on_route = {(lv, p) for lv, p in sub.node_keys()}
    # robust limits: the route's 90th percentile of |value|, beyond which colours saturate (the extremes, often the
    # last layers, made every other node of the route nearly white)
    route = np.abs(np.array([q[lv, p] for lv, p in on_route], dtype=float))
    route = route[np.isfinite(route)]
    lim = float(np.percentile(route, ROUTE_PERCENTILE)) if route.size else 0.0
    lim = lim if lim > 0 else _symmetric(q)
    quantity = figures.quantity_text(lens.target)
    for trace in fig.data:
        if trace.name != "nodes":
            continue
        at = [_node_level_position(node) for node in trace.customdata]
        values = [float(q[level, pos]) for level, pos in at]
        if at and at[0] in on_route:  # a route's trace (one kind): coloured by the quantity
            # one colour-scale call per trace (one call per value was slow)
            trace.marker.color = sample_colorscale(SCALE, [(min(max(v / lim, -1.0), 1.0) + 1) / 2 for v in values])
        trace.hovertext = [f"{h}<br>{quantity} = {v:.2f}" for h, v in zip(trace.hovertext, values)]
    # a colour bar for the node colours (an invisible trace carries it)
    fig.add_trace(
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            marker={
                "colorscale": SCALE,
                "cmin": -lim,
                "cmax": lim,
                "color": [0],
                "showscale": True,
                # in a margin of its own, right of the layer labels (paper x=1.02 would cover them)
                "colorbar": {
                    "title": f"lens of target<br>(±{lim:.3g}: route's<br>{ROUTE_PERCENTILE}th pct.)",
                    **{"len": 0.5, "xref": "container", "x": 1, "xanchor": "right", "thickness": 18},
                },
            },
            hoverinfo="skip",
            showlegend=False,
        )
    )
    labels = []  # (text, colour, the diamond's x and y): written in the right margin, one per line, never overlapping
    def ends_of(edge: DirectEdge) -> str:
        ends = (("from", edge.from_node), ("into", edge.into))
        return "<br>".join(f"{word} {figures.plain_text(figures.describe_node(analysis, node))}" for word, node in ends)

    sharing = Counter((e.kind, e.from_node, e.into) for e in direct)  # heads of one layer that read one source share an edge
    seen: Counter = Counter()
    covered = {}  # the id of the edge dot under each diamond's edge: the height of the diamond
    for edge in direct:
        (y0, p0), (y1, p1) = _node_level_position(edge.from_node), _node_level_position(edge.into)
        x0, x1 = cols.x_of([p0, p1]).tolist()
        if edge.kind == "ffn":
            x0, x1 = x0 + figures.FFN_OFFSET, x1 + figures.FFN_OFFSET
        colour = BOOSTER if edge.effect > 0 else SUPPRESSOR
        kind = "booster" if edge.effect > 0 else "suppressor"
        # its diamond: at the middle of the edge, side by side with the others where heads share the edge (a head
        # reading its own token's column draws a vertical edge one level long: only a sideways step separates them)
        key = (edge.kind, edge.from_node, edge.into)
        xm, ym = (x0 + x1) / 2 + (seen[key] - (sharing[key] - 1) / 2) * DIAMOND_STEP, (y0 + y1) / 2
        seen[key] += 1
        covered[figures.edge_handle("attention" if edge.kind == "head" else "ffn", y1, p0, p1)] = ym
        fig.add_trace(
            go.Scatter(
                x=[x0, x1],
                y=[y0, y1],
                mode="lines",
                line={"color": colour, "width": 2.5, "dash": "dash"},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=kind,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[xm],
                y=[ym],
                mode="markers",
                marker={"symbol": "diamond", "size": 11, "color": colour, "line": {"width": 1, "color": "#000"}},
                customdata=[edge.into],
                hovertext=[f"{kind} {edge.name}: direct effect {edge.effect:+.3f} logits<br>{ends_of(edge)}"],
                hoverinfo="text",
                name=f"direct effect ({kind})",
                legendgroup=kind,
                showlegend=kind not in {t.legendgroup for t in fig.data if t.showlegend},
            )
        )
        labels.append((f"{edge.name} {edge.effect:+.2f}", colour, xm, ym))
    _edge_dots_yield(fig, covered)
    wanted = [y for *_, y in labels]
    slots = slotted(wanted, label_slots(list(fig.layout.yaxis2.tickvals)))  # between the layer labels, where they fit
    heights = slots or stacked(wanted, -1.0, n_levels(analysis.n_layers), LABEL_GAP_LEVELS)
    right = cols.width - 0.4  # the plot's right edge (the end of the x range)
    for (text, colour, x, y), height in zip(labels, heights):
        # a dotted leader from the diamond to the plot's edge, level with its label, and on through the layer labels'
        # column to the label (between two layer labels, so it strikes none)
        leader = {"color": colour, "width": 1, "dash": "dot"}
        fig.add_trace(go.Scatter(x=[x, right], y=[y, height], mode="lines", line=leader, hoverinfo="skip", showlegend=False))
        if slots:
            fig.add_shape(type="line", xref="paper", xsizemode="pixel", xanchor=1, x0=0, x1=LAYER_LABELS_PX, yref="y", y0=height,
                          y1=height, line=leader)  # fmt: skip
        fig.add_annotation(
            text=figures.plain_text(text), xref="paper", x=1, xanchor="left", xshift=LAYER_LABELS_PX, yref="y", y=height,
            showarrow=False, font={"color": colour, "size": 11}, bordercolor=colour, borderwidth=1, borderpad=1, bgcolor="white",
        )  # fmt: skip
    label_px = max((len(text) for text, *_ in labels), default=0) * LABEL_CHAR_PX + LAYER_LABELS_PX + 10
    fig.update_layout(margin={"r": figures.GRAPH_MARGIN_PX["r"] + COLOUR_BAR_PX + (label_px if labels else 0)})
    figures.keep_look_when_selected(fig)
    figures.drawn_once(fig, figures.revision(fig.layout.datarevision, q, lim, direct))
    return fig


def _edge_dots_yield(fig: go.Figure, covered: dict[str, float]) -> None:
    """No edge dot where a diamond sits: on the same midpoint, the dot had taken the diamond's hover. `covered`: a
    dot's id (figures.edge_handle) and the height of the diamond on its edge (a parallel block's FFN dot, a level below
    its diamond, stays)."""
    for trace in fig.data:
        if trace.name != "edges":
            continue
        keep = [i for i, (c, y) in enumerate(zip(trace.customdata, trace.y)) if c not in covered or abs(y - covered[c]) > 1e-9]
        colours = trace.marker.color
        trace.update(
            x=[trace.x[i] for i in keep],
            y=[trace.y[i] for i in keep],
            customdata=[trace.customdata[i] for i in keep],
            hovertext=[trace.hovertext[i] for i in keep],
            marker_color=[colours[i] for i in keep],
        )


def number(x: float, digits: int = 3, significant: bool = False, signed: bool = False) -> str:
    """A number as text: "undefined" where it is NaN (a near-zero denominator), never "nan"; "0" where it rounds to
    zero, never "-0.00". `significant`: that many significant digits, in scientific notation where small (a kept
    probability of 1e-9 is not "0.000"); `signed`: a + before a positive number."""
    if math.isnan(x):
        return "undefined"
    text = f"{x:{'+' if signed else ''}.{digits}{'g' if significant else 'f'}}"
    return "0" if float(text) == 0 else text


def cell_number(x: float) -> str:
    """A heatmap cell's value, read at a glance: 3 significant digits as in the tables (-0.995, not -1.00), but nothing
    finer than 0.001 ("0", not "-8.53e-05" beside "0.000921"); the hover gives the value."""
    return number(round(x, 3), 3, significant=True)


def spaced_labels(
    xs: list[float], ys: list[float | None], texts: list[str], also_y: tuple = (), dx: float = 0.05, dy: float = 0.08
) -> list[str]:
    """The texts, blank where a point lies within (dx, dy) of the plot's ranges from one already labelled, whose label
    then names it too ("0.5, 0.3"; "0.5 … 0.1" for more in a row): thresholds that keep about the same edges would print over
    each other, and a lone "0.5" read as the label of both points. `also_y`: the other values on the same y axis, which
    widen its range."""
    def finite(v) -> bool:
        return v is not None and math.isfinite(v)

    def span(v: list[float]) -> float:
        return (max(v) - min(v)) or 1.0

    known = [(x, y) for x, y in zip(xs, ys) if finite(y)]
    if not known:
        return texts
    x_span, y_span = span([x for x, _ in known]), span([y for _, y in known] + [y for y in also_y if finite(y)])
    shown: list[tuple[float, float, int]] = []  # (x, y, index) of each labelled point
    groups: dict[int, tuple[list[str], list[int]]] = {}  # a labelled point's index: the texts and indices it names
    for i, (x, y, text) in enumerate(zip(xs, ys, texts)):
        if not finite(y):
            continue
        near = next((k for a, b, k in shown if abs(x - a) < dx * x_span and abs(y - b) < dy * y_span), None)
        if near is None:
            shown.append((x, y, i))
        names, at = groups.setdefault(i if near is None else near, ([], []))
        names.append(text)
        at.append(i)
    out = [""] * len(texts)
    for i, (names, at) in groups.items():
        consecutive = at == list(range(at[0], at[0] + len(at)))
        out[i] = f"{names[0]} … {names[-1]}" if len(names) > 2 and consecutive else ", ".join(names)
    return out


def faithfulness_curve_figure(curve: FaithfulnessCurve) -> go.Figure:
    """Faithfulness (logit difference kept) and p(A) kept against the number of edges, one point per threshold."""
    pts = curve.points
    edges, values, kept = curve.edges.tolist(), curve.values.tolist(), [p.prob_kept for p in pts]  # lists: see drawn_once
    labels = [f"threshold {p.threshold:g}<br>{p.edges} edges<br>top prediction {figures.label(p.top_route)}" for p in pts]
    quantity = figures.quantity_text(pts[0].target)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=edges,
            y=values,
            mode="lines+markers+text",
            name="faithfulness (quantity kept)",
            text=spaced_labels(edges, values, [f"{p.threshold:g}" for p in pts], also_y=(*kept, 1.0)),  # one axis
            textposition="top center",
            hovertext=[f"{lab}<br>faithfulness {number(p.faithfulness)}" for lab, p in zip(labels, pts)],
            hoverinfo="text",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=edges,
            y=kept,
            mode="lines+markers",
            name="p(A) kept",
            hovertext=[f"{lab}<br>p(A) {p.prob_route:.3f} of {p.prob_full:.3f}" for lab, p in zip(labels, pts)],
            hoverinfo="text",
        )
    )
    fig.add_hline(y=1.0, line_dash="dot", line_color="#888")
    fig.update_layout(
        title=f"Faithfulness of the route to {quantity} ({pts[0].ablation} ablation); labels: thresholds",
        xaxis_title="edges kept",
        yaxis_title="fraction kept",
        height=420,
        margin={"l": 60, "r": 10, "t": 50, "b": 50},
        legend={"orientation": "h", "y": -0.2},
    )
    figures.drawn_once(fig, figures.revision(edges, values, kept, fig.layout.title.text))
    return fig


def patching_heatmap(result: PatchingResult, grid: str) -> go.Figure:
    """Restored fraction of the clean quantity, layer x position (or layer x head for 'heads')."""
    z = getattr(result, grid).numpy()  # (L, T) or (L, H)
    n_layers = z.shape[0]
    if grid == "heads":
        x = [f"H{h}" for h in range(z.shape[1])]
    else:
        x = [
            f"{p}: {figures.label(c)}" + ("" if c == r else f" / {figures.label(r)}")
            for p, (c, r) in enumerate(zip(result.clean_tokens, result.corrupted_tokens))
        ]
    names = {
        "resid": "residual stream (block input)",
        "attn": "attention output",
        "ffn": "FFN output",
        "heads": "head outputs (each head at every position)",
    }
    values = z.tolist()
    text = [[number(v, 2) for v in row] for row in values]  # NaN cells read "undefined"
    cells = [[None if math.isnan(v) else v for v in row] for row in values]  # lists: see drawn_once; NaN drawn blank
    fig = go.Figure(
        go.Heatmap(
            z=cells,
            x=x,
            y=[f"L{layer}" for layer in range(n_layers)],
            zmid=0,
            colorscale=SCALE,
            text=text,
            texttemplate="%{text}" if len(x) <= CELL_TEXT_MAX_COLUMNS else "",  # narrower cells: in the hover only
            textfont={"size": CELL_FONT_PX},
            hovertemplate=("%{y}.%{x}" if grid == "heads" else "%{y}, %{x}") + ": restored %{text}<extra></extra>",  # L23.H4
            colorbar={"title": "restored"},
        )
    )
    undefined = " (undefined: clean and corrupted m are within 1e-3 logits)" if np.isnan(z).all() else ""
    fig.update_layout(  # the title on two lines: on one, the chart's toolbar covered its end (the quantity)
        title=f"Patching the {names[grid]}:<br>restored fraction of {figures.quantity_text(result.target)}{undefined}",
        height=max(380, CELL_ROW_PX * n_layers + 160),
        margin={"l": 50, "r": 10, "t": 60, "b": 90},
        xaxis_title="head" if grid == "heads" else "position: clean token / corrupted token (where they differ)",
    )
    figures.drawn_once(fig, figures.revision(z, x, fig.layout.title.text))
    return fig


def qk_heatmap(result: QKAttribution, k: int = 12) -> go.Figure:
    """(query part) x (key part) contributions to one pre-softmax score: the k largest parts of each side, every one
    labelled, and a "rest" row and column, so the cells still sum to the score. The colours are scaled to the labelled
    pairs: a rest cell sums dozens of small pairs, and had set the scale, which washed out every pair it was there to
    show (its colour saturates; its value is written in it)."""
    rows, cols, table = result.folded(k)
    z = table.numpy()  # (k+1, k+1)
    labelled = min(k, len(result.parts))  # folded's first rows and columns are single parts; a last one past them, the rest
    lim = _symmetric(z[:labelled, :labelled])
    saturated = bool(np.any(np.abs(z) > lim))  # only a rest cell can pass the labelled cells' limit
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=rows,
            zmin=-lim,
            zmax=lim,
            colorscale=SCALE,
            text=[[number(v, 2, signed=True) for v in row] for row in z.tolist()],
            texttemplate="%{text}",
            textfont={"size": QK_FONT_PX},
            hovertemplate="query part %{y} x key part %{x}: %{z:.3f}<extra></extra>",
            colorbar={"title": "score<br>(a rest cell<br>saturates)" if saturated else "score"},
        )
    )
    fig.update_layout(
        title=f"Head {head_name(result.layer, result.head)}, query {result.query} → key {result.key}: score {result.score:.3f}",
        xaxis={"title": "key part", "tickmode": "array", "tickvals": cols, "ticktext": cols},
        yaxis={"title": "query part", "tickmode": "array", "tickvals": rows, "ticktext": rows, "autorange": "reversed"},
        height=max(420, 30 * len(rows) + 160),
        margin={"l": 90, "r": 10, "t": 40, "b": 90},
    )
    return fig


def qk_parts_figure(result: QKAttribution, tokens: tuple[str, ...], other: QKAttribution | None = None, k: int = 12) -> go.Figure:
    """Bars of each query part's and each key part's total (each side sums to the score); with `other` (the same query
    against another key), that key's bars beside them, so the parts that prefer one key over the other stand out."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("query parts (totals over key parts)", "key parts (totals over query parts)"))
    runs = [result] if other is None else [result, other]
    colours = ("#1f77b4", "#ff7f0e")
    union_q = sorted({i for r in runs for i in np.argsort(-np.abs(r.query_parts.numpy()))[:k]})
    union_k = sorted({i for r in runs for i in np.argsort(-np.abs(r.key_parts.numpy()))[:k]})
    for n, (r, colour) in enumerate(zip(runs, colours)):
        name = f"key {r.key} {figures.label(tokens[r.key])}: score {r.score:.2f}"  # plotly text, in the legend and hovers
        for col, totals, keep in ((1, r.query_parts.numpy(), union_q), (2, r.key_parts.numpy(), union_k)):
            rest = np.setdiff1d(np.arange(len(totals)), keep)
            names = [r.parts[i] for i in keep] + ([f"rest ({len(rest)})"] if len(rest) else [])
            values = np.concatenate([totals[keep], [totals[rest].sum()] if len(rest) else []])
            fig.add_trace(
                go.Bar(x=values, y=names, orientation="h", name=name, marker_color=colour, legendgroup=str(n), showlegend=col == 1,
                       hovertemplate="%{y}: %{x:.3f}<extra>" + name + "</extra>"),
                row=1, col=col,
            )  # fmt: skip
    fig.update_yaxes(autorange="reversed", tickmode="linear")
    fig.update_layout(barmode="group", height=max(380, 22 * (max(len(union_q), len(union_k)) + 1) * len(runs) + 140),
                      legend={"orientation": "h", "y": -0.12}, margin={"l": 90, "r": 10, "t": 40, "b": 60})  # fmt: skip
    return fig


def key_scores_figure(ks: KeyScores, tokens: tuple[str, ...], selected: int | None = None) -> go.Figure:
    """One bar per key: the query's score against it (scale * q . k), the attention weight it got in the hover and label."""
    keys = np.arange(len(ks.scores))
    labels = [f"{j}: {figures.label(tokens[j])}" for j in keys]
    colours = ["#ff7f0e" if j == selected else "#1f77b4" for j in keys]
    weights = ks.weights.numpy()
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=ks.scores.numpy(),
            marker_color=colours,
            text=[f"w {w:.2f}" if w >= 0.005 else "" for w in weights],
            customdata=weights,
            hovertemplate="key %{x}<br>score %{y:.3f}<br>attention weight %{customdata:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Head {head_name(ks.layer, ks.head)}: the score of every key for query {ks.query} (labels: attention weights)",
        yaxis_title="score (before the softmax)",
        xaxis={"tickangle": -45},
        height=340,
        margin={"l": 50, "r": 10, "t": 40, "b": 90},
    )
    return fig
