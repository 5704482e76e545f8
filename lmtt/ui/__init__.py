"""The Streamlit layer: the only part of lmtt that imports Streamlit (with app.py and pages/).

Pages use it as `from lmtt import ui` and call `ui.sidebar(PAGE)` first.
"""

from lmtt.ui.panels import (
    download_buttons,
    effect_readout,
    graph_view,
    head_panel,
    intervention_panel,
    mark_node,
    neuron_panel,
    neuron_table,
    open_prompt,
    page_tabs,
    plain,
    projection_tables,
    scroll_box,
    selection_panel,
    token_md,
    token_table,
)
from lmtt.ui.runs import fetch_analysis, intervention, read_config
from lmtt.ui.sidebar import sidebar
from lmtt.ui.state import (
    PAGES,
    View,
    bound,
    chart_click,
    curation_key,
    focus_layer,
    kept,
    select_edge,
    select_head,
    select_neuron,
    select_node,
    ss,
)

__all__ = [
    "PAGES",
    "View",
    "bound",
    "chart_click",
    "curation_key",
    "download_buttons",
    "effect_readout",
    "fetch_analysis",
    "focus_layer",
    "head_panel",
    "intervention",
    "intervention_panel",
    "kept",
    "graph_view",
    "mark_node",
    "neuron_panel",
    "neuron_table",
    "open_prompt",
    "page_tabs",
    "plain",
    "projection_tables",
    "read_config",
    "scroll_box",
    "select_edge",
    "select_head",
    "select_neuron",
    "select_node",
    "selection_panel",
    "sidebar",
    "ss",
    "token_md",
    "token_table",
]
