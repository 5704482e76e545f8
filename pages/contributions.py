"""Contributions: per layer, how much attention, FFN and residual wrote; heads and neurons of one node."""

import streamlit as st

from lmtt import figures, ui
from lmtt.ui.experts import experts_panel

st.set_page_config(page_title="Contributions · lmtt", layout="wide")
for key, select in (("head_chart", ui.select_head), ("neuron_chart", ui.select_neuron)):
    click = ui.chart_click(key)
    if click and "customdata" in click and ui.ss.get("node"):
        select(ui.focus_layer(), int(click["customdata"]))
view = ui.sidebar()
st.title("Contributions")
if view is None:
    st.stop()

a = view.analysis
kind, layer, position = view.focus()
st.caption(f"Token {position} ({ui.token_md(a.tokens[position])}). Select a node on the Graph page, or pick a layer here.")
st.plotly_chart(figures.layer_overview_figure(a, position), key="overview", width="stretch")

left, right = st.columns([1, 1])
layer = left.selectbox("Layer", range(a.n_layers), index=max(layer, 0))
block = right.radio("Block", ("attention", "FFN"), index=1 if kind == "ffn" else 0, horizontal=True)
node = f"{'attn' if block == 'attention' else 'ffn'}:{layer}:{position}"
if node != view.node:
    ui.select_node(node)

if block == "attention":
    hc = a.head_contributions(layer, position)
    st.subheader(f"Heads at layer {layer}")
    st.caption(f"Residual share {hc.residual:.3f}. Click a head to open it on the Interpretation page.")
    st.plotly_chart(figures.head_bar_figure(hc), key="head_chart", on_select="rerun", selection_mode="points", width="stretch")
    if view.head and view.head[0] == layer:
        ui.edit_controls("head", *view.head, key="edit_head_c")
    st.plotly_chart(figures.head_source_heatmap(hc, a.tokens), key="head_sources", width="stretch")
else:
    experts_panel(a, layer, position)
    k = st.slider("Top neurons", 5, 100, 20)
    nc = a.neuron_contributions(layer, position, k)
    st.subheader(f"Top neurons at layer {layer}")
    st.caption(f"Residual share {nc.residual:.3f}. Click a neuron to open it on the Interpretation page.")
    st.plotly_chart(figures.neuron_bar_figure(nc), key="neuron_chart", on_select="rerun", selection_mode="points", width="stretch")
    if view.neuron and view.neuron[0] == layer:
        ui.edit_controls("neuron", *view.neuron, key="edit_neuron_c")
    st.dataframe(ui.neuron_table(a, nc), hide_index=True, width="stretch")
if view.head or view.neuron or view.edits:
    st.page_link("pages/interpretation.py", label="Open the selection (and the interventions) on the Interpretation page →")
