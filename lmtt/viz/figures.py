"""Plotly figures for the dashboard. Plain functions of an Analysis: no Streamlit here.

Every token string that reaches a figure goes through `label()`: whitespace is
made visible and HTML is escaped, so a token such as `<img onerror=...>` shows
as text in tick labels and hovers and never as markup.
"""

from __future__ import annotations

import hashlib
import html

import numpy as np
import plotly.graph_objects as go

from lmtt.analysis import Analysis
from lmtt.engine.graph import EDGE_KINDS, Subgraph, node_id, parse_node
from lmtt.engine.levels import head_name, kind_of, layer_of, level_names, level_of, n_levels, neuron_name
from lmtt.engine.tokens import readable_tokens, visible
from lmtt.questions.curation import Curation, group_edges, pinned_subgraph
from lmtt.questions.shares import HeadContributions, NeuronContributions
from lmtt.questions.vocabulary import Projection
from lmtt.viz.columns import Columns, columns_for

DIVERGING = "RdBu_r"  # every signed heatmap: red raises the quantity (or is above zero), blue lowers it
KIND_COLOURS = {"attention": "#1f77b4", "residual": "#c4c4c4", "ffn": "#d62728"}
NODE_COLOURS = {"embedding": "#2ca02c", "attn": "#1f77b4", "ffn": "#d62728"}
WEIGHT_BINS = (0.0, 0.1, 0.25, 0.5, 1.01)  # edges are drawn in a few width/opacity classes
FFN_OFFSET = 0.18  # FFN edges run beside the residual edge of the same token
COLUMN_PX = 32  # the narrowest a token's column gets (LM-TT's cell); wider prompts scroll sideways
ROW_PX = 13  # per node level
GRAPH_MARGIN_PX = {"l": 50, "r": 50, "t": 110, "b": 140}  # room for the token labels above and below, and the legend
GL_ABOVE_NODES = 12_000  # more nodes go to WebGL (200 columns of a 30-layer model); fewer draw faster as SVG, measured in Chromium
GAP_FILL, GAP_TEXT = "#f2f2f2", "#9a9a9a"  # a column that stands for skipped tokens


def plain_text(text: str) -> str:
    """Any text (a token, a user's label, a prompt's words) as plotly text, shown as typed: plotly reads a subset of
    HTML (<b>, <br>, <a href>), so <, > and & are escaped. Quotes stay as they are: plotly knows few named entities and
    shows `&quot;` literally, and a quote is harmless in its text."""
    return html.escape(text, quote=False)


def label(token: str) -> str:
    """A token as plotly text: visible whitespace, HTML escaped (plain_text)."""
    return plain_text(visible(token))


def quantity_text(target) -> str:
    """A target's quantity as plotly text, "logit(␣Paris) - logit(␣Rome)" (ui.quantity_md is its Markdown twin)."""
    return plain_text(target.describe(visible))


def _levels(n_layers: int, parallel: bool = False) -> tuple[list[float], list[str]]:
    """Axis labels: one per layer, centred on the band of its two states (after attention, after FFN), or on a
    parallel block's one state, its output."""
    vals = [0] + [level_of("ffn", layer) if parallel else level_of("attn", layer) + 0.5 for layer in range(n_layers)]
    return vals, ["emb"] + [f"L{layer}" for layer in range(n_layers)]


def describe_node(analysis: Analysis, node: str) -> str:
    """'layer 3 after attention, token 2 ␣France' (plain text)."""
    kind, layer, pos = parse_node(node)
    return f"{_where(kind, layer, analysis.trace.parallel)}, token {pos} {visible(readable_tokens(analysis)[pos])}"


def _where(kind: str, layer: int, parallel: bool) -> str:
    """What a node's state is: a parallel block has one state, its output (attention and FFN both read its input)."""
    if kind == "embedding":
        return "embedding"
    if parallel:
        return f"layer {layer} block output" if kind == "ffn" else f"layer {layer} input + attention (not a state of the model)"
    return f"layer {layer} after {'attention' if kind == 'attn' else 'FFN'}"


def graph_min_width(n_columns: int) -> int:
    """The graph's width in pixels at the narrowest readable column (`Columns.width` columns, gaps included)."""
    return COLUMN_PX * n_columns + GRAPH_MARGIN_PX["l"] + GRAPH_MARGIN_PX["r"]


def figure_min_width(fig: go.Figure) -> int:
    """A graph figure's width in pixels at the narrowest readable column: its columns (its x range runs from -0.6 to
    the last column + 0.6, see graph_figure) and its margins, which the Target graph widens for its labels."""
    n_columns = round(fig.layout.xaxis.range[1] + 0.4)
    return COLUMN_PX * n_columns + fig.layout.margin.l + fig.layout.margin.r


def graph_figure(
    analysis: Analysis,
    sub: Subgraph,
    explained: int | None = None,
    columns: Columns | None = None,
    curation: Curation | None = None,
    subgraph_only: bool = False,
    clicks: bool = True,
) -> go.Figure:
    """Tokens are columns and node levels rows (embeddings at the bottom, output at the top).

    `columns` says which tokens get a column and where (lmtt.viz.columns; default: every token of a short prompt, else only
    the tokens the paths touch, packed, with a "⋯ N tokens" gap column per skipped run).
    Clickable traces carry the node id, the edge description or `token|P` (the ▲/▼ handles by the token labels) in customdata.
    The token labels are drawn above and below the plot; zoom and pan survive reruns of the same prompt and columns (uirevision).
    A curation marks its pins (★) and labels; with `subgraph_only`, only its nodes are drawn with the route's edges
    between them, and each group is one node (■) whose edges are its members' summed. `clicks`: the edge dots' and the token
    handles' hovers say what a click on them shows (False where a page does nothing with it).
    The selected node is not part of the figure: the browser rings it (ui.mark_node), so a click changes no figure and
    Streamlit does not draw the graph again (two draws of about 1.2 s each at 500 tokens).
    """
    tokens = readable_tokens(analysis)
    cols = columns or columns_for(len(tokens), sub, also=() if explained is None else (explained,))
    top_level = n_levels(analysis.n_layers) - 1
    view = (analysis.n_layers, analysis.trace.parallel, cols.key(), explained, curation, subgraph_only, sub.root, clicks)
    shown = revision(*tokens, *view, *sub.arrays)
    fig = go.Figure()
    overlay: list[go.Scatter] = []
    if curation:
        if subgraph_only:
            sub = pinned_subgraph(sub, curation)
        sub, overlay = _curation_traces(sub, cols, curation, subgraph_only)
    for trace in _edge_traces(sub, cols):
        fig.add_trace(trace)
    handles = _edge_handle_trace(sub, cols, tokens, clicks)
    if handles is not None:
        fig.add_trace(handles)
    for trace in _token_handle_traces(cols, tokens, top_level, explained, clicks):
        fig.add_trace(trace)
    if cols.gaps:
        fig.add_trace(_gap_trace(cols, top_level))
    # the top token labels and the right-hand layer labels are axes x2 and y2: plotly draws an axis only with a trace on it
    fig.add_trace(go.Scatter(x=[0], y=[0], xaxis="x2", yaxis="y2", marker={"opacity": 0}, hoverinfo="skip", showlegend=False))
    for trace in overlay:
        fig.add_trace(trace)
    for trace in node_legend(analysis.trace.parallel):
        fig.add_trace(trace)
    hoverable = curation.nodes if curation and subgraph_only else None  # the pinned subgraph: its own nodes only
    for trace in _node_traces(analysis, sub, cols, tokens, hoverable):  # last, so that a click finds a node first
        fig.add_trace(trace)
    _graph_layout(fig, cols, tokens, top_level, analysis.n_layers, analysis.trace.parallel)
    keep_look_when_selected(fig)
    drawn_once(fig, shown)
    return fig


def drawn_once(fig: go.Figure, revision: str) -> None:
    """Let the browser draw the figure once, not twice: Streamlit copies a new chart's figure just after its first draw
    (to theme it), and Plotly.react draws a copy again in full (0.8-1.4 s at 500 tokens) unless nothing in it compares
    as changed. So: data arrays are compared by `datarevision` (a hash of what the figure shows), not by identity,
    which needs them as plain JSON lists (plotly's base64 arrays decode to new typed arrays that always compare as
    changed; so the traces take lists, never numpy arrays), and there is no template, which Plotly.react compares by
    identity. Show the figure with theme=None, or Streamlit puts a template back."""
    fig.layout.template = None
    fig.layout.datarevision = revision


def revision(*parts) -> str:
    """A short hash of the parts (text, arrays, or any other value by its repr): equal for equal figures."""
    h = hashlib.sha1()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update((part if isinstance(part, str) else repr(part)).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def keep_look_when_selected(fig: go.Figure) -> None:
    """A click selects its point in plotly (clickmode "event+select"), which fades every other marker. The graph stays
    on screen across clicks (the selection is ringed in the browser), so each marker keeps its own opacity."""
    for trace in fig.data:
        if "markers" in (trace.mode or "") or "text" in (trace.mode or ""):
            look = {"marker": {"opacity": trace.marker.opacity if trace.marker.opacity is not None else 1}}
            if trace.textfont.color:
                look["textfont"] = {"color": trace.textfont.color}
            trace.unselected = look


def _curation_traces(sub: Subgraph, cols: Columns, curation: Curation, collapse: bool) -> tuple[Subgraph, list[go.Scatter]]:
    """(the edges still drawn one by one, traces): pins (★) with their labels; with `collapse`, each group as one node
    (■) with its summed edges, which replace its members' own. The ■ sits on the member nearest the members' centre,
    with a dotted spoke to each other member: at the centre itself it had stood in a column of none of them."""

    def xy(node: str) -> tuple[float, float]:
        kind, layer, pos = parse_node(node)
        return float(cols.x_of(np.array([pos]))[0]), float(level_of(kind, layer))

    drawn = set(cols.positions.tolist())
    middle = float(cols.x.max()) / 2

    def side(x: float) -> str:
        """A label reads away from the nearer edge: right of a node in the left half, left of one in the right half
        (labels of the last columns had run off the figure, "L9–10 ffn · W…")."""
        return "middle right" if x <= middle else "middle left"

    def shown(node: str) -> bool:
        try:
            return parse_node(node)[2] in drawn
        except ValueError:  # a label of something that is not a node
            return False

    curation = Curation(  # only what has a column here (a long prompt draws the route's tokens)
        tuple(p for p in curation.pins if shown(p)),
        {k: v for k, v in curation.groups.items() if all(shown(m) for m in v)},
        {k: v for k, v in curation.labels.items() if shown(k)},
    )
    traces = []
    if collapse and curation.groups:
        centre = {}
        for name, group in curation.groups.items():
            points = np.array([xy(m) for m in group])  # (members, 2)
            (cx, cy) = centre[name] = tuple(points[np.argmin(((points - points.mean(0)) ** 2).sum(1))].tolist())
            others = [(x, y) for x, y in points.tolist() if (x, y) != (cx, cy)]
            traces.append(go.Scatter(x=[v for x, _ in others for v in (cx, x, None)], y=[v for _, y in others for v in (cy, y, None)],
                                     mode="lines", line={"color": "#9467bd", "width": 1, "dash": "dot"}, hoverinfo="skip",
                                     showlegend=False, name="group member"))  # fmt: skip
        members = curation.grouped
        ends = zip(sub.source_level.tolist(), sub.source.tolist(), sub.level.tolist(), sub.target.tolist())
        inside = np.array([node_id(sl, s) in members or node_id(lv, t) in members for sl, s, lv, t in ends], dtype=bool)
        for a, b, w in group_edges(sub, curation):
            if a in centre or b in centre:
                (x0, y0), (x1, y1) = centre.get(a) or xy(a), centre.get(b) or xy(b)
                line = {"color": "#9467bd", "width": 1 + 6 * min(w, 1)}
                traces.append(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", line=line,
                                         hovertext=f"{plain_text(a)} → {plain_text(b)}: {w:.3f}",
                                         hoverinfo="text", showlegend=False, name="group edge"))  # fmt: skip
        traces.append(
            go.Scatter(
                x=[c[0] for c in centre.values()], y=[c[1] for c in centre.values()], mode="markers+text",
                marker={"symbol": "square", "size": 18, "color": "#9467bd"}, text=[plain_text(curation.labels.get(n, n)) for n in centre],
                textposition=[side(c[0]) for c in centre.values()],
                hovertext=[f"group {plain_text(n)}: {', '.join(m)}" for n, m in curation.groups.items()],
                hoverinfo="text", name="groups", cliponaxis=False,  # in the legend: what a ■ is
            )
        )  # fmt: skip
        sub = sub.only(~inside)
    grouped = curation.grouped if collapse else set()  # drawn as their group's ■
    marked = [n for n in dict.fromkeys((*curation.pins, *curation.labels)) if n not in curation.groups and n not in grouped]
    if marked:
        points = [xy(n) for n in marked]
        traces.append(
            go.Scatter(
                x=[p[0] for p in points], y=[p[1] for p in points], mode="markers+text",
                marker={"symbol": "star", "size": 14, "color": "#9467bd", "line": {"width": 1, "color": "white"}},
                text=[plain_text(curation.labels.get(n, "")) for n in marked], textposition=[side(p[0]) for p in points],
                hovertext=[f"pinned {n}" + (f": {plain_text(curation.labels[n])}" if n in curation.labels else "") for n in marked],
                hoverinfo="text", name="pins", cliponaxis=False,  # in the legend: what a ★ is
            )
        )  # fmt: skip
    return sub, traces


def _edge_x(sub: Subgraph, cols: Columns) -> tuple[np.ndarray, np.ndarray]:
    """x of each edge's source and target: FFN edges run beside the residual edge of the same token."""
    offset = np.where(sub.kind == EDGE_KINDS.index("ffn"), FFN_OFFSET, 0.0)  # (E,)
    return cols.x_of(sub.source) + offset, cols.x_of(sub.target) + offset


def _edge_traces(sub: Subgraph, cols: Columns) -> list[go.Scatter]:
    """Edges as one line trace per kind and weight class (width and opacity follow the weight), segments split by NaN."""
    x0, x1 = _edge_x(sub, cols)
    src_level = sub.source_level
    traces = []
    for k, kind in enumerate(EDGE_KINDS):
        residual = kind == "residual"  # the residual stream is the background: drawn light and thin
        first = True
        for b in range(len(WEIGHT_BINS) - 1):
            m = (sub.kind == k) & (sub.weight >= WEIGHT_BINS[b]) & (sub.weight < WEIGHT_BINS[b + 1])  # (E,)
            if not m.any():
                continue
            traces.append(
                go.Scatter(
                    x=_segments(x0[m], x1[m]),
                    y=_segments(src_level[m], sub.level[m]),
                    mode="lines",
                    line={"color": KIND_COLOURS[kind], "width": (1 + 0.8 * b) if residual else (1 + 2.5 * b)},
                    opacity=(0.35 + 0.1 * b) if residual else (0.3 + 0.2 * b),
                    hoverinfo="skip",
                    showlegend=first,
                    name=f"{kind} edge",
                    legendgroup=kind,
                )
            )
            first = False
    return traces


def _segments(start: np.ndarray, end: np.ndarray) -> list[float | None]:
    """start0, end0, None, start1, end1, None, ...: one line trace draws many segments, broken by the Nones."""
    out: list[float | None] = [None] * (3 * len(start))
    out[0::3], out[1::3] = start.tolist(), end.tolist()
    return out


def edge_handle(kind: str, level: int, source: int, target: int) -> str:
    """An edge dot's id, "edge|attention|9|3|4": its kind, target level and positions (state.parse_edge reads it)."""
    return f"edge|{kind}|{level}|{source}|{target}"


def _edge_handle_trace(sub: Subgraph, cols: Columns, tokens: tuple[str, ...], clicks: bool = True) -> go.Scatter | None:
    """Clickable dots at the midpoints of attention and FFN edges (residual ones would sit on the nodes)."""
    handles = sub.kind != EDGE_KINDS.index("residual")  # (E,)
    if not handles.any():
        return None
    x0, x1 = _edge_x(sub, cols)
    rows = list(
        zip(
            sub.kind[handles].tolist(),
            sub.level[handles].tolist(),
            sub.source_level[handles].tolist(),
            sub.source[handles].tolist(),
            sub.target[handles].tolist(),
            sub.weight[handles].tolist(),
        )
    )
    what = {  # what a click on the dot shows
        "attention": "click to split it by head",
        "ffn": "click for its weight (its neurons: the Contributions page)",
    }
    hover = [
        f"{EDGE_KINDS[k]} edge, layer {layer_of(lv)}<br>{label(tokens[s])} ({s}) → {label(tokens[d])} ({d})<br>weight {w:.3f}"
        + (f"<br>{what.get(EDGE_KINDS[k], 'click for its weight')}" if clicks else "")
        for k, lv, _sl, s, d, w in rows
    ]
    return go.Scatter(
        x=((x0 + x1) / 2)[handles].tolist(),
        y=((sub.source_level + sub.level) / 2)[handles].tolist(),
        mode="markers",
        marker={"size": 6, "color": [KIND_COLOURS[EDGE_KINDS[k]] for k, *_ in rows], "opacity": 0.7},
        customdata=[edge_handle(EDGE_KINDS[k], lv, s, d) for k, lv, _sl, s, d, _w in rows],
        hovertext=hover,
        hoverinfo="text",
        showlegend=False,
        name="edges",
    )


def _token_handle_traces(
    cols: Columns, tokens: tuple[str, ...], top_level: int, explained: int | None, clicks: bool = True
) -> list[go.Scatter]:
    """▲ below and ▼ above each drawn token: a click explains that token (where the page takes `clicks`)."""
    positions = cols.positions.tolist()
    promise = "<br>click to explain the prediction made here" if clicks else ""
    hover = [f"token {p} {label(tokens[p])}{promise}" for p in positions]
    return [
        go.Scatter(
            x=cols.x.tolist(),
            y=[y] * len(positions),
            mode="markers",
            marker={"size": 9, "symbol": symbol, "color": ["#ff7f0e" if p == explained else "#b0b0b0" for p in positions]},
            customdata=[f"token|{p}" for p in positions],
            hovertext=hover,
            hoverinfo="text",
            showlegend=False,
            name="tokens",
        )
        for y, symbol in ((-1.1, "triangle-up"), (top_level + 1.1, "triangle-down"))
    ]


def _gap_trace(cols: Columns, top_level: int) -> go.Scatter:
    """A faint ⋮ in the middle of each gap column, whose hover says which tokens are not drawn."""
    return go.Scatter(
        x=[g.x for g in cols.gaps],
        y=[top_level / 2] * len(cols.gaps),
        mode="text",
        text=["⋮"] * len(cols.gaps),
        textfont={"size": 18, "color": GAP_TEXT},
        hovertext=[
            f"tokens {g.first}–{g.last} ({len(g):,}): on no path above the threshold, not drawn<br>"
            "(the sidebar's Token to explain reaches any token)"
            for g in cols.gaps
        ],
        hoverinfo="text",
        showlegend=False,
        name="gaps",
    )


NODE_LEGEND = "node kinds"  # the legend group of the node colours' entries (a view that recolours nodes drops it)


def node_legend(parallel: bool) -> list[go.Scatter]:
    """Legend entries, with no points, for what a route node's colour says: which state of the residual stream it is."""
    # a parallel block has one state, its output: no node after attention is drawn (see _node_traces)
    names = {"embedding": "embedding", "attn": "after attention", "ffn": "after FFN"}
    if parallel:
        names = {"embedding": "embedding", "ffn": "block output"}
    return [
        go.Scatter(x=[None], y=[None], mode="markers", marker={"size": 9, "color": NODE_COLOURS[kind]}, name=f"node: {name}",
                   legendgroup=NODE_LEGEND, hoverinfo="skip")  # fmt: skip
        for kind, name in names.items()
    ]


def _node_traces(
    analysis: Analysis, sub: Subgraph, cols: Columns, tokens: tuple[str, ...], hoverable: set[str] | None = None
) -> list[go.Scatter]:
    """Every node of the drawn columns, faint; the nodes on a route coloured and larger. With `hoverable` (the pinned
    subgraph alone: its pins and group members), the other faint nodes take no hover and no click ("quiet"): under a
    group's ■ one had named a node outside the group. A lone pin or a group member is faint there, and stays clickable.

    All are named "nodes" and carry their ids in customdata. Each trace has one marker style: per-point sizes, colours and
    outlines made Chromium draw 4,575 nodes (500 tokens) in 1.0-1.3 s against 0.2-0.45 s for uniform markers.
    Tens of thousands of faint points (every column of a long prompt) go to WebGL (Scattergl), where SVG markers take
    seconds to draw; a few thousand draw faster as SVG (with software GL: 5,400 nodes 1.0 s as SVG, 2.2 s as GL)."""
    levels = np.arange(n_levels(analysis.n_layers))
    if analysis.trace.parallel:  # a parallel block has no state after attention: embeddings and block outputs only
        levels = levels[levels % 2 == 0]
    gx, gy = np.meshgrid(cols.x, levels)  # (levels, C) each
    gp = np.broadcast_to(cols.positions, gx.shape)  # (levels, C) token position of each node
    xs, level_list, pos_list = gx.ravel().tolist(), gy.ravel().tolist(), gp.ravel().tolist()
    on_route = {node_id(lv, p) for lv, p in sub.node_keys()}
    ids = [node_id(lv, p) for lv, p in zip(level_list, pos_list)]
    # hover text as describe_node writes it, built once per level and token (30k nodes at 500 tokens)
    where = ["embedding"] + [_where(k, layer, analysis.trace.parallel) for layer in range(analysis.n_layers) for k in ("attn", "ffn")]
    texts = {p: label(tokens[p]) for p in cols.positions.tolist()}
    groups: dict[str, list[int]] = {}  # style -> node indices: "faint", "quiet" (faint, no hover) or a kind's colour
    for k, (i, lv) in enumerate(zip(ids, level_list)):
        style = NODE_COLOURS[kind_of(lv)] if i in on_route else "faint" if hoverable is None or i in hoverable else "quiet"
        groups.setdefault(style, []).append(k)
    traces = []
    for style in ["quiet", "faint", *NODE_COLOURS.values()]:
        members = groups.get(style)
        if not members:
            continue
        marker = {"size": 3, "color": "#d9d9d9"} if style in ("faint", "quiet") else {"size": 9, "color": style}
        scatter = go.Scattergl if len(members) > GL_ABOVE_NODES else go.Scatter
        traces.append(
            scatter(
                x=[xs[k] for k in members],
                y=[level_list[k] for k in members],
                mode="markers",
                marker=marker,
                customdata=[ids[k] for k in members],
                hovertext=[f"{where[level_list[k]]}, token {pos_list[k]} {texts[pos_list[k]]}" for k in members],
                hoverinfo="skip" if style == "quiet" else "text",
                showlegend=False,
                name="nodes",
            )
        )
    return traces


def _graph_layout(fig: go.Figure, cols: Columns, tokens: tuple[str, ...], top_level: int, n_layers: int, parallel: bool = False) -> None:
    """Token labels above and below (with positions when columns are packed), layer labels on both sides, gap bands."""
    if cols.packed:
        ticks = {x: f"{p}: {label(tokens[p])}" for x, p in zip(cols.x.tolist(), cols.positions.tolist())}
        ticks.update({g.x: f'<span style="color:{GAP_TEXT}">⋯ {len(g):,} tokens</span>' for g in cols.gaps})
    else:
        ticks = {x: label(tokens[p]) for x, p in zip(cols.x.tolist(), cols.positions.tolist())}
    tickvals = sorted(ticks)
    yvals, ytext = _levels(n_layers, parallel)
    token_axis = {
        "tickmode": "array",
        "tickvals": tickvals,
        "ticktext": [ticks[x] for x in tickvals],
        "tickangle": -60,
        "tickfont": {"size": 12},
        # plotly's default ("hide past div") measures every label once per label: 0.35 s per draw at 89 columns
        "ticklabeloverflow": "allow",
        "range": [-0.6, cols.width - 0.4],
        "showgrid": False,
        "zeroline": False,
        # hovering anything in a column lights the whole column up
        "showspikes": True,
        "spikemode": "across",
        "spikesnap": "data",
        "spikethickness": COLUMN_PX - 6,
        "spikecolor": "rgba(255, 179, 71, 0.18)",
        "spikedash": "solid",
    }
    level_axis = {"tickmode": "array", "tickvals": yvals, "ticktext": ytext, "range": [-1.6, top_level + 1.6], "zeroline": False}
    bands = [
        {"type": "rect", "xref": "x", "yref": "paper", "x0": g.x - 0.4, "x1": g.x + 0.4, "y0": 0, "y1": 1}
        | {"layer": "below", "fillcolor": GAP_FILL, "line": {"width": 0}}
        for g in cols.gaps
    ]
    fig.update_layout(
        height=ROW_PX * (top_level + 3) + GRAPH_MARGIN_PX["t"] + GRAPH_MARGIN_PX["b"],
        margin=GRAPH_MARGIN_PX,
        xaxis=token_axis,
        xaxis2={**token_axis, "overlaying": "x", "side": "top", "matches": "x", "showspikes": False},
        yaxis=level_axis,
        yaxis2={**level_axis, "overlaying": "y", "side": "right", "matches": "y"},  # layer labels on both sides
        shapes=bands,
        # under the bottom token labels, not over the embedding row of the last columns
        legend={"orientation": "h", "yref": "container", "y": 0, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        dragmode="pan",
        clickmode="event+select",
        hovermode="closest",
        plot_bgcolor="white",
        uirevision=revision(*tokens, cols.key()),  # one per prompt and layout: the zoom stays while they do
    )


def layer_overview_figure(analysis: Analysis, position: int) -> go.Figure:
    """Per layer at one token: the shares of attention, FFN and residual in each state."""
    g = analysis.graph  # read through the graph: an on-demand graph computes this token's nodes only
    layers = list(range(analysis.n_layers))
    at = np.array([position])
    attn_resid = np.array([g.attn_rows(layer, at)[1][0] for layer in layers])  # (L,)
    ffn_resid, ffn = (np.array(x) for x in zip(*(np.asarray(g.ffn_rows(layer, at))[:, 0] for layer in layers)))  # (L,) each
    fig = go.Figure()
    if g.parallel:  # one node per block: attention, FFN and residual split its output together
        series = [
            ("attention block → block output", 1 - attn_resid - ffn, KIND_COLOURS["attention"]),
            ("FFN → block output", ffn, KIND_COLOURS["ffn"]),
            ("residual → block output", attn_resid, "#7f7f7f"),
        ]
    else:
        series = [
            ("attention block → state after attention", 1 - attn_resid, KIND_COLOURS["attention"]),
            ("residual → state after attention", attn_resid, "#7f7f7f"),
            ("FFN → state after FFN", ffn, KIND_COLOURS["ffn"]),
            ("residual → state after FFN", ffn_resid, "#c7c7c7"),
        ]
    for name, values, colour in series:
        fig.add_trace(go.Scatter(x=layers, y=values, mode="lines+markers", name=name, line={"color": colour},
                                 hovertemplate=f"layer %{{x}}: share %{{y:.3f}}<br>{plain_text(name)}<extra></extra>"))  # fmt: skip
    fig.update_layout(
        height=360, xaxis_title="layer", yaxis_title="contribution", yaxis_range=[0, 1], legend={"orientation": "h", "y": -0.25}
    )
    return fig


def head_bar_figure(values, layer: int, selected: int | None = None, height: int = 320) -> go.Figure:
    """One bar per head of `layer` (each carries its index: a click selects it); the selected head is drawn orange.
    The axis says H4 under a title naming the layer; the hover names the head in full (L23.H4)."""
    values = np.asarray(values, dtype=float)  # (H,)
    heads = [f"H{h}" for h in range(len(values))]
    colours = ["#ff7f0e" if h == selected else KIND_COLOURS["attention"] for h in range(len(values))]
    fig = go.Figure(
        go.Bar(
            x=heads,
            y=values,
            customdata=list(range(len(heads))),
            hovertext=[head_name(layer, h) for h in range(len(values))],
            marker_color=colours,
            hovertemplate="%{hovertext}: %{y:.3g}<br>click to inspect or edit it<extra></extra>",
        )
    )
    fig.update_layout(
        height=height,
        margin={"t": 10, "b": 40},
        xaxis={"title": f"head of layer {layer} (click one)", "dtick": 1, "type": "category"},
        yaxis_title="contribution",
        clickmode="event+select",
    )
    return fig


def head_source_heatmap(hc: HeadContributions, tokens: tuple[str, ...]) -> go.Figure:
    """Each head's share of the node split by the source token it read: a row a head, tall enough to read (the rotated
    token labels below take about 150 px)."""
    j = hc.position + 1
    fig = go.Figure(
        go.Heatmap(
            z=hc.per_source[:, :j].numpy(),
            x=[f"{p}:{label(tok)}" for p, tok in enumerate(tokens[:j])],
            y=[f"H{h}" for h in range(hc.per_source.shape[0])],
            customdata=[[head_name(hc.layer, h)] * j for h in range(hc.per_source.shape[0])],
            colorscale="Blues",
            hovertemplate="%{customdata} from %{x}: %{z:.3f}<extra></extra>",
            colorbar={"title": "share"},
        )
    )
    fig.update_layout(
        title=f"Layer {hc.layer}'s heads at token {hc.position}: each one's share of the node, by the source token it read",
        height=max(360, 26 * hc.per_source.shape[0] + 260),
        xaxis={"tickangle": -60, "title": "source token", "dtick": 1},
        yaxis={"title": "head", "dtick": 1, "autorange": "reversed"},
    )
    return fig


POSITIVE, NEGATIVE = "#2ca02c", "#9467bd"  # activation sign (not red: red means FFN in the graph)


def neuron_bar_figure(nc: NeuronContributions, labels: list[str] | None = None) -> go.Figure:
    """Top neurons by contribution, coloured by the sign of their activation. `labels`: each neuron's full name for
    the hover (Analysis.neuron_label: a mixture-of-experts neuron names its expert), L23.N604 by default."""
    names = [f"N{n}" for n in nc.neurons.tolist()]  # under an axis title naming the layer; the hover names it in full
    labels = labels or [neuron_name(nc.layer, n) for n in nc.neurons.tolist()]
    acts = nc.activations.tolist()
    fig = go.Figure(
        go.Bar(
            x=names,
            y=nc.contributions.numpy(),
            customdata=nc.neurons.tolist(),
            marker_color=[POSITIVE if a > 0 else NEGATIVE for a in acts],
            hovertext=[f"{plain_text(name)}: contribution {c:.3g}<br>activation {a:+.3g} ({'positive' if a > 0 else 'negative'})"
                       for name, c, a in zip(labels, nc.contributions.tolist(), acts)],
            # named fields, not plotly's default "(N1005, 0.2034263)"
            hovertemplate="%{hovertext}<br>click to inspect or edit it<extra></extra>",
        )
    )
    fig.update_layout(
        height=320,
        xaxis={"title": f"neuron of layer {nc.layer} (green: positive activation, purple: negative)", "type": "category", "dtick": 1},
        yaxis_title="contribution",
        clickmode="event+select",
    )
    return fig


def projection_figure(proj: Projection) -> go.Figure:
    """Promoted tokens (positive direct effect on their logit) and suppressed ones (negative), as horizontal bars."""
    items = sorted(proj.promoted + proj.suppressed, key=lambda s: s.score)
    fig = go.Figure(
        go.Bar(
            x=[s.score for s in items],
            y=[f"{label(s.token)} ({s.token_id})" for s in items],
            orientation="h",
            marker_color=["#2ca02c" if s.score > 0 else "#d62728" for s in items],
            hovertemplate="%{y}: direct effect %{x:+.3f} on its logit<extra></extra>",  # y: the token and its id
        )
    )
    fig.update_layout(
        height=max(300, 18 * len(items) + 80),
        xaxis_title="direct effect on the logit",
        margin={"l": 140},
        yaxis={"type": "category", "dtick": 1},
    )
    return fig


def attention_pattern_figure(analysis: Analysis, layer: int, head: int) -> go.Figure:
    """A head's attention, query by key. The keys after each query are masked: blank, with no hover (they had read as
    weights of 0.000)."""
    a = analysis.trace.attention(layer)[head].numpy().astype(float)  # (T, T)
    a[np.triu_indices_from(a, k=1)] = np.nan
    ticks = [f"{p}:{label(tok)}" for p, tok in enumerate(readable_tokens(analysis))]
    fig = go.Figure(
        go.Heatmap(z=a, x=ticks, y=ticks, colorscale="Viridis", colorbar={"title": "attention"}, hoverongaps=False,
                   hovertemplate=f"{head_name(layer, head)}<br>query %{{y}}<br>key %{{x}}<br>attention %{{z:.3f}}<extra></extra>")
    )  # fmt: skip
    fig.update_layout(height=max(360, 14 * len(ticks) + 160),
                      yaxis={"autorange": "reversed", "title": "query (the token attending)", "dtick": 1},
                      xaxis={"tickangle": -60, "title": "key (the token read)"})  # fmt: skip
    return fig


def attention_from_figure(analysis: Analysis, layer: int, head: int, position: int) -> go.Figure:
    """Where one head at `position` looks: its attention weight on each earlier token."""
    weights = analysis.trace.attention(layer, slice(position, position + 1), position + 1)[head, 0].numpy()  # (position+1,)
    ticks = [f"{p}:{label(tok)}" for p, tok in enumerate(readable_tokens(analysis)[: position + 1])]
    fig = go.Figure(
        go.Bar(x=ticks, y=weights, marker_color=KIND_COLOURS["attention"], hovertemplate="%{x}: %{y:.3g}<extra></extra>")
    )
    fig.update_layout(
        height=240, margin={"t": 10, "b": 10}, xaxis={"tickangle": -60, "type": "category"}, yaxis={"title": "attention", "range": [0, 1]}
    )
    return fig


def neuron_activation_figure(analysis: Analysis, layer: int, neuron: int) -> go.Figure:
    """One neuron's activation at every position (green: positive, purple: negative, as its bars elsewhere)."""
    acts = analysis.trace.neuron_activation(layer, neuron).numpy()  # (T,)
    ticks = [f"{p}:{label(tok)}" for p, tok in enumerate(readable_tokens(analysis))]
    name = plain_text(analysis.neuron_label(layer, neuron))
    fig = go.Figure(go.Bar(x=ticks, y=acts, marker_color=[POSITIVE if v > 0 else NEGATIVE for v in acts],
                           hovertemplate=f"{name} at %{{x}}: activation %{{y:.3g}}<extra></extra>"))  # fmt: skip
    fig.update_layout(height=320, xaxis_tickangle=-60, yaxis_title="activation")
    return fig


LENS_COLORBAR = {"x": 1.0, "xanchor": "left", "xpad": 80}  # clear of the right-hand row names
LENS_TITLE = {"x": 1.0, "xanchor": "right"}  # at the right end, where the box opens: from the left it was cut to "f every state"


def lens_heatmap(analysis: Analysis, values: np.ndarray, title: str, rank: bool) -> go.Figure:
    """(2L+1, T) values of one token at every node level and position."""
    ticks = [f"{p}:{label(tok)}" for p, tok in enumerate(readable_tokens(analysis))]
    ylabels = list(level_names(analysis.n_layers))
    z = np.log10(values + 1) if rank else values
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=ticks,
            y=ylabels,
            customdata=values,
            colorscale="Viridis_r" if rank else "Viridis",
            hovertemplate=("rank %{customdata}" if rank else "p=%{customdata:.3f}") + "<br>%{y} at %{x}<extra></extra>",
            colorbar={"title": "log10(rank+1)" if rank else "probability", **LENS_COLORBAR},
        )
    )
    fig.update_layout(
        title={"text": plain_text(title), **LENS_TITLE},
        height=max(420, 14 * len(ylabels) + 180),
        xaxis={"tickangle": -60, "dtick": 1},
    )
    return _rows_named_on_both_sides(fig, ylabels)


def _rows_named_on_both_sides(fig: go.Figure, rows: list[str]) -> go.Figure:
    """The lens's row names on the right too, as the graph's layer labels are: its box opens scrolled to the right end
    (the explained token), where the left names are out of view on a long prompt."""
    axis = {"type": "category", "categoryorder": "array", "categoryarray": rows, "dtick": 1}
    fig.add_trace(go.Scatter(x=[None], y=[rows[0]], yaxis="y2", hoverinfo="skip", showlegend=False))  # plotly draws an axis with a trace
    return fig.update_layout(yaxis=axis, yaxis2={**axis, "overlaying": "y", "side": "right", "matches": "y"})


LENS_CELL_PX = {"number": 26, "text": 58}  # the top-token mode writes a token in every cell


def lens_min_width(n_tokens: int, text: bool) -> int:
    return LENS_CELL_PX["text" if text else "number"] * n_tokens + 280  # the row names on both sides, the colour bar


def lens_top_heatmap(analysis: Analysis, texts: list[list[str]], probs: np.ndarray) -> go.Figure:
    """(2L+1, T) the top token of every state, written in its cell and coloured by its probability."""
    ticks = [f"{p}:{label(tok)}" for p, tok in enumerate(readable_tokens(analysis))]
    cells = [[label(tok) for tok in row] for row in texts]
    rows = list(level_names(analysis.n_layers))
    fig = go.Figure(
        go.Heatmap(
            z=probs,
            x=ticks,
            y=rows,
            text=cells,
            texttemplate="%{text}",
            textfont={"size": 10},
            colorscale="Blues",
            zmin=0,
            zmax=1,
            hovertemplate="%{y} at %{x}<br>top token %{text}<br>p=%{z:.3g}<extra></extra>",
            colorbar={"title": "probability", **LENS_COLORBAR},
        )
    )
    fig.update_layout(
        title={"text": "Top token of every state (the logit lens); hover for its probability", **LENS_TITLE},
        height=max(420, 16 * len(cells) + 180),
        xaxis={"tickangle": -60, "dtick": 1, "side": "top"},
        margin={"t": 140},
    )
    return _rows_named_on_both_sides(fig, rows)


def head_delta_heatmap(delta: np.ndarray) -> go.Figure:
    """(L, H) change of each head's contribution, diverging around zero."""
    bound = float(np.abs(delta).max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=delta.T,
            x=[f"L{layer}" for layer in range(delta.shape[0])],
            y=[f"H{h}" for h in range(delta.shape[1])],
            colorscale=DIVERGING,
            zmin=-bound,
            zmax=bound,
            hovertemplate="%{x}.%{y}: %{z:+.3f}<extra></extra>",  # L23.H4, as heads are named
            colorbar={"title": "B - A<br>(share of<br>its node)"},
        )
    )
    return _per_head_layout(fig, *delta.shape)


def head_importance_heatmap(values, signed: bool = False) -> go.Figure:
    """(L, H) values per head (signed: blue below zero, red above, white at zero). A heatmap cell cannot be selected
    in plotly, so an invisible marker on each cell carries [layer, head]: a click on a cell selects that head."""
    z = np.asarray(values, dtype=float)  # (L, H)
    layers, heads = z.shape
    xs, ys = [f"L{layer}" for layer in range(layers)], [f"H{h}" for h in range(heads)]
    colours = {"colorscale": DIVERGING, "zmid": 0.0} if signed else {"colorscale": "Blues"}
    fig = go.Figure(go.Heatmap(z=z.T, x=xs, y=ys, hoverinfo="skip", **colours))
    grid_l, grid_h = np.meshgrid(np.arange(layers), np.arange(heads))  # (H, L) each
    fig.add_trace(
        go.Scatter(
            x=[xs[i] for i in grid_l.ravel()],
            y=[ys[h] for h in grid_h.ravel()],
            mode="markers",
            marker={"symbol": "square", "size": 16, "color": "rgba(0,0,0,0)"},
            customdata=np.stack([grid_l.ravel(), grid_h.ravel()], 1).tolist(),
            text=[f"{v:.3g}" for v in z.T.ravel()],
            hovertemplate="%{x}.%{y}: %{text}<br>click for its prompts<extra></extra>",  # L23.H4, as heads are named
            showlegend=False,
        )
    )
    return _per_head_layout(fig, layers, heads).update_layout(clickmode="event+select")


def _per_head_layout(fig: go.Figure, layers: int, heads: int) -> go.Figure:
    """A layer × head heatmap tall enough for a label on every head and every layer."""
    return fig.update_layout(
        height=max(340, 22 * heads + 120),
        xaxis={"title": "layer", "dtick": 1, "tickangle": 0 if layers <= 12 else -90, "tickfont": {"size": 10}},
        yaxis={"title": "head", "dtick": 1, "autorange": "reversed"},
        margin={"t": 20},
    )
