"""Dataset: paste or upload prompts, run them as a batch, and see which heads and neurons matter across them."""

import math

import pandas as pd
import streamlit as st

from lmtt import ui
from lmtt.engine.levels import head_name, neuron_name
from lmtt.engine.tokens import visible
from lmtt.questions import batch
from lmtt.questions.neurons import glu_quadrants
from lmtt.ui.progress import Steps, cancelled
from lmtt.ui.questions import memo
from lmtt.ui.runs import dataset_limit, dataset_neuron, run_dataset
from lmtt.viz import figures

st.set_page_config(page_title="Dataset · lmtt", layout="wide")
clicks = [ui.chart_click(key) for key in ("dataset_heads", "dataset_share")]  # both heatmaps: a cell opens its head
click = next((c for c in clicks if c), None)
ui.sidebar("dataset", require_analysis=False)
st.title("Dataset")
config = ui.read_config()
if config is None:
    st.stop()
limit = dataset_limit(config)

st.caption(
    f"Paste prompts (one per line) or upload a text file, then run them with the sidebar's model (at most {limit}). "
    "The results stay in this browser session."
)
left, right = st.columns([2, 1])
example = "The capital of France is\nThe capital of Italy is"
pasted = left.text_area("Prompts, one per line", height=150, key="dataset_text", placeholder=example)
upload = right.file_uploader("…or a .txt file", type=["txt"], key="dataset_file")
lines = [line for line in pasted.splitlines() if line.strip()]
if upload is not None:
    try:
        lines += [line for line in upload.getvalue().decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        st.error("The file is not UTF-8 text.")
if len(lines) > limit:
    st.warning(f"{len(lines)} prompts: only the first {limit} are run.")
    lines = lines[:limit]
if note := cancelled("dataset"):
    st.warning(f"{note} The prompts that finished are below.")
if right.button(f"Run {len(lines)} prompt{'s' * (len(lines) != 1)}", type="primary", disabled=not lines, key="dataset_run"):
    ui.ss.dataset_results, ui.ss.dataset_head, errors = [], None, []  # filled as prompts finish: Cancel keeps them
    steps = Steps("dataset", "Dataset", "prompts")
    try:
        run_dataset(config, ui.ss.model, lines, ui.ss.dataset_results, errors, steps)
    finally:
        steps.close()
    for message in errors:
        st.warning(f"Skipped {message}")

summaries = ui.ss.get("dataset_results") or []
if not summaries:
    st.info("No results yet: add prompts and press Run.")
    st.stop()
agg = batch.aggregate(summaries)
st.caption(
    f"{agg['prompts']} prompts. A head's importance is its direct effect on each prompt's prediction: on logit(A) - logit(B) "
    "at the last token, A the top prediction and B the runner-up, in logits (positive: it helps A win). A head matters for "
    f"a prompt when its |effect| is at least {agg['important_fraction']:.0%} of the prompt's largest. Lists: the largest "
    "mean |effect| first."
)
left, right = st.columns(2)
left.markdown("**Mean direct effect on the prediction, logits** (click a head)")
right.markdown("**Share of prompts where each head matters** (click a head)")
for where, values, key, signed in ((left, "mean_head_effect", "dataset_heads", True), (right, "head_prompt_share", "dataset_share", False)):
    where.plotly_chart(figures.head_importance_heatmap(agg[values], signed=signed), key=key, on_select="rerun", selection_mode="points",
                       width="stretch")  # fmt: skip
c1, c2, c3 = st.columns(3)
c1.markdown("**Important for every prompt**")
ui.table(pd.DataFrame([(head_name(l, h), *rest) for l, h, *rest in agg["always_important_heads"]], columns=["head", "mean effect"]), c1)
c2.markdown("**Important for some prompts**")
sometimes = [(head_name(l, h), *rest) for l, h, *rest in agg["sometimes_important_heads"]]
ui.table(pd.DataFrame(sometimes, columns=["head", "mean effect", "share of prompts"]), c2)
c3.markdown("**Most frequent top neurons** (by |direct effect|)")
neurons = [(neuron_name(l, n), *rest) for l, n, *rest in agg["frequent_neurons"]]
ui.table(pd.DataFrame(neurons, columns=["neuron", "prompts", "mean effect"]), c3)

st.subheader("A neuron over the dataset: GLU sign quadrants")
st.caption(
    "GLUScope's four cases of a gated neuron, act(gate) × up, by the signs of the gate's pre-activation and of the up "
    "projection, at every position of every prompt: how often each occurs, its mean activation, and its largest examples."
)
top_neuron = agg["frequent_neurons"][0] if agg["frequent_neurons"] else (0, 0, 0, 0.0)
n1, n2 = st.columns(2)
glu_layer = int(n1.number_input("Layer", 0, 10_000, int(top_neuron[0]), key="dataset_glu_layer"))
glu_neuron = int(n2.number_input("Neuron", 0, 10**6, int(top_neuron[1]), key="dataset_glu_neuron"))
try:
    prompts = [s["prompt"] for s in summaries]
    model = summaries[0].get("model") if summaries else None
    model = model if model in config.models else ui.ss.model  # the model the dataset ran on
    key = ("glu", model, tuple(prompts), glu_layer, glu_neuron)  # once per choice, not on every rerun of the page
    stats = memo(key, lambda: glu_quadrants(dataset_neuron(config, model, prompts, glu_layer, glu_neuron)))
except (ValueError, IndexError) as e:
    st.info(ui.plain(str(e)))
else:
    mean = ["— (no position)" if math.isnan(q.mean_activation) else f"{q.mean_activation:.3g}" for q in stats]  # not "None"
    ui.table([{"quadrant (gate, up)": q.quadrant, "positions": q.count, "share": q.share, "mean activation": m}
              for q, m in zip(stats, mean)])  # fmt: skip
    examples = [
        {"quadrant": q.quadrant, "activation": a, "token": visible(t), "position": i, "prompt": prompts[p]}
        for q in stats for a, p, i, t in q.examples
    ]  # fmt: skip
    ui.table(examples)

if click and "customdata" in click:
    layer, head = click["customdata"]
    ui.ss.dataset_head = (int(layer), int(head))
if ui.ss.get("dataset_head"):
    layer, head = ui.ss.dataset_head
    st.subheader(f"Head {head_name(layer, head)}: the prompts where it mattered most")
    ranked = batch.prompts_where_head_mattered(summaries, layer, head)
    ui.table(pd.DataFrame(ranked, columns=["direct effect", "prompt"]))
    choice = st.selectbox("Open a prompt on the Interpretation page", [p for _, p in ranked], key="dataset_open")
    if st.button("Open", key="dataset_open_go"):
        ui.open_prompt(choice)
        ui.select_head(layer, head)
        st.switch_page("pages/interpretation.py")
