"""Interpretation: what a head or a neuron writes, in vocabulary terms, and where the answer appears."""

import streamlit as st

from lmtt import figures, ui

st.set_page_config(page_title="Interpretation · lmtt", layout="wide")
view = ui.sidebar()
st.title("Interpretation")
if view is None:
    st.stop()

a = view.analysis
_, _, position = view.focus()
head_tab, neuron_tab, lens_tab, edit_tab = st.tabs(["Head", "Neuron", "Logit lens", "Intervene"])

with head_tab:
    layer, head = view.head or (view.focus()[1] if view.focus()[1] >= 0 else 0, 0)
    c1, c2 = st.columns(2)
    layer = c1.number_input("Layer", 0, a.n_layers - 1, layer, key="head_layer")
    head = c2.number_input("Head", 0, a.n_heads - 1, head, key="head_index")
    ui.select_head(layer, head)
    st.subheader(f"Layer {layer}, head {head}: its update at token {position} ({ui.token_md(a.tokens[position])})")
    proj = a.head_tokens(layer, position, head, k=10)
    st.plotly_chart(figures.projection_figure(proj), key="head_projection", width="stretch")
    ui.projection_tables(proj)
    ui.edit_controls("head", layer, head, key="edit_head")
    st.markdown("**Attention pattern**")
    st.plotly_chart(figures.attention_pattern_figure(a, layer, head), key="head_pattern", width="stretch")

with neuron_tab:
    layer, neuron = view.neuron or (max(view.focus()[1], 0), 0)
    c1, c2 = st.columns(2)
    layer = c1.number_input("Layer", 0, a.n_layers - 1, layer, key="neuron_layer")
    n_neurons = a.runner.layer_weights[layer].w_down.shape[0]  # MoE layers: every expert's neurons, then the shared ones
    neuron = c2.number_input("Neuron", 0, n_neurons - 1, min(neuron, n_neurons - 1), key="neuron_index")
    ui.select_neuron(layer, neuron)
    st.subheader(f"Layer {layer}, {a.neuron_label(layer, neuron)}")
    ui.edit_controls("neuron", layer, neuron, key="edit_neuron")
    st.markdown("**Activation across the prompt**")
    st.plotly_chart(figures.neuron_activation_figure(a, layer, neuron), key="neuron_acts", width="stretch")
    st.markdown("**Its value vector in the vocabulary** (not scaled by the activation)")
    proj = a.neuron_tokens(layer, neuron, k=10)
    st.plotly_chart(figures.projection_figure(proj), key="neuron_projection", width="stretch")
    ui.projection_tables(proj)

with lens_tab:
    top = a.predictions(view.token, 1)[0]
    mode = st.radio("Show", ("rank", "probability"), horizontal=True, key="lens_mode")
    probs, ranks = a.lens_grid(top.token_id, final_norm=view.final_norm)
    values = ranks.numpy() if mode == "rank" else probs.numpy()
    title = f"{mode} of {figures.visible(top.token)} (the prediction at token {view.token}) at every layer and position"
    st.plotly_chart(figures.lens_heatmap(a, values, title, rank=mode == "rank"), key="lens", width="stretch")

with edit_tab:
    ui.intervention_panel(view)
