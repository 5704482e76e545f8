"""Compare: two prompts side by side, and the edges and heads whose contribution changed most."""

import pandas as pd
import streamlit as st

from lmtt import ui
from lmtt.questions.compare import compare_prompts
from lmtt.viz import figures

st.set_page_config(page_title="Compare · lmtt", layout="wide")
view = ui.sidebar("compare")
st.title("Compare")
if view is None:
    st.stop()

# no max_chars: the browser would cut an over-long paste silently; fetch_analysis says what is wrong instead
second = st.text_input("Second prompt", **ui.bound("compare"))
if not second.strip():
    st.info("Enter a second prompt, for example 'The capital of Italy is', to compare it with the prompt in the sidebar.")
    st.stop()
b = ui.fetch_analysis(view.config, view.analysis.model_name, second)
if b is None:
    st.stop()
a = view.analysis
cmp = compare_prompts(a, b, top=25)
st.caption(
    f"Aligned by {cmp.alignment}" + (f" (B's positions are A's + {cmp.offset})" if cmp.offset else "") + ". Graphs show the last token."
)
for column, analysis, name in zip(st.columns(2), (a, b), ("A", "B")):
    with column:
        top = analysis.predictions(-1, 1)[0]
        st.markdown(f"**{name}** predicts {ui.token_md(top.token)} (p={top.score:.2f})")
        ui.table(ui.token_table(analysis.predictions(-1, 5), "prob"))
        ui.graph_chart(figures.graph_figure(analysis, analysis.paths_to(-1, view.threshold)), f"compare_graph_{name}")

st.subheader("Edges whose contribution changed most")
ui.table(
    pd.DataFrame(
        {
            "layer": [e.layer for e in cmp.edges],
            "edge": [e.kind for e in cmp.edges],
            "into": [e.into for e in cmp.edges],
            "source (A)": [f"{e.source}: {figures.visible(a.tokens[e.source])}" for e in cmp.edges],
            "target (A)": [f"{e.target}: {figures.visible(a.tokens[e.target])}" for e in cmp.edges],
            "source (B)": [f"{e.source + cmp.offset}: {figures.visible(b.tokens[e.source + cmp.offset])}" for e in cmp.edges],
            "A": [e.weight_a for e in cmp.edges],
            "B": [e.weight_b for e in cmp.edges],
            "B - A": [e.delta for e in cmp.edges],
        }
    ),
)
st.subheader("Head contributions at the last token: B - A")
st.plotly_chart(figures.head_delta_heatmap(cmp.head_delta.numpy()), key="head_delta", width="stretch")
