"""Graph: the important subgraph of information flow to the chosen token."""

import streamlit as st

from lmtt import figures, ui

st.set_page_config(page_title="Graph · lmtt", layout="wide")
click = ui.chart_click("graph_chart")  # before the sidebar, so the URL and the figure show the new selection
if click and isinstance(click.get("customdata"), str):
    if click["customdata"].startswith("edge|"):
        ui.select_edge(click["customdata"])
    else:
        ui.select_node(click["customdata"])
view = ui.sidebar()
st.title("Graph")
if view is None:
    st.stop()

a = view.analysis

sub = a.paths_to(view.token, view.threshold)
top = a.predictions(view.token, 1)[0]
st.caption(
    f"{len(sub)} edges above {view.threshold:.3f} lead to token {view.token} "
    f"({ui.token_md(a.tokens[view.token])}), which predicts {ui.token_md(top.token)} (p={top.score:.2f}). "
    "Click a node or an edge handle; drag to pan, scroll or use the toolbar to zoom."
)
graph_col, panel_col = st.columns([3, 1.25])
with graph_col:
    st.plotly_chart(
        figures.graph_figure(a, sub, selected=view.node),
        key="graph_chart",
        on_select="rerun",
        selection_mode="points",
        width="stretch",
        config={"scrollZoom": True, "displaylogo": False},
    )
with panel_col:
    ui.selection_panel(view)
    ui.download_buttons(a, view.token, view.threshold)
