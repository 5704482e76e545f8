"""The FFN view of a mixture-of-experts layer: each chosen expert's share, and edits of an expert."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lmtt.engine.edits import Edit
from lmtt.engine.levels import unit_name
from lmtt.ui.panels import effect_readout
from lmtt.ui.state import View, set_edit, ss


def experts_panel(view: View, layer: int, position: int) -> None:
    """Shown above the neurons where the layer routes tokens to experts; nothing for a dense FFN."""
    analysis = view.analysis
    if analysis.runner.layer_weights[layer].n_experts == 0:
        return
    ec = analysis.expert_contributions(layer, position)
    st.subheader(f"Experts at layer {layer}")
    shared = "" if ec.shared is None else f", shared expert {ec.shared:.3f}"
    st.caption(
        f"The router chose {len(ec.experts)} experts here. Residual share {ec.residual:.3f} (the graph's residual edge); "
        f"the experts{' and the shared expert' if shared else ''} split its FFN edge{shared}."
    )
    table = pd.DataFrame(
        {
            "expert": ec.experts.numpy(),
            "router weight": ec.router_weights.numpy().round(4),
            "contribution": ec.contributions.numpy().round(4),
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")
    c1, c2, c3 = st.columns([2, 1, 1])
    expert = c1.selectbox("Expert to edit", ec.experts.tolist(), key="expert_pick", format_func=lambda e: f"expert {e}")
    c2.number_input("scale", value=0.0, step=0.1, key="expert_factor", help="0 removes the expert wherever it was chosen")

    def add() -> None:  # a callback, before the rerun (the widgets' values as the user left them): no jump
        chosen, scale = int(ss["expert_pick"]), float(ss["expert_factor"])
        set_edit(Edit("expert", layer, chosen, "scale", scale) if scale else Edit("expert", layer, chosen))

    c3.button(f"Edit expert {unit_name('expert', layer, expert)}", key="expert_add", width="stretch", on_click=add)
    neuron_panel_shown = view.neuron is not None and view.neuron[0] == layer  # it shows the same readout below
    if any(e.kind == "expert" and e.layer == layer for e in view.edits) and not neuron_panel_shown:
        effect_readout(view, key="experts")
