"""Faithfulness: run the model with only the route and see how much of the target it keeps."""

import streamlit as st

from lmtt import ui
from lmtt.questions.faithfulness import DEFAULT_THRESHOLDS
from lmtt.ui.questions import LOG_PROB, answered_on, curve_table, memo, on_button, target_picker
from lmtt.viz import questions as qf

st.set_page_config(page_title="Faithfulness · lmtt", layout="wide")
view = ui.sidebar("faithfulness")
st.title("Faithfulness")
if view is None:
    st.stop()

a = answered_on(view)
target = target_picker(view, a, default_contrast=LOG_PROB)
if target is None:
    st.stop()
ablation = st.radio("Parts outside the route become", ("mean", "zero"), horizontal=True, key="q_ablation")
st.caption(
    "Every head's (source) parts and every FFN outside paths_to(token, threshold) are knocked out in one forward pass "
    "(mean: replaced by their mean over that position and the ones before). "
    "Faithfulness = (m(route) - m(nothing)) / (m(model) - m(nothing)) for the quantity m; 1 keeps everything, 0 nothing. "
    "Residual edges and biases are always kept."
)
key = (a.model_name, a.tokens, a.trace.edits, target, ablation)
f = memo(("faithfulness", *key, view.threshold), lambda: a.faithfulness(view.threshold, target, ablation))
c1, c2, c3 = st.columns(3)
c1.metric(f"Faithfulness of {ui.quantity_md(f.target)} at threshold {view.threshold:.3f}", qf.number(f.faithfulness),
          help=f"{f.edges} edges. The fraction of the way from m(nothing) to m(model) that the route keeps, m being this "
          "quantity: on a log scale, so not a fraction of p(A) (that is p(A) kept, beside it)")  # fmt: skip
c2.metric("p(A) kept", qf.number(f.prob_kept, significant=True), help=f"p(A) {f.prob_route:.3g} of {f.prob_full:.3g}")
c3.metric("Route's top prediction", ui.token_md(f.top_route))


# The curve runs in the page's own run, not in a fragment: a fragment's Cancel would only queue behind the passes
# (Streamlit lets no widget in a fragment interrupt a running script), so the curve would finish and be drawn.
curve = on_button(
    ("curve", *key),
    "curve",
    "Draw the faithfulness curve",
    "Faithfulness curve",
    lambda steps: a.faithfulness_curve(target=target, ablation=ablation, on_progress=steps),
    units="steps (the means, then the routes)",
)
if curve is None:
    st.info(
        f"The curve runs the model once per threshold ({len(DEFAULT_THRESHOLDS)} thresholds, as the rows of batched passes): "
        "press Draw the faithfulness curve."
    )
    st.stop()
ui.chart(qf.faithfulness_curve_figure(curve), key="faithfulness_curve")
table, columns = curve_table(curve)
ui.table(table, column_config=columns, every_row=True)  # the low thresholds, where faithfulness climbs, are its last rows
