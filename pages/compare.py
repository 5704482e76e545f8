"""Compare: two prompts side by side, and the edges and heads whose contribution changed most."""

import pandas as pd
import streamlit as st

from lmtt import ui
from lmtt.engine.tokens import readable_tokens, visible
from lmtt.questions.compare import compare_prompts
from lmtt.ui.markdown import excerpt
from lmtt.viz import figures

PROMPT_CHARS = 80  # of each prompt, restated above its graph

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
shift = "" if not cmp.offset else f" (position i of A meets position i {'+' if cmp.offset > 0 else '-'} {abs(cmp.offset)} of B)"
sink = "" if not cmp.offset else (
    " The table leaves out the first position where the two meet: there the shorter prompt's first token, an attention "
    "sink in most models, meets an ordinary token of the other."
)
st.caption(
    f"Aligned by {cmp.alignment}{shift}.{sink} Graphs show the last token. Edge weights and head contributions are shares "
    "of the node they lead into (0 to 1, as on the Graph page); B - A is their change from A to B."
)
for column, analysis, name, whose in zip(st.columns(2), (a, b), ("A", "B"), ("the sidebar's prompt", "the second prompt")):
    with column:
        top = analysis.predictions(-1, 1)[0]
        shown = excerpt("".join(readable_tokens(analysis)), PROMPT_CHARS)
        st.markdown(f"**{name}**, {whose} ({len(analysis.tokens)} tokens): “{shown}” predicts {ui.token_md(top.token)} (p={top.score:.2f})")
        ui.table(ui.token_table(analysis.predictions(-1, 5), "prob"))
        graph = figures.graph_figure(analysis, analysis.paths_to(-1, view.threshold), clicks=False)  # a graph to read
        ui.scroll_box(f"compare_graph_{name}_box", figures.figure_min_width(graph))  # scrolls sideways, as on the Graph page
        ui.graph_chart(graph, f"compare_graph_{name}", where=st.container(key=f"compare_graph_{name}_box"))

st.subheader("Edges whose contribution changed most")
if not cmp.edges:
    st.info("No edges to compare: the shorter prompt has one token, its first, which the table leaves out (see above).")
tokens_a, tokens_b = readable_tokens(a), readable_tokens(b)  # a split character as its bytes, not �
ui.table(
    pd.DataFrame(
        {
            "layer": [e.layer for e in cmp.edges],
            "edge": [e.kind for e in cmp.edges],
            "into": [e.into for e in cmp.edges],
            "source (A)": [f"{e.source}: {visible(tokens_a[e.source])}" for e in cmp.edges],
            "target (A)": [f"{e.target}: {visible(tokens_a[e.target])}" for e in cmp.edges],
            "source (B)": [f"{e.source + cmp.offset}: {visible(tokens_b[e.source + cmp.offset])}" for e in cmp.edges],
            "target (B)": [f"{e.target + cmp.offset}: {visible(tokens_b[e.target + cmp.offset])}" for e in cmp.edges],
            "A": [e.weight_a for e in cmp.edges],
            "B": [e.weight_b for e in cmp.edges],
            "B - A": [e.delta for e in cmp.edges],
        }
    ),
)
st.subheader("Head contributions at the last token: B - A")
st.plotly_chart(figures.head_delta_heatmap(cmp.head_delta.numpy()), key="head_delta", width="stretch")
