"""Contributions: per layer, how much attention, FFN and residual wrote; heads and neurons of one node, editable in place."""

import streamlit as st

from lmtt import ui
from lmtt.engine.graph import parse_node
from lmtt.engine.tokens import readable_tokens
from lmtt.ui.experts import experts_panel
from lmtt.viz import figures

st.set_page_config(page_title="Contributions · lmtt", layout="wide")
for key, select in (("head_chart", ui.select_head), ("neuron_chart", ui.select_neuron)):
    click, shown = ui.chart_click(key), ui.ss.get("_contributions_node")  # the node whose heads or neurons were drawn
    if click and "customdata" in click and shown:
        if shown != ui.ss.get("node"):
            ui.select_node(shown)  # a click on its unit chooses the node too (an edge into it stays chosen)
        select(parse_node(shown)[1], int(click["customdata"]))
view = ui.sidebar("contributions")
st.title("Contributions")
if view is None:
    st.stop()
ui.unedited_note(view)

a = view.analysis
kind, layer, position = view.focus()
st.caption(f"Token {position} ({ui.token_md(readable_tokens(a)[position])}). Select a node on the Graph page, or pick a layer here.")
st.plotly_chart(figures.layer_overview_figure(a, position), key="overview", width="stretch")


def node_of(layer: int, block: str) -> str:
    # a parallel block has no state after attention: its heads, FFN and residual all share the block's output node
    return f"{'attn' if block == 'attention' and not a.trace.parallel else 'ffn'}:{layer}:{position}"


def chosen() -> None:  # a callback, before the page (and its link) is drawn: the user's choice selects its node
    ui.select_node(node_of(ui.ss.contrib_layer, ui.ss.contrib_block))


left, right = st.columns([1, 1])
# the selected node's layer and block, or the default's when none is: merely opening the page selects no node. A block
# that already shows that node stays chosen (a parallel block's heads and FFN share one node)
ui.ss.contrib_layer, block, kept = max(layer, 0), "FFN" if kind == "ffn" else "attention", ui.ss.get("contrib_block")
ui.ss.contrib_block = kept if kept and node_of(ui.ss.contrib_layer, kept) == node_of(ui.ss.contrib_layer, block) else block
layer = left.selectbox("Layer", range(a.n_layers), key="contrib_layer", on_change=chosen)
block = right.radio("Block", ("attention", "FFN"), horizontal=True, key="contrib_block", on_change=chosen)
ui.ss._contributions_node = node_of(layer, block)

if block == "attention":
    hc = a.head_contributions(layer, position)
    head = view.head[1] if view.head and view.head[0] == layer else None
    st.subheader(f"Heads at layer {layer}")
    joint = "" if hc.ffn is None else f", FFN share {hc.ffn:.3f} (a parallel block: heads, FFN and residual split its output together)"
    st.caption(
        f"Residual share {hc.residual:.3f}{joint}. Click a head to see what it wrote and to zero, mean-ablate or scale it here."
    )
    chart, panel = st.columns([1.4, 1])
    chart.plotly_chart(
        figures.head_bar_figure(hc.heads.numpy(), layer, selected=head),
        key="head_chart",
        on_select="rerun",
        selection_mode="points",
        width="stretch",
    )
    with panel:
        if head is not None:
            ui.head_panel(view, layer, head, position, key="contrib_head")
    st.plotly_chart(figures.head_source_heatmap(hc, readable_tokens(a)), key="head_sources", width="stretch")
else:
    experts_panel(view, layer, position)
    k = st.slider("Top neurons", 5, 100, 20)
    nc = a.neuron_contributions(layer, position, k)
    neuron = view.neuron[1] if view.neuron and view.neuron[0] == layer else None
    st.subheader(f"Top neurons at layer {layer}")
    st.caption(
        f"Residual share {nc.residual:.3f} (the graph's residual edge into this node); the neurons' shares split its FFN edge. "
        "Click a neuron to see what it writes and to zero, mean-ablate or scale it here."
    )
    chart, panel = st.columns([1.4, 1])
    labels = [a.neuron_label(layer, n) for n in nc.neurons.tolist()]  # a mixture-of-experts neuron names its expert
    bars = figures.neuron_bar_figure(nc, labels)
    chart.plotly_chart(bars, key="neuron_chart", on_select="rerun", selection_mode="points", width="stretch")
    with panel:
        if neuron is not None:
            ui.neuron_panel(view, layer, neuron, key="contrib_neuron", stacked=True)
    ui.table(ui.neuron_table(a, nc))
