"""Dataset: aggregates of `python -m lmtt batch` over many prompts; click a head to open it."""

import streamlit as st

from lmtt import batch, figures, ui

st.set_page_config(page_title="Dataset · lmtt", layout="wide")
click = ui.chart_click("dataset_heads")
ui.sidebar(require_analysis=False)
st.title("Dataset")
config = ui.read_config()
if config is None:
    st.stop()
if config.demo_mode:
    st.info("The Dataset page reads a directory on the server, so it is off in demo mode.")
    st.stop()
folder = st.text_input("Directory written by `python -m lmtt batch PROMPTS_FILE --out DIR`", **ui.bound("dataset"))
if not folder.strip():
    st.info("Enter the directory of a batch run.")
    st.stop()
summaries = ui.dataset_summaries(folder)
if not summaries:
    st.warning(f"No prompt summaries in {folder!r}.")
    st.stop()
agg = batch.aggregate(summaries)
st.caption(
    f"{agg['prompts']} prompts. A head matters for a prompt when its share at the last token is at least {agg['important_threshold']}."
)
left, right = st.columns(2)
left.markdown("**Mean head importance at the last token** (click a head)")
left.plotly_chart(
    figures.head_importance_heatmap(agg["mean_head_importance"]),
    key="dataset_heads",
    on_select="rerun",
    selection_mode="points",
    width="stretch",
)
right.markdown("**Share of prompts where each head matters**")
right.plotly_chart(figures.head_importance_heatmap(agg["head_prompt_share"]), key="dataset_share", width="stretch")
c1, c2, c3 = st.columns(3)
c1.markdown("**Important for every prompt**")
c1.dataframe([{"layer": layer, "head": h} for layer, h in agg["always_important_heads"]], hide_index=True, width="stretch")
c2.markdown("**Important for some prompts**")
c2.dataframe(
    [{"layer": layer, "head": h, "share": s} for layer, h, s in agg["sometimes_important_heads"]], hide_index=True, width="stretch"
)
c3.markdown("**Most frequent top neurons**")
c3.dataframe([{"layer": layer, "neuron": n, "prompts": k} for layer, n, k in agg["frequent_neurons"]], hide_index=True, width="stretch")

if click and "customdata" in click:
    layer, head = click["customdata"]
    ui.select_head(int(layer), int(head))
if ui.ss.get("head"):
    layer, head = ui.ss.head
    st.subheader(f"Layer {layer}, head {head}: the prompts where it mattered most")
    ranked = batch.prompts_where_head_mattered(summaries, layer, head)
    st.dataframe([{"share": s, "prompt": p} for s, p in ranked], hide_index=True, width="stretch")
    choice = st.selectbox("Open a prompt on the Interpretation page", [p for _, p in ranked], key="dataset_open")
    if st.button("Open", key="dataset_open_go"):
        ui.open_prompt(choice)
        st.switch_page("pages/interpretation.py")
