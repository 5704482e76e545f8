"""Target: direct logit attribution of a target token (and a contrast), logit lens of A, B and A - B, boosters and suppressors."""

import pandas as pd
import streamlit as st

from lmtt import ui
from lmtt.analysis import DEFAULT_MIN_EFFECT
from lmtt.engine.levels import head_name
from lmtt.engine.tokens import visible
from lmtt.ui.questions import answered_on, qk_picker, target_picker
from lmtt.ui.workbench import workbench
from lmtt.viz import figures
from lmtt.viz import questions as qf

st.set_page_config(page_title="Target · lmtt", layout="wide")
click = ui.chart_click("target_graph")  # before the sidebar, so the link shows the new selection
if click and isinstance(click.get("customdata"), str) and not click["customdata"].startswith(("edge|", "token|")):
    ui.select_node(click["customdata"])
view = ui.sidebar("target")
st.title("Target")
if view is None:
    st.stop()

a = answered_on(view)
target = target_picker(view, a)
if target is None:
    st.stop()
effects = a.direct_effects(target)
st.markdown(
    f"**{ui.quantity_md(target)}** at token {target.position} ({ui.token_md(a.tokens[target.position])}) "
    f"= **{effects.value:.3f}**; the direct effects below sum to {effects.total:.3f} "
    f"(final-norm scale frozen at {effects.scale:.4g}; the logit before any softcapping)."
)
graph_tab, heads_tab, neurons_tab, lens_tab, qk_tab = ui.page_tabs("target")

with graph_tab:
    c1, c2 = st.columns([1, 2])
    why = "Heads and FFNs with a large direct effect, even off the flow graph"
    show = c1.toggle("Show boosters and suppressors", value=True, key="q_direct", help=why)
    min_effect = c2.slider("Direct effect at least (logits)", 0.0, 10.0, DEFAULT_MIN_EFFECT, 0.1, key="q_min_effect")
    direct = a.direct_edges(target, min_effect) if show else []
    sub = a.paths_to(target.position, view.threshold)
    curated = {"curation": ui.ss.get("curation"), "subgraph_only": bool(ui.ss.get("subgraph_only"))}
    drawn = (target, show, min_effect, view.threshold, ui.curation_key(), curated["subgraph_only"])  # what it shows
    fig = ui.kept("target_graph", a, drawn, lambda: qf.target_graph_figure(a, sub, a.target_lens(target), direct, **curated))
    ui.scroll_box("target_graph_box", figures.figure_min_width(fig))  # a long prompt scrolls sideways, as on the Graph page
    ui.graph_chart(fig, "target_graph", clickable=True, where=st.container(key="target_graph_box"))
    ui.mark_node("target_graph", view.node)
    workbench(a, sub, view.node)
    st.caption(
        "Nodes on the route are coloured by the logit lens of the quantity at their state. "
        "Dashed edges: direct effects (green boosts, purple suppresses), drawn whatever their flow weight."
    )
    if direct:
        ui.table(
            pd.DataFrame(
                {
                    "component": [e.name for e in direct],
                    "role": ["booster" if e.effect > 0 else "suppressor" for e in direct],
                    "direct effect": [e.effect for e in direct],
                    "from": [figures.describe_node(a, e.from_node) for e in direct],  # as the Graph page's panel names nodes
                    "into": [figures.describe_node(a, e.into) for e in direct],
                }
            ),
        )

with heads_tab:
    st.plotly_chart(qf.head_effect_heatmap(effects), key="head_effects", width="stretch")
    ui.table(pd.DataFrame([{"head": c.name, "direct effect": c.value} for c in effects.top_heads(15)]))

with neurons_tab:
    st.plotly_chart(qf.neuron_effect_figure(effects, 20), key="neuron_effects", width="stretch")
    st.caption("Each neuron's activation at this token times its value vector, read through the frozen final norm.")
    top_neurons = effects.top_neurons(20)
    pick = st.selectbox(
        "Neuron to trust or not (GLU parts at every position)",
        range(len(top_neurons)),
        format_func=lambda k: f"{top_neurons[k].name}: {top_neurons[k].value:+.3f}",
        key=f"q_neuron_{target.token_id}_{target.contrast_id}",
    )
    try:
        profile = a.neuron_profile(top_neurons[pick].layer, top_neurons[pick].index)
    except ValueError as e:
        st.info(ui.plain(str(e)))
    else:
        c1, c2 = st.columns(2)
        c1.metric("Gate open (share of positions)", f"{profile.active_share:.2f}")
        c2.metric("Mean |activation|", f"{profile.mean_abs:.3f}")
        ui.table(
            pd.DataFrame(
                {
                    "token": [f"{p}: {visible(t)}" for p, t in enumerate(a.tokens)],
                    "gate (pre)": profile.gate_pre.numpy(),
                    "act(gate)": profile.gate_act.numpy(),
                    "up": profile.up.numpy(),
                    "activation": profile.product.numpy(),
                    "quadrant (gate, up)": profile.quadrants,
                }
            ),
        )

with lens_tab:
    lens = a.target_lens(target)
    choices = ["A - B", "A", "B"] if lens.b is not None else ["A"]
    which = st.radio("Show", choices, horizontal=True, key="q_lens")
    values = {"A - B": lens.quantity, "A": lens.a, "B": lens.b}[which].numpy()
    shown = visible
    name = {"A - B": target.describe(shown), "A": f"logit({shown(target.token)})", "B": f"logit({shown(target.contrast or '')})"}[which]
    st.plotly_chart(qf.lens_value_heatmap(a, values, f"Logit lens of {name}", centre=which == "A - B"), key="target_lens", width="stretch")

with qk_tab:
    # the head the user came from (clicked on the Graph or Contributions page), else the strongest head for the target
    top = effects.top_heads(1)[0]
    layer, head, key_pos, other_pos = qk_picker(a, target, effects, view.head or (top.layer, top.index))
    st.plotly_chart(
        qf.key_scores_figure(a.key_scores(layer, head, target.position), a.tokens, key_pos), key="qk_keys", width="stretch"
    )
    try:
        result = a.qk_attribution(layer, head, target.position, key_pos)
        other = None if other_pos is None else a.qk_attribution(layer, head, target.position, other_pos)
    except ValueError as e:
        st.info(ui.plain(str(e)))
    else:
        st.markdown(
            f"Score of head {head_name(layer, head)} from token {target.position} to token {key_pos}: **{result.score:.3f}** "
            f"= the sum of the {len(result.parts)}² (query part, key part) pairs ({float(result.pairs.sum()):.3f}). "
            "Every norm on the way is frozen at its scale; the rotary embedding is the linear map it is."
            + ("" if other is None else f" Against token {other_pos}: {other.score:.3f} (difference {result.score - other.score:+.3f}).")
        )
        st.plotly_chart(qf.qk_parts_figure(result, a.tokens, other), key="qk_parts", width="stretch")
        st.plotly_chart(qf.qk_heatmap(result), key="qk_pairs", width="stretch")
        ui.table(pd.DataFrame(result.top(12), columns=["query part", "key part", "score"]))
