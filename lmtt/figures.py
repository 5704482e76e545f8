"""Plotly figures for the dashboard. Plain functions of an Analysis: no Streamlit here.

Every token string that reaches a figure goes through `label()`: whitespace is
made visible and HTML is escaped, so a token such as `<img onerror=...>` shows
as text in tick labels and hovers and never as markup.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from lmtt.analysis import Analysis
from lmtt.graph import EDGE_KINDS, Subgraph, node_id, parse_node
from lmtt.interpret import HeadContributions, NeuronContributions, Projection

KIND_COLOURS = {"attention": "#1f77b4", "residual": "#9a9a9a", "ffn": "#d62728"}
NODE_COLOURS = {"embedding": "#2ca02c", "attn": "#1f77b4", "ffn": "#d62728"}
WEIGHT_BINS = (0.0, 0.1, 0.25, 0.5, 1.01)  # edges are drawn in a few width/opacity classes
FFN_OFFSET = 0.18  # FFN edges run beside the residual edge of the same token


def visible(token: str) -> str:
    """A token with whitespace and control characters made visible (plain text, not escaped)."""
    out = []
    for ch in token:
        if ch == " ":
            out.append("␣")
        elif ch == "\n":
            out.append("↵")
        elif ch == "\t":
            out.append("⇥")
        elif ch == "\r":
            out.append("␍")
        elif not ch.isprintable() or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out) or "∅"


def label(token: str) -> str:
    """A token as plotly text: visible whitespace, HTML escaped."""
    return html.escape(visible(token), quote=True)


def _levels(n_layers: int) -> tuple[list[float], list[str]]:
    """Axis labels: one per layer, centred on the band of its two states (after attention, after FFN)."""
    vals = [0] + [2 * layer + 1.5 for layer in range(n_layers)]
    return vals, ["emb"] + [f"L{layer}" for layer in range(n_layers)]


def describe_node(analysis: Analysis, node: str) -> str:
    """'layer 3 after attention, token 2 ␣France' (plain text)."""
    kind, layer, pos = parse_node(node)
    where = "embedding" if kind == "embedding" else f"layer {layer} after {'attention' if kind == 'attn' else 'FFN'}"
    return f"{where}, token {pos} {visible(analysis.tokens[pos])}"


def graph_figure(analysis: Analysis, sub: Subgraph, selected: str | None = None) -> go.Figure:
    """Tokens are columns and node levels rows (embeddings at the bottom, output at the top).

    Clickable traces carry the node id (or edge description) in customdata.
    """
    t, n_layers = len(analysis.tokens), analysis.n_layers
    fig = go.Figure()
    # edges, as a few line traces per kind (one per weight class: width and opacity follow the weight)
    src_level = sub.level - 1
    x0 = sub.source + np.where(sub.kind == EDGE_KINDS.index("ffn"), FFN_OFFSET, 0.0)
    x1 = sub.target + np.where(sub.kind == EDGE_KINDS.index("ffn"), FFN_OFFSET, 0.0)
    for k, kind in enumerate(EDGE_KINDS):
        first = True
        for b in range(len(WEIGHT_BINS) - 1):
            m = (sub.kind == k) & (sub.weight >= WEIGHT_BINS[b]) & (sub.weight < WEIGHT_BINS[b + 1])
            if not m.any():
                continue
            xs = np.stack([x0[m], x1[m], np.full(m.sum(), np.nan)], 1).ravel()
            ys = np.stack([src_level[m], sub.level[m], np.full(m.sum(), np.nan)], 1).ravel()
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    line={"color": KIND_COLOURS[kind], "width": 1 + 2.5 * b},
                    opacity=0.3 + 0.2 * b,
                    hoverinfo="skip",
                    showlegend=first,
                    name=f"{kind} edge",
                    legendgroup=kind,
                )
            )
            first = False
    # clickable handles at the midpoints of attention and FFN edges (residual ones would sit on the nodes)
    handles = sub.kind != EDGE_KINDS.index("residual")
    if handles.any():
        mid_x, mid_y = ((x0 + x1) / 2)[handles], ((src_level + sub.level) / 2)[handles]
        rows = list(
            zip(
                sub.kind[handles].tolist(),
                sub.level[handles].tolist(),
                sub.source[handles].tolist(),
                sub.target[handles].tolist(),
                sub.weight[handles].tolist(),
            )
        )
        kinds = [EDGE_KINDS[k] for k, *_ in rows]
        hover = [
            f"{EDGE_KINDS[k]} edge, layer {(lv - 1) // 2}<br>"
            f"{label(analysis.tokens[s])} ({s}) → {label(analysis.tokens[d])} ({d})<br>weight {w:.3f}"
            for k, lv, s, d, w in rows
        ]
        custom = [f"edge|{EDGE_KINDS[k]}|{lv}|{s}|{d}" for k, lv, s, d, _w in rows]
        fig.add_trace(
            go.Scatter(
                x=mid_x,
                y=mid_y,
                mode="markers",
                marker={"size": 5, "color": [KIND_COLOURS[k] for k in kinds], "opacity": 0.6},
                customdata=custom,
                hovertext=hover,
                hoverinfo="text",
                showlegend=False,
                name="edges",
            )
        )
    # every node, faint; the nodes on a route, coloured
    levels = np.arange(2 * n_layers + 1)
    gx, gy = np.meshgrid(np.arange(t), levels)
    on_route = {node_id(lv, p) for lv, p in sub.node_keys()}
    ids = [node_id(int(lv), int(p)) for lv, p in zip(gy.ravel(), gx.ravel())]
    colours = [NODE_COLOURS[_kind(lv)] if i in on_route else "#d9d9d9" for i, lv in zip(ids, gy.ravel().tolist())]
    big = float(np.clip(360 / t, 4, 9))  # markers shrink as columns narrow, so 60 tokens stay apart
    sizes = [big if i in on_route else 3 for i in ids]
    lines = [3 if i == selected else 0 for i in ids]
    fig.add_trace(
        go.Scatter(
            x=gx.ravel(),
            y=gy.ravel(),
            mode="markers",
            marker={"size": sizes, "color": colours, "line": {"width": lines, "color": "#000000"}},
            customdata=ids,
            hovertext=[html.escape(describe_node(analysis, i)) for i in ids],
            hoverinfo="text",
            showlegend=False,
            name="nodes",
        )
    )
    yvals, ytext = _levels(n_layers)
    fig.update_layout(
        height=max(520, 20 * (2 * n_layers + 1) + 160),
        margin={"l": 50, "r": 10, "t": 30, "b": 110},
        xaxis={
            "tickmode": "array",
            "tickvals": list(range(t)),
            "ticktext": [label(tok) for tok in analysis.tokens],
            "tickangle": -60,
            "range": [-0.6, t - 0.4],
            "showgrid": False,
            "zeroline": False,
        },
        yaxis={"tickmode": "array", "tickvals": yvals, "ticktext": ytext, "range": [-0.8, 2 * n_layers + 0.8], "zeroline": False},
        legend={"orientation": "h", "y": 1.02, "x": 0},
        dragmode="pan",
        clickmode="event+select",
        hovermode="closest",
        plot_bgcolor="white",
    )
    return fig


def _kind(level: int) -> str:
    return "embedding" if level == 0 else ("attn" if level % 2 else "ffn")


def layer_overview_figure(analysis: Analysis, position: int) -> go.Figure:
    """Per layer at one token: the shares of attention, FFN and residual in each state."""
    c = analysis.contributions
    layers = list(range(analysis.n_layers))
    fig = go.Figure()
    series = [
        ("attention block → state after attention", 1 - c.attn_resid[:, position].numpy(), KIND_COLOURS["attention"]),
        ("residual → state after attention", c.attn_resid[:, position].numpy(), "#7f7f7f"),
        ("FFN → state after FFN", c.ffn[:, position].numpy(), KIND_COLOURS["ffn"]),
        ("residual → state after FFN", c.ffn_resid[:, position].numpy(), "#c7c7c7"),
    ]
    for name, values, colour in series:
        fig.add_trace(go.Scatter(x=layers, y=values, mode="lines+markers", name=name, line={"color": colour}))
    fig.update_layout(
        height=360, xaxis_title="layer", yaxis_title="contribution", yaxis_range=[0, 1], legend={"orientation": "h", "y": -0.25}
    )
    return fig


def head_bar_figure(hc: HeadContributions) -> go.Figure:
    heads = [f"H{h}" for h in range(len(hc.heads))]
    fig = go.Figure(go.Bar(x=heads, y=hc.heads.numpy(), customdata=list(range(len(heads))), marker_color=KIND_COLOURS["attention"]))
    fig.update_layout(height=320, xaxis_title="head", yaxis_title="contribution", clickmode="event+select")
    return fig


def edge_heads_figure(per_head: np.ndarray) -> go.Figure:
    """One attention edge split by head: c_ijh for each h (they sum to the edge weight)."""
    fig = go.Figure(go.Bar(x=[f"H{h}" for h in range(len(per_head))], y=per_head, marker_color=KIND_COLOURS["attention"]))
    fig.update_layout(height=260, margin={"t": 10}, xaxis_title="head", yaxis_title="contribution")
    return fig


def head_source_heatmap(hc: HeadContributions, tokens: tuple[str, ...]) -> go.Figure:
    j = hc.position + 1
    fig = go.Figure(
        go.Heatmap(
            z=hc.per_source[:, :j].numpy(),
            x=[f"{p}:{label(tok)}" for p, tok in enumerate(tokens[:j])],
            y=[f"H{h}" for h in range(hc.per_source.shape[0])],
            colorscale="Blues",
            hovertemplate="%{y} from %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(height=320, xaxis_tickangle=-60, xaxis_title="source token", yaxis_title="head")
    return fig


def neuron_bar_figure(nc: NeuronContributions) -> go.Figure:
    names = [f"N{n}" for n in nc.neurons.tolist()]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=nc.contributions.numpy(),
            customdata=nc.neurons.tolist(),
            marker_color=KIND_COLOURS["ffn"],
            hovertext=[f"activation {a:.3f}" for a in nc.activations.tolist()],
        )
    )
    fig.update_layout(height=320, xaxis_title="neuron", yaxis_title="contribution", clickmode="event+select")
    return fig


def projection_figure(proj: Projection) -> go.Figure:
    """Promoted tokens (positive logits) and suppressed ones (negative), as horizontal bars."""
    items = sorted(proj.promoted + proj.suppressed, key=lambda s: s.score)
    fig = go.Figure(
        go.Bar(
            x=[s.score for s in items],
            y=[f"{label(s.token)} ({s.token_id})" for s in items],
            orientation="h",
            marker_color=["#2ca02c" if s.score > 0 else "#d62728" for s in items],
        )
    )
    fig.update_layout(
        height=max(300, 18 * len(items) + 80), xaxis_title="logit change", margin={"l": 140}, yaxis={"type": "category", "dtick": 1}
    )
    return fig


def attention_pattern_figure(analysis: Analysis, layer: int, head: int) -> go.Figure:
    a = analysis.trace.attention(layer)[head].numpy()  # (T, T)
    ticks = [f"{p}:{label(tok)}" for p, tok in enumerate(analysis.tokens)]
    fig = go.Figure(
        go.Heatmap(z=a, x=ticks, y=ticks, colorscale="Viridis", hovertemplate="query %{y}<br>source %{x}<br>%{z:.3f}<extra></extra>")
    )
    fig.update_layout(height=max(360, 14 * len(ticks) + 160), yaxis_autorange="reversed", xaxis_tickangle=-60)
    return fig


def neuron_activation_figure(analysis: Analysis, layer: int, neuron: int) -> go.Figure:
    acts = analysis.trace.neuron_activation(layer, neuron).numpy()
    ticks = [f"{p}:{label(tok)}" for p, tok in enumerate(analysis.tokens)]
    fig = go.Figure(go.Bar(x=ticks, y=acts, marker_color=["#2ca02c" if v > 0 else "#d62728" for v in acts]))
    fig.update_layout(height=320, xaxis_tickangle=-60, yaxis_title="activation")
    return fig


def lens_heatmap(analysis: Analysis, values: np.ndarray, title: str, rank: bool) -> go.Figure:
    """(2L+1, T) values of one token at every node level and position."""
    ticks = [f"{p}:{label(tok)}" for p, tok in enumerate(analysis.tokens)]
    ylabels = ["emb"] + [f"L{layer} {part}" for layer in range(analysis.n_layers) for part in ("attn", "ffn")]
    z = np.log10(values + 1) if rank else values
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=ticks,
            y=ylabels,
            customdata=values,
            colorscale="Viridis_r" if rank else "Viridis",
            hovertemplate=("rank %{customdata}" if rank else "p=%{customdata:.3f}") + "<br>%{y} at %{x}<extra></extra>",
            colorbar={"title": "log10(rank+1)" if rank else "probability"},
        )
    )
    fig.update_layout(title=html.escape(title), height=max(420, 12 * len(ylabels) + 160), xaxis_tickangle=-60)
    return fig


def head_delta_heatmap(delta: np.ndarray) -> go.Figure:
    """(L, H) change of each head's contribution, diverging around zero."""
    bound = float(np.abs(delta).max()) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=delta.T,
            x=[f"L{layer}" for layer in range(delta.shape[0])],
            y=[f"H{h}" for h in range(delta.shape[1])],
            colorscale="RdBu",
            zmin=-bound,
            zmax=bound,
            hovertemplate="%{x} %{y}: %{z:+.3f}<extra></extra>",
        )
    )
    fig.update_layout(height=320, xaxis_title="layer", yaxis_title="head")
    return fig


def head_importance_heatmap(values) -> go.Figure:
    """(L, H) values per head; each cell carries [layer, head] so a click selects that head."""
    z = np.asarray(values, dtype=float)  # (L, H)
    layers, heads = z.shape
    custom = [[[layer, h] for layer in range(layers)] for h in range(heads)]
    fig = go.Figure(
        go.Heatmap(
            z=z.T,
            x=[f"L{layer}" for layer in range(layers)],
            y=[f"H{h}" for h in range(heads)],
            customdata=custom,
            colorscale="Blues",
            hovertemplate="%{x} %{y}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(height=340, xaxis_title="layer", yaxis_title="head", clickmode="event+select")
    return fig
