"""Tables and panels shared by the pages: token tables, the selection panel, downloads, interventions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from lmtt.analysis import Analysis, InterventionResult
from lmtt.engine.edits import Edit
from lmtt.engine.graph import parse_node
from lmtt.engine.levels import head_name, layer_of, neuron_name, unit_name
from lmtt.engine.tokens import readable_tokens, visible
from lmtt.questions.export import NEURONPEDIA_FILE, export_files
from lmtt.questions.vocabulary import Projection, TokenScore
from lmtt.ui.markdown import plain
from lmtt.ui.runs import intervention
from lmtt.ui.state import TABS, View, curation_key, describe_edit, kept, parse_edge, remove_edit, set_edit, ss, start_run
from lmtt.viz import figures
from lmtt.viz.figures import describe_node

# ---- tables ---------------------------------------------------------------------


EFFECT_COLUMN = "effect on logit"  # a projection's score: the direct effect on that token's logit (lmtt.questions.vocabulary)


THREE_DIGITS = st.column_config.NumberColumn(format="%.3g")  # a table's numbers to 3 significant digits


ROW_PX = 35  # a dataframe row's height in the browser (and the header's)


def table(data, where: DeltaGenerator | None = None, every_row: bool = False, **options) -> None:
    """A dataframe (or a dict of columns) whose decimal numbers read to 3 significant digits, in every column that
    `column_config` does not format itself; without its index, as wide as its place. `every_row`: tall enough to show
    them all (a dataframe shows about 10, and scrolls the rest out of sight)."""
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    floats = {name: THREE_DIGITS for name in frame.columns if pd.api.types.is_float_dtype(frame[name])}
    options["column_config"] = {**floats, **(options.get("column_config") or {})}
    if every_row:
        options["height"] = ROW_PX * (len(frame) + 1) + 3
    (where or st).dataframe(frame, **{"hide_index": True, "width": "stretch", **options})


def token_table(scores: list[TokenScore], column: str) -> pd.DataFrame:
    """Tokens as text cells (a dataframe never renders markup), whitespace made visible."""
    return pd.DataFrame(
        {"token": [visible(s.token) for s in scores], "id": [s.token_id for s in scores], column: [s.score for s in scores]}
    )


def projection_tables(proj: Projection, stacked: bool = False) -> None:
    """Promoted and suppressed tokens side by side (or one above the other in a narrow panel)."""
    left, right = (st.container(), st.container()) if stacked else st.columns(2)
    up, down = proj.headings()
    left.caption(up)
    table(token_table(proj.promoted, EFFECT_COLUMN), left)
    right.caption(down)
    table(token_table(proj.suppressed, EFFECT_COLUMN), right)


def neuron_table(analysis: Analysis, nc) -> pd.DataFrame:
    """The top neurons; in a mixture-of-experts layer each is named by its expert."""
    names = [analysis.neuron_label(nc.layer, n) for n in nc.neurons.tolist()]
    columns = {"neuron": names, "id": nc.neurons.numpy(), "contribution": nc.contributions.numpy(), "activation": nc.activations.numpy()}
    return pd.DataFrame(columns)


def unedited_note(view: View, except_in: str = "") -> None:
    """On a page that reads the unedited run, while edits are active: say so, and where the edits' effects are shown
    (a researcher who zeroed a head and saw its full share here would think the edit did nothing). `except_in`: where
    the page itself shows them (Interpretation: the edits' readouts in its Head, Neuron and Intervene tabs)."""
    if view.edits:
        where = "on the Graph page (its edited graph and the panel's before/after) and on the Target and Faithfulness pages"
        if except_in:
            said = f"This page reads the **unedited** run, except {except_in}, which show the edits' effects. "
            said += f"They are also {where}."
        else:
            said = f"This page reads the **unedited** run. The edits' effects are {where}."
        st.info(said, icon=":material/info:")


def quantity_md(target) -> str:
    """A target's quantity for Markdown-rendered text: logit(␣Paris) - logit(␣Rome)."""
    return plain(target.describe(visible))


def token_md(token: str) -> str:
    """A token for Markdown-rendered text (captions, headers): visible whitespace, nothing interpreted."""
    return plain(visible(token))


def scroll_box(key: str, min_width: int) -> None:
    """Style the container `key` (create it next with st.container(key=key)): its charts are at least `min_width` px wide
    and scroll sideways when the window is narrower (Streamlit sizes a chart by its element's box, so that box gets the width)."""
    st.html(
        # right-to-left outside, left-to-right inside: the box opens scrolled to its right end, where the explained token is
        f"<style>.st-key-{key} {{overflow-x: auto; direction: rtl;}} "
        f".st-key-{key} [data-testid='stElementContainer'] {{min-width: {int(min_width)}px; direction: ltr;}}</style>"
    )


GRAPH_VIEW_JS = (Path(__file__).parent / "graph_view.js").read_text()


# plotly draws a spike line over an opaque line of the background's colour, which hid every node of the hovered
# column; multiplied, that line leaves what is under it as it is, and the highlight only tints the column
SPIKE_CSS = ".js-plotly-plot .spikeline {mix-blend-mode: multiply;}"
# Streamlit animates while it reruns, and every animated frame is drawn by Chromium on the cores the analysis runs on:
# - every element fades out over 1 s (about 0.5 s of CPU, the graph included), and each expander's border and title;
# - a progress bar glides 0.5 s to each new value, so a bar updated twice a second never stops moving;
# - the toolbar's running icon swaps its picture five times a second for as long as the script runs.
# The page now dims in one step, as late, a bar jumps to its value, and the icon is hidden (its Stop button stays).
# A question's button that its Cancel and bar replaced is retained by Streamlit until the run ends; it is hidden, not
# left faded under the bar (only those: another retained widget fades as before, and the layout does not jump).
STALE_CSS = (
    '.stElementContainer[class*="st-key-run_"][data-stale="true"][data-retained="true"] {display: none;} '
    '.stElementContainer[data-stale="true"] {transition: opacity 0s linear 0.5s !important;} '
    '[data-testid="stExpander"] details, [data-testid="stExpander"] summary {transition-duration: 0s !important;} '
    '[data-testid="stProgress"] div {transition: none !important;} '
    '[data-testid="stStatusWidgetRunningIcon"] {visibility: hidden;}'
)


def graph_view() -> None:
    """On every page: the wheel scrolls the page (Ctrl + wheel zooms a chart), the graph keeps the user's zoom and
    pan when a click redraws it (see graph_view.js; our own code, no user input), a hovered column stays legible, and
    the page dims in one step while it reruns."""
    st.html(f"<style>{SPIKE_CSS} {STALE_CSS}</style><script>{GRAPH_VIEW_JS}</script>", unsafe_allow_javascript=True)


def graph_chart(figure, key: str, clickable: bool = False, where: DeltaGenerator | None = None) -> None:
    """A flow graph (figures.graph_figure) as a chart, without Streamlit's theme: the theme puts a template back into
    the figure, and the browser then draws a new graph twice (figures.drawn_once). A clickable graph selects the point
    clicked (a rerun) and zooms with Ctrl + scroll."""
    interactive = {"on_select": "rerun", "selection_mode": "points", "config": {"scrollZoom": True, "displaylogo": False}}
    chart(figure, key, where, **(interactive if clickable else {}))


def chart(figure, key: str, where: DeltaGenerator | None = None, **options) -> None:
    """A figure that sets figures.drawn_once (the graph, the faithfulness curve, a patching heatmap), shown without
    Streamlit's theme, whose template would make the browser draw a new chart twice."""
    (where or st).plotly_chart(figure, key=key, width="stretch", theme=None, **options)


def mark_node(chart: str, node: str | None) -> None:
    """Ring the selected node of the graph chart keyed `chart` (graph_view.js draws the ring in the browser).

    The figure leaves the selection out, so a click changes no figure and Streamlit keeps the graph on screen instead
    of drawing it again: at 500 tokens a click took 3.5-3.9 s with two draws of the graph, and 0.5-1.2 s without."""
    args = json.dumps([chart, node]).replace("<", "\\u003c")  # inside a <script>: no "</script>" can close it
    st.html(f"<script>(window.__lmttMarks ||= new Map()).set(...{args}); window.lmttMark && window.lmttMark();</script>",
            unsafe_allow_javascript=True)  # fmt: skip


REVEAL_JS = """(() => {{
  const find = (tries) => {{
    const el = document.querySelector(".st-key-{key}");
    if (el) el.scrollIntoView({{block: "nearest", behavior: "instant"}});
    else if (tries > 0) setTimeout(() => find(tries - 1), 100);
  }};
  setTimeout(() => find(50), 50);  // {nonce}
}})();"""


def reveal(key: str) -> None:
    """Scroll the container `key` into view once it is drawn: the result of a click that may land below the fold."""
    ss._reveals = ss.get("_reveals", 0) + 1  # a new script each time, so the browser runs it again
    st.html(f"<script>{REVEAL_JS.format(key=key, nonce=ss._reveals)}</script>", unsafe_allow_javascript=True)


# ---- the selection panel (Graph page) ----------------------------------------------


def selection_panel(view: View) -> None:
    """For a node: logit lens and what its block wrote; for an attention edge: its heads, and the clicked head in place."""
    a = view.analysis
    if view.edge:
        _edge_panel(view)
        if view.edge.startswith("edge|attention|") and view.head:
            return
    elif view.node:
        st.subheader("Node")
        st.text(describe_node(a, view.node))
    else:
        st.info("Click a node to see its logit lens, or an edge's dot to split it by head.")
        return
    node = view.node
    if view.edge:  # the rest is about the edge's target node: name it, as a clicked node is named
        st.markdown(f"**Its target node:** {plain(describe_node(a, node))}")
    if parse_node(node)[0] != "embedding" and node != ss.get("root"):
        why = "Why is this state what it is? The graph of the edges that lead to it"
        if st.button("Draw the paths to this node", key="explain_node", help=why):
            ss.root = node
            st.rerun()
    st.markdown("**Logit lens**" + ("" if view.final_norm else " (no final norm)"))
    table(token_table(a.logit_lens(node, 10, final_norm=view.final_norm), "prob"))
    kind = parse_node(node)[0]
    st.markdown("**What its block wrote**" if kind != "embedding" else "**The embedding itself**")
    projection_tables(a.update_tokens(node, 8), stacked=True)


def _edge_panel(view: View) -> None:
    a = view.analysis
    tokens = readable_tokens(a)
    kind, level, src, dst = parse_edge(view.edge)
    layer = layer_of(level)
    st.subheader(f"{ {'ffn': 'FFN'}.get(kind, kind.capitalize())} edge")
    st.text(f"layer {layer}: {src} {visible(tokens[src])} → {dst} {visible(tokens[dst])}")
    if kind == "attention":
        per_head = a.head_contributions(layer, dst).per_source[:, src].numpy()
        st.metric("Weight (sum over heads)", f"{per_head.sum():.3f}")
        head = view.head[1] if view.head and view.head[0] == layer else None
        st.plotly_chart(
            figures.head_bar_figure(per_head, layer, selected=head, height=220),
            key="edge_heads",
            on_select="rerun",
            selection_mode="points",
            width="stretch",
        )
        if head is None:
            st.caption("Click a head to see what it wrote and to zero, mean-ablate or scale it here.")
        else:
            head_panel(view, layer, head, dst, key="graph_head")
    else:
        st.metric("Weight", f"{a.graph.node_edge_weight(kind, level, dst):.3f}")
        st.text(f"Into: {describe_node(a, view.node)}")


def head_panel(view: View, layer: int, head: int, position: int, key: str, stacked: bool = True) -> None:
    """One head at one token, in place: what its update promotes and suppresses, where it looks, and edits with their effect."""
    a = view.analysis
    st.markdown(f"**Head {head_name(layer, head)}** at token {position} ({token_md(readable_tokens(a)[position])})")
    intervene_controls(view, "head", layer, head, key=key)
    st.caption(f"Its direct effect on each logit at token {position} (as in direct logit attribution)")
    projection_tables(a.head_tokens(layer, position, head, k=8), stacked=stacked)
    st.caption(f"Its attention from token {position}")
    st.plotly_chart(figures.attention_from_figure(a, layer, head, position), key=f"{key}_attention", width="stretch")


def neuron_panel(view: View, layer: int, neuron: int, key: str, stacked: bool = False) -> None:
    """One neuron in place: edits with their effect, and what its value vector promotes and suppresses."""
    st.markdown(f"**Neuron {neuron_name(layer, neuron)}**")
    intervene_controls(view, "neuron", layer, neuron, key=key)
    st.caption(f"What it wrote at token {view.token} (activation × value vector): its direct effect on each logit")
    projection_tables(view.analysis.neuron_tokens(layer, neuron, view.token, k=8), stacked=stacked)


def intervene_controls(view: View, kind: str, layer: int, index: int, key: str) -> None:
    """Zero, mean-ablate or scale this head or neuron in one click; then the effect on the prediction, right here."""
    c1, c2 = st.columns(2)  # two rows of two: the panel beside the graph is narrow
    c3, c4 = st.columns(2, vertical_alignment="bottom")
    c3.number_input("factor", value=0.5, step=0.1, key=f"{key}_factor", label_visibility="collapsed")

    def add(mode: str) -> None:  # a callback, before the rerun: the page is drawn once, where the user was (no jump)
        set_edit(Edit(kind, layer, index, mode, float(ss[f"{key}_factor"]) if mode == "scale" else 0.0))
        ss._reveal = key  # and its effect is scrolled into view (the edits' notes above may push it below the fold)

    c1.button("Zero", key=f"{key}_zero", width="stretch", help=f"Set {kind} {unit_name(kind, layer, index)}'s output to 0",
              on_click=add, args=("zero",))  # fmt: skip
    c2.button("Mean", key=f"{key}_mean", width="stretch", help="At each token, its mean output over that token and the ones before",
              on_click=add, args=("mean",))  # fmt: skip
    c4.button("Scale", key=f"{key}_scale", width="stretch", help="Multiply its output by the factor on the left",
              on_click=add, args=("scale",))  # fmt: skip
    effect_readout(view, key=key)


def effect_readout(view: View, key: str, graph_toggle: bool = True) -> None:
    """Before/after: the target's probability and logit, the top predictions, and a toggle for the edited graph (not
    where both graphs are drawn below it: `graph_toggle`)."""
    result = intervention(view)
    if result is None:
        return
    if ss.get("_reveal") == key:
        reveal(f"{key}_readout")
        del ss._reveal
    with st.container(key=f"{key}_readout"):
        _readout(result, key, graph_toggle)


def _readout(result: InterventionResult, key: str, graph_toggle: bool) -> None:
    target = token_md(result.target.token)  # metric labels are Markdown
    st.caption("With the edits (" + ", ".join(describe_edit(e) for e in result.edits) + f"), at token {result.token}:")
    c1, c2 = st.columns(2)
    c1.metric(f"p of {target}", f"{result.prob_after:.3f}", f"{result.prob_after - result.prob_before:+.3f}")
    c2.metric(f"logit of {target}", f"{result.logit_after:.3f}", f"{result.logit_after - result.logit_before:+.3f}")
    table(before_after_table(result.before, result.after, 5), key=f"{key}_before_after")
    if not graph_toggle:
        return
    # one toggle per readout (a page can show two), all bound to the one shared "show_edited" flag
    widget = f"{key}_show_edited"
    ss[widget] = bool(ss.get("show_edited"))
    st.toggle(
        "Show the edited graph",
        key=widget,
        on_change=lambda: ss.update(show_edited=ss[widget]),
        help="Draw the graph of the edited run on the Graph page.",
    )


def before_after_table(before: list[TokenScore], after: list[TokenScore], k: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "before": [visible(s.token) for s in before[:k]],
            "p before": [round(s.score, 3) for s in before[:k]],
            "after": [visible(s.token) for s in after[:k]],
            "p after": [round(s.score, 3) for s in after[:k]],
        }
    )


def download_buttons(analysis: Analysis, token: int, threshold: float, node: str | None = None) -> None:
    """The current view as files: graph (JSON, GraphML), contributions and predictions (CSV); the paths to `node` if given.
    The Neuronpedia file carries the workbench's pins, groups and labels."""
    view = (token, threshold, node, curation_key())  # written once per view: a node click reuses them
    # written now, not on the press (Streamlit's deferred data): another session's rerun can drop a deferred file
    # before its press reaches the server ("Deferred file ... not found"), and the button then does nothing
    files = kept("exports", analysis, view, lambda: export_files(analysis, token, threshold, node, ss.get("curation")))
    with st.expander("Download this view"):
        mime = {"json": "application/json", "graphml": "application/xml", "csv": "text/csv"}
        for name, data in files.items():
            label = "graph for circuit-tracer / Neuronpedia (JSON)" if name == NEURONPEDIA_FILE else name
            st.download_button(label, data, file_name=name, mime=mime[name.rsplit(".", 1)[1]], key=f"download_{name}", width="stretch")


def intervention_panel(view: View) -> None:
    """Every edit (each removable), before/after predictions and the two graphs side by side."""
    if not view.edits:
        st.info("No edits yet. Click a head on the Graph page's edge panel or on the Contributions page, or a neuron there, "
                "and press Zero, Mean or Scale.")
        return
    for e in view.edits:
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.text(describe_edit(e))
        c2.button("Remove", key=f"remove_{e}", on_click=remove_edit, args=(str(e),))
    result = intervention(view)
    if result is None:
        return
    effect_readout(view, key="intervene_tab", graph_toggle=False)  # both graphs are drawn below
    left, right = st.columns(2)
    for column, caption, analysis, key in ((left, "Graph before", view.analysis, "graph_before"),
                                           (right, "Graph with the edits", result.analysis, "graph_after")):  # fmt: skip
        column.caption(caption)
        graph_chart(figures.graph_figure(analysis, analysis.paths_to(result.token, view.threshold), clicks=False), key, where=column)


def open_prompt(prompt: str) -> None:
    """Make `prompt` the analysed prompt (used by the Dataset page's links): as it is, so the chat toggle goes off."""
    ss.prompt, ss.chat = prompt, False
    start_run(ss.model, prompt)


def page_tabs(page: str) -> Sequence[DeltaGenerator]:
    """The page's tabs (state.TABS); the open one is kept in session state and in the link (tab=)."""
    return st.tabs(list(TABS[page]), key=f"{page}_tab", on_change="rerun")
