"""Faithfulness: run the model with only the route and see how much of the target it keeps."""

import pandas as pd
import streamlit as st

from lmtt import ui
from lmtt.ui.questions import memo, target_picker
from lmtt.viz import questions as qf

st.set_page_config(page_title="Faithfulness · lmtt", layout="wide")
view = ui.sidebar("faithfulness")
st.title("Faithfulness")
if view is None:
    st.stop()

a = view.analysis
target = target_picker(view)
if target is None:
    st.stop()
ablation = st.radio("Parts outside the route become", ("zero", "mean"), horizontal=True, key="q_ablation")
st.caption(
    "Every head's (source) parts and every FFN outside paths_to(token, threshold) are knocked out in one forward pass "
    "(mean: replaced by their mean over positions). Faithfulness = (m(route) - m(nothing)) / (m(model) - m(nothing)) "
    "for the quantity m; 1 keeps everything, 0 nothing. Residual edges and biases are always kept."
)
key = (a.model_name, a.tokens, target, ablation)
f = memo(("faithfulness", *key, view.threshold), lambda: a.faithfulness(view.threshold, target, ablation))
c1, c2, c3 = st.columns(3)
c1.metric(f"Faithfulness at threshold {view.threshold:.3f}", f"{f.faithfulness:.3f}", help=f"{f.edges} edges")
c2.metric("p(A) kept", f"{f.prob_kept:.3f}", help=f"p(A) {f.prob_route:.3f} of {f.prob_full:.3f}")
c3.metric("Route's top prediction", ui.plain(repr(f.top_route)))
curve = memo(("curve", *key), lambda: a.faithfulness_curve(target=target, ablation=ablation))
st.plotly_chart(qf.faithfulness_curve_figure(curve), key="faithfulness_curve", width="stretch")
st.dataframe(pd.DataFrame([p.to_dict() for p in curve.points]), hide_index=True, width="stretch")
