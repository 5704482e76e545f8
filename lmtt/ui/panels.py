"""Tables and panels shared by the pages: token tables, the selection panel, downloads, interventions."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from lmtt import figures
from lmtt.analysis import Analysis
from lmtt.edits import MODES, Edit
from lmtt.export import export_files
from lmtt.figures import describe_node, visible
from lmtt.graph import parse_node
from lmtt.interpret import Projection, TokenScore
from lmtt.ui.runs import intervention
from lmtt.ui.state import View, add_edit, clear_edits, parse_edge, select_node, ss

# ---- tables ---------------------------------------------------------------------


def token_table(scores: list[TokenScore], column: str) -> pd.DataFrame:
    """Tokens as text cells (a dataframe never renders markup), whitespace made visible."""
    return pd.DataFrame(
        {"token": [visible(s.token) for s in scores], "id": [s.token_id for s in scores], column: [s.score for s in scores]}
    )


def projection_tables(proj: Projection, stacked: bool = False) -> None:
    """Promoted and suppressed tokens side by side (or one above the other in a narrow panel)."""
    left, right = (st.container(), st.container()) if stacked else st.columns(2)
    left.caption("Promoted")
    left.dataframe(token_table(proj.promoted, "logit"), hide_index=True, width="stretch")
    right.caption("Suppressed")
    right.dataframe(token_table(proj.suppressed, "logit"), hide_index=True, width="stretch")


def neuron_table(analysis: Analysis, nc) -> pd.DataFrame:
    """The top neurons; in a mixture-of-experts layer each is named by its expert."""
    names = [analysis.neuron_label(nc.layer, n) for n in nc.neurons.tolist()]
    columns = {"neuron": names, "id": nc.neurons.numpy(), "contribution": nc.contributions.numpy(), "activation": nc.activations.numpy()}
    return pd.DataFrame(columns)


def token_md(token: str) -> str:
    """A token for Markdown-rendered text (captions, headers): visible whitespace, nothing interpreted."""
    return plain(visible(token))


def plain(text: str) -> str:
    """Text safe inside Markdown: Markdown, LaTeX ($) and HTML characters are escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~$<>&:])", r"\\\1", text)


# ---- the selection panel (Graph page) ----------------------------------------------


def selection_panel(view: View) -> None:
    """For a node: logit lens and what its block promoted; for an attention edge: its heads."""
    a = view.analysis
    if view.edge:
        _edge_panel(view)
    elif view.node:
        st.subheader("Node")
        st.text(describe_node(a, view.node))
    else:
        st.info("Click a node to see its logit lens, or an edge handle to see its heads.")
        return
    node = view.node
    st.markdown("**Logit lens**" + ("" if view.final_norm else " (no final norm)"))
    st.dataframe(token_table(a.logit_lens(node, 10, final_norm=view.final_norm), "prob"), hide_index=True, width="stretch")
    kind = parse_node(node)[0]
    st.markdown("**What its block wrote**" if kind != "embedding" else "**The embedding itself**")
    projection_tables(a.update_tokens(node, 8), stacked=True)


def _edge_panel(view: View) -> None:
    a = view.analysis
    kind, level, src, dst = parse_edge(view.edge)
    layer = (level - 1) // 2
    st.subheader(f"{kind.capitalize()} edge")
    st.text(f"layer {layer}: {src} {visible(a.tokens[src])} → {dst} {visible(a.tokens[dst])}")
    if kind == "attention":
        per_head = a.head_contributions(layer, dst).per_source[:, src].numpy()
        st.metric("Weight (sum over heads)", f"{per_head.sum():.3f}")
        st.plotly_chart(figures.edge_heads_figure(per_head), key="edge_heads", width="stretch")
    else:
        weights = a.contributions.ffn if kind == "ffn" else (a.contributions.attn_resid if level % 2 else a.contributions.ffn_resid)
        st.metric("Weight", f"{float(weights[layer, dst]):.3f}")
    st.text(f"Into: {describe_node(a, view.node)}")


def download_buttons(analysis: Analysis, token: int, threshold: float) -> None:
    """The current view as files: graph (JSON, GraphML), contributions and predictions (CSV)."""
    with st.expander("Download this view"):
        mime = {"json": "application/json", "graphml": "application/xml", "csv": "text/csv"}
        for name, data in export_files(analysis, token, threshold).items():
            st.download_button(name, data, file_name=name, mime=mime[name.rsplit(".", 1)[1]], key=f"download_{name}", width="stretch")


def edit_controls(kind: str, layer: int, index: int, key: str) -> None:
    """Buttons that add an edit of this head or neuron to the interventions."""
    c1, c2, c3 = st.columns([2, 1, 1])
    mode = c1.selectbox("Intervention", MODES, key=f"{key}_mode", label_visibility="collapsed")
    factor = c2.number_input("factor", value=0.5, step=0.1, key=f"{key}_factor", label_visibility="collapsed", disabled=mode != "scale")
    if c3.button(f"Add {kind} {layer}.{index}", key=f"{key}_add", width="stretch"):
        add_edit(Edit(kind, layer, index, mode, factor if mode == "scale" else 0.0))
        st.rerun()


def intervention_panel(view: View) -> None:
    """Edits, before/after predictions and the two graphs side by side."""
    if not view.edits:
        st.info("No interventions yet: add a head or neuron edit (Head and Neuron tabs, or the Contributions page).")
        return
    st.text("Edits: " + ", ".join(str(e) for e in view.edits))
    if st.button("Clear the edits", key="clear_edits"):
        clear_edits()
        st.rerun()
    result = intervention(view)
    if result is None:
        return
    target = visible(result.target.token)
    c1, c2 = st.columns(2)
    c1.metric(f"logit of {target}", f"{result.logit_after:.3f}", f"{result.logit_after - result.logit_before:+.3f}")
    c2.metric(f"probability of {target}", f"{result.prob_after:.3f}", f"{result.prob_after - result.prob_before:+.3f}")
    left, right = st.columns(2)
    left.caption("Before")
    left.dataframe(token_table(result.before, "prob"), hide_index=True, width="stretch")
    right.caption("After")
    right.dataframe(token_table(result.after, "prob"), hide_index=True, width="stretch")
    left, right = st.columns(2)
    left.caption("Graph before")
    left.plotly_chart(
        figures.graph_figure(view.analysis, view.analysis.paths_to(result.token, view.threshold)), key="graph_before", width="stretch"
    )
    right.caption("Graph with the edits")
    right.plotly_chart(
        figures.graph_figure(result.analysis, result.analysis.paths_to(result.token, view.threshold)), key="graph_after", width="stretch"
    )


def open_prompt(prompt: str) -> None:
    """Make `prompt` the analysed prompt (used by the Dataset page's links)."""
    ss.prompt = prompt
    ss.run, ss.token = (ss.model, prompt), None
    select_node(None)
