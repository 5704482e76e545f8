"""Graph: the important subgraph of information flow to the chosen token."""

import streamlit as st

from lmtt import ui
from lmtt.engine.levels import layer_of
from lmtt.engine.tokens import readable_tokens
from lmtt.ui.workbench import workbench
from lmtt.viz import figures
from lmtt.viz.columns import EVERY_COLUMN_MAX_TOKENS, PACK_ABOVE_TOKENS, columns_for

st.set_page_config(page_title="Graph · lmtt", layout="wide")
# clicks before the sidebar, so the URL and the figure show the new selection
click = ui.chart_click("graph_chart")
if click and isinstance(click.get("customdata"), str):
    data = click["customdata"]
    if data.startswith("edge|"):
        ui.select_edge(data)
    elif data.startswith("token|"):
        ui.ss.token, ui.ss.root = int(data.split("|")[1]), None
    else:
        ui.select_node(data)
head_click = ui.chart_click("edge_heads")
if head_click and "customdata" in head_click and (ui.ss.get("edge") or "").startswith("edge|attention|"):
    level = int(ui.ss.edge.split("|")[2])
    ui.select_head(layer_of(level), int(head_click["customdata"]))
view = ui.sidebar("graph")
st.title("Graph")
if view is None:
    st.stop()

a = view.analysis
shown = a
if view.edits and ui.ss.get("show_edited"):
    result = ui.intervention(view)
    shown = result.analysis if result is not None else a
root = ui.ss.get("root")  # a node the user asked to explain ("why is this state what it is?"), else the token's output
# A long prompt computes its paths now. Said in a still line, not a spinner: a spinner and its clock redraw the page
# ten times a second, and at 4,000 tokens the browser's drawing took a third of a core from the paths.
note = st.empty()
if shown.on_demand:
    note.caption(f"Following the paths to {root or f'token {view.token}'}…")
sub = shown.paths_to(view.token, view.threshold) if root is None else shown.paths_to_node(root, view.threshold)
note.empty()
top = shown.predictions(view.token, 1)[0]
edited = " **with the edits**" if shown is not a else ""
if root is None:
    st.caption(
        f"{len(sub)} edges above {view.threshold:.3f} lead to token {view.token} "
        f"({ui.token_md(readable_tokens(a)[view.token])}), which predicts {ui.token_md(top.token)} (p={top.score:.2f}){edited}. "
        "Click a node, an edge's dot, or a token's ▲ to explain it; drag to pan, Ctrl + scroll to zoom (the zoom stays as you click)."
    )
else:
    st.caption(
        f"{len(sub)} edges above {view.threshold:.3f} lead to the node **{ui.plain(figures.describe_node(a, root))}**{edited}: "
        "why that state is what it is. Click a token's ▲ or the button to go back to the output."
    )
    if st.button(f"Back to the paths to token {view.token}", key="root_back"):
        ui.ss.root = None
        st.rerun()
n_tokens = len(a.tokens)
every = st.toggle(
    "Every token's column",
    value=n_tokens <= PACK_ABOVE_TOKENS,  # no key: the default follows the prompt's length
    disabled=n_tokens > EVERY_COLUMN_MAX_TOKENS,
    help=f"Off: only the tokens that the paths touch, side by side, with a gap column (⋯) for the tokens skipped. "
    f"Prompts over {EVERY_COLUMN_MAX_TOKENS} tokens always draw only those.",
)
pinned = ui.ss.get("curation").positions if ui.ss.get("curation") else set()
columns = columns_for(n_tokens, sub, every, also=(view.token, *pinned))  # pins keep their columns
graph_col, panel_col = st.columns([3, 1.1])
with graph_col:
    # at least 32 px per column: wide graphs scroll sideways inside this box instead of squeezing the labels
    ui.scroll_box("graph_box", figures.graph_min_width(columns.width))
    with st.container(key="graph_box"):
        only = bool(ui.ss.get("subgraph_only"))
        drawn = (view.token, root, view.threshold, columns.key(), ui.curation_key(), only)  # what the figure shows
        figure = ui.kept("graph", shown, drawn, lambda: figures.graph_figure(
            shown, sub, explained=view.token, columns=columns, curation=ui.ss.get("curation"), subgraph_only=only,
        ))  # fmt: skip
        ui.graph_chart(figure, "graph_chart", clickable=True)
        ui.mark_node("graph_chart", view.node)
with panel_col:
    if view.edits:  # say which run each number belongs to
        st.caption(
            "The downloads are of the graph shown (**edited**). The panel below reads the unedited run and compares the edits with it."
            if shown is not a
            else "The panel and the downloads read the **unedited** run; draw the edited graph (in the panel) for the edited one."
        )
    ui.selection_panel(view)
    workbench(shown, sub, view.node)
    ui.download_buttons(shown, view.token, view.threshold, root)
