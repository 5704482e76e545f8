"""Patching: put clean activations into a corrupted prompt's run and see where the answer comes back."""

import streamlit as st

from lmtt import ui
from lmtt.engine.runner import PromptError, check_prompt
from lmtt.questions.patching import GRIDS, check_lengths
from lmtt.ui.questions import answered_on, on_button, target_picker
from lmtt.ui.state import TABS
from lmtt.viz import questions as qf

st.set_page_config(page_title="Patching · lmtt", layout="wide")
view = ui.sidebar("patching")
st.title("Patching")
if view is None:
    st.stop()

a = answered_on(view, follows_edits=False)
corrupted = st.text_input(  # no max_chars: a browser cuts an over-long paste silently; the check below says why instead
    "Corrupted prompt (same number of tokens)",
    placeholder="e.g. The capital of Italy is",
    **ui.bound("patch"),
)
target = target_picker(view)
if target is None:
    st.stop()
if not corrupted.strip():
    st.info(
        f"The analysed prompt ({len(a.tokens)} tokens) is the clean run. "
        "Enter a corrupted prompt of the same token length, e.g. 'The capital of Italy is'."
    )
    st.stop()
try:
    check_prompt(corrupted, view.config.max_prompt_chars)
except PromptError as e:
    st.error(f"The corrupted prompt cannot be used: {ui.plain(str(e))}. Your text stays in the box.")
    st.stop()
try:
    check_lengths(len(a.tokens), a.runner.tokenize(corrupted).numel())  # said before the button, not after a press
except PromptError as e:
    st.error(ui.plain(str(e)))
    st.stop()
# one grid per tab, patched when its tab is open and Run patching is pressed: the first answer comes 4x sooner
tabs = ui.page_tabs("patching")
label = ui.ss.get("patching_tab") or TABS["patching"][0]
grid = dict(zip(TABS["patching"], GRIDS))[label]
width = a.n_heads if grid == "heads" else len(a.tokens)
with tabs[TABS["patching"].index(label)]:
    result = on_button(
        ("patching", a.model_name, a.tokens, corrupted, target, grid),
        f"patching_{grid}",
        "Run patching",
        f"Patching ({label.lower()})",
        lambda steps: a.patching(corrupted, target, on_progress=steps, sites=(grid,)),
    )
    if result is None:
        cells = f"the {label.lower()} of every layer at every position"
        cells = "each head of every layer, at every position at once" if grid == "heads" else cells
        st.info(
            f"Press Run patching: it patches {cells}, one cell at a time ({a.n_layers * width} cells, batched by 128). "
            "Each tab is its own run."
        )
        st.stop()
    st.markdown(
        f"{ui.quantity_md(target)}: clean **{result.clean_value:.3f}**, corrupted **{result.corrupted_value:.3f}**. "
        f"Each cell: the fraction of that difference restored by patching one clean activation "
        f"({result.passes} batched passes, {result.seconds:.1f} s)."
    )
    ui.chart(qf.patching_heatmap(result, grid), key=f"patch_{grid}")
