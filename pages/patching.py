"""Patching: put clean activations into a corrupted prompt's run and see where the answer comes back."""

import streamlit as st

from lmtt import ui
from lmtt.engine.runner import PromptError
from lmtt.questions.patching import check_lengths
from lmtt.ui.questions import answered_on, on_button, target_picker
from lmtt.viz import questions as qf

st.set_page_config(page_title="Patching · lmtt", layout="wide")
view = ui.sidebar("patching")
st.title("Patching")
if view is None:
    st.stop()

a = answered_on(view, follows_edits=False)
corrupted = st.text_input(
    "Corrupted prompt (same number of tokens)",
    max_chars=view.config.max_prompt_chars,
    placeholder="e.g. The capital of Italy is",
    **ui.bound("patch"),
)
target = target_picker(view)
if target is None:
    st.stop()
if not corrupted.strip():
    st.info("The sidebar's prompt is the clean run. Enter a corrupted prompt of the same token length, e.g. 'The capital of Italy is'.")
    st.stop()
try:
    check_lengths(len(a.tokens), a.runner.tokenize(corrupted).numel())  # said before the button, not after a press
    result = on_button(
        ("patching", a.model_name, a.tokens, corrupted, target),
        "patching",
        "Run patching",
        "Patching",
        lambda steps: a.patching(corrupted, target, on_progress=steps),
    )
except PromptError as e:
    st.error(str(e))
    st.stop()
if result is None:
    st.info("Press Run patching: it patches every layer at every position, and every head (a batched pass per 128 cells).")
    st.stop()
st.markdown(
    f"{ui.plain(target.describe())}: clean **{result.clean_value:.3f}**, corrupted **{result.corrupted_value:.3f}**. "
    f"Each cell: the fraction of that difference restored by patching one clean activation "
    f"({result.passes} batched passes, {result.seconds:.1f} s)."
)
tabs = ui.page_tabs("patching")
for tab, grid in zip(tabs, ("resid", "attn", "ffn", "heads")):
    with tab:
        st.plotly_chart(qf.patching_heatmap(result, grid), key=f"patch_{grid}", width="stretch")
