"""Interpretation: what a head or a neuron writes, in vocabulary terms, the logit lens, and the edits."""

import logging

import streamlit as st

from lmtt import ui
from lmtt.engine.levels import head_name
from lmtt.engine.runner import PromptError
from lmtt.engine.tokens import readable_tokens, token_text, visible
from lmtt.questions import dla
from lmtt.questions.lens import follow_token
from lmtt.questions.vocabulary import TokenScore
from lmtt.ui.questions import memo
from lmtt.viz import figures

log = logging.getLogger("lmtt.app")
st.set_page_config(page_title="Interpretation · lmtt", layout="wide")
view = ui.sidebar("interpretation")
st.title("Interpretation")
if view is None:
    st.stop()
ui.unedited_note(view, except_in="the edits' readouts in its Head, Neuron and Intervene tabs")

a = view.analysis
_, _, position = view.focus()
at_token = f"token {position} ({ui.token_md(readable_tokens(a)[position])})"  # where the head and neuron tabs read
head_tab, neuron_tab, lens_tab, search_tab, probe_tab, edit_tab = ui.page_tabs("interpretation")


def look_up(projection, key: str) -> None:
    """Any token's value in a projection: 'what does this head do to ␣Paris?'"""
    typed = st.text_input("Look up a token's effect", key=key, placeholder="e.g.  Paris (mind the leading space)")
    if typed:
        try:
            token_id = a.target(position, typed).token_id
        except ValueError as e:
            st.warning(ui.plain(str(e)))
        else:
            st.metric(f"Direct effect on logit({ui.token_md(token_text(a.runner, token_id))})", f"{projection.effect_on(token_id):+.3f}")


def choose(name: str, limit: int, label: str) -> tuple[int, int] | None:
    """Layer and index inputs for a head or neuron, bound to the selection; None until both are given. A box that
    reports empty keeps the selection (the box then shows it again): two CI runs found head 23.4 gone, the Head tab
    open with empty boxes, and no new run; its cause is not known, so each such report is logged (lmtt.app)."""
    keys = (f"_w_{name}_layer", f"_w_{name}_index")
    pair = ui.ss.get(name)
    if pair and (ui.ss.get(keys[0]), ui.ss.get(keys[1])) != pair:
        ui.ss[keys[0]], ui.ss[keys[1]] = pair
    elif pair is None and None not in (ui.ss.get(keys[0]), ui.ss.get(keys[1])):
        ui.ss[keys[0]] = ui.ss[keys[1]] = None  # the selection was cleared (a new run)

    def changed() -> None:
        layer, index = ui.ss[keys[0]], ui.ss[keys[1]]
        if layer is None or index is None:
            log.info("%s %s kept: a box reported empty (layer %s, index %s)", name, ui.ss.get(name), layer, index)
            return
        ui.ss[name] = (int(layer), int(index))

    c1, c2 = st.columns(2)
    c1.number_input("Layer", 0, a.n_layers - 1, value=None, key=keys[0], on_change=changed)
    c2.number_input(label, 0, limit - 1, value=None, key=keys[1], on_change=changed)
    return ui.ss.get(name)


with head_tab:
    chosen = choose("head", a.n_heads, "Head")
    if chosen is None:
        st.info("Choose a layer and a head (or click a head on the Graph or Contributions page).")
    else:
        layer, head = chosen
        st.subheader(f"Head {head_name(layer, head)}: its update at {at_token}")
        left, right = st.columns([1.3, 1])
        head_projection = a.head_tokens(layer, position, head, k=10)
        left.plotly_chart(figures.projection_figure(head_projection), key="head_projection", width="stretch")
        with left:
            look_up(head_projection, "head_lookup")
        with right:
            ui.head_panel(view, layer, head, position, key="interp_head")
        st.markdown("**Attention pattern**")
        st.plotly_chart(figures.attention_pattern_figure(a, layer, head), key="head_pattern", width="stretch")

with neuron_tab:
    n_neurons = max(w.w_down.shape[0] for w in a.runner.layer_weights)  # MoE layers: every expert's neurons, then the shared ones
    chosen = choose("neuron", n_neurons, "Neuron")
    if chosen is None:
        st.info("Choose a layer and a neuron (or click a neuron on the Contributions page).")
    else:
        layer, neuron = chosen
        st.subheader(f"Neuron {a.neuron_label(layer, neuron)}")
        left, right = st.columns([1.3, 1])
        left.markdown("**Activation across the prompt**")
        left.plotly_chart(figures.neuron_activation_figure(a, layer, neuron), key="neuron_acts", width="stretch")
        projection = a.neuron_tokens(layer, neuron, position, k=10)
        left.markdown(f"**What it writes at {at_token}**: its effect on each token's logit")
        left.plotly_chart(figures.projection_figure(projection), key="neuron_projection", width="stretch")
        with left:
            look_up(projection, "neuron_lookup")
        with right:
            ui.neuron_panel(view, layer, neuron, key="interp_neuron", stacked=True)

with search_tab:
    c1, c2 = st.columns([1.4, 1])
    wanted = c1.text_input("Token", key="search_token", placeholder="e.g.  Paris (mind the leading space)")
    way = c2.radio("Heads and neurons that", ("promote it", "suppress it"), horizontal=True, key="search_way")
    if not wanted:
        st.info("Type a token: the heads and neurons that push its logit up (or down), in this prompt and from the weights alone.")
    else:
        try:
            promote = way == "promote it"
            key = ("search", a.model_name, a.tokens, view.token, wanted, promote)
            found = memo(key, lambda: a.search_token(wanted, view.token, 10, promote))
        except ValueError as e:
            st.warning(ui.plain(str(e)))
        else:
            st.caption(
                f"{ui.token_md(found.token)} (id {found.token_id}), in {found.seconds:.2f} s. **In this prompt**: direct effects on its "
                f"logit at token {found.position}, in logits, as on the Target page. **From the weights**: a neuron's value vector "
                "and a head's copying score (attending to the token itself) read along its unembedding through the final "
                "norm's gain, per unit, the position's norm scale left out. Select a row to open the head or neuron."
            )
            # (title, hits, what the score is): the four tables' scores are in different units
            tables = (("In this prompt: heads", found.in_context_heads, "direct effect (logits)"),
                      ("In this prompt: neurons", found.in_context_neurons, "direct effect (logits)"),
                      ("From the weights: heads", found.weight_heads, "copying score"),
                      ("From the weights: neurons", found.weight_neurons, "direct effect per unit of activation (logits)"))  # fmt: skip
            columns = st.columns(2) + st.columns(2)
            for n, (column, (title, hits, unit)) in enumerate(zip(columns, tables)):
                column.markdown(f"**{title}**")
                names = [h.name if h.kind == "head" else a.neuron_label(h.layer, h.index) for h in hits]  # with its expert, if any
                picked = column.dataframe(
                    {"component": names, unit: [h.score for h in hits]},
                    hide_index=True,
                    width="stretch",
                    on_select="rerun",
                    selection_mode="single-row",
                    key=f"search_hits_{n}",
                    column_config={unit: st.column_config.NumberColumn(format="%+.3g")},
                )
                rows = tuple(picked.selection.rows) if picked else ()
                seen = f"_search_seen_{n}"
                if rows != ui.ss.get(seen):  # act on a new selection only: the Head and Neuron tabs may choose others since
                    ui.ss[seen] = rows
                    if rows:
                        hit = hits[rows[0]]
                        ui.ss[hit.kind] = (hit.layer, hit.index)
                        st.rerun()
                if rows:
                    hit = hits[rows[0]]
                    column.caption(f"{hit.name} is selected: open the {'Head' if hit.kind == 'head' else 'Neuron'} tab.")

with probe_tab:
    st.caption(
        "A direction w of the model's width (a linear probe, a steering vector), read at a node's residual state x: "
        "w · x splits exactly over the embedding, every head, neuron and bias below that node."
    )
    c1, c2 = st.columns([1.4, 1])
    upload = c1.file_uploader("Direction (.npy or .pt, shape (d,))", type=["npy", "pt"], key="probe_file")
    top_node = f"ffn:{a.n_layers - 1}:{view.token}"
    probe_node = c2.text_input("Read at node", value=view.node or top_node, key="probe_node", help="e.g. ffn:12:3, attn:5:2")
    if upload is not None:
        try:
            w = dla.load_direction(upload.getvalue(), a.trace.d_model, upload.name)
            read = a.probe_effects(w, probe_node.strip())
        except (ValueError, IndexError) as e:
            st.warning(ui.plain(str(e)))
        else:
            st.metric(f"w · x at {read.node}", f"{read.value:+.4f}", help=f"components sum to {read.total:+.4f}")
            left, right = st.columns(2)
            left.markdown("**Heads**")
            ui.table({"head": [c.name for c in read.top_heads(10)], "effect": [c.value for c in read.top_heads(10)]}, left)
            right.markdown("**Neurons**")
            ui.table({"neuron": [c.name for c in read.top_neurons(10)], "effect": [c.value for c in read.top_neurons(10)]}, right)
            st.caption(f"Embedding {read.embedding:+.4f}. Each layer's attention and FFN update along w (zero above the node):")
            st.bar_chart({"attention": read.attention.numpy(), "FFN": read.ffn.numpy()}, x_label="layer", y_label="w · update", stack=False)

with lens_tab:
    top = a.predictions(view.token, 1)[0]
    c1, c2 = st.columns([1, 1.4])
    mode = c1.radio("Show", ("top token", "probability", "rank"), horizontal=True, key="lens_mode")
    follow = c2.text_input(
        "Token to follow (empty: the prediction)",
        key="lens_follow",
        placeholder=top.token,
        help="Type the token's text with its leading space, e.g. ' Paris'. Text of several tokens follows the first one.",
        disabled=mode == "top token",
    )
    lens_ticks = readable_tokens(a)
    ui.scroll_box("lens_box", figures.lens_min_width(len(lens_ticks), mode == "top token"))
    box = st.container(key="lens_box")
    if mode == "top token":
        ids, probs = a.top_lens_grid(final_norm=view.final_norm)
        texts = [[token_text(a.runner, int(i)) for i in row] for row in ids.tolist()]  # a split character as its bytes, not �
        box.plotly_chart(figures.lens_top_heatmap(a, texts, probs.numpy()), key="lens", width="stretch")
    else:
        target = top
        if follow:
            try:
                token_id = follow_token(a.runner, follow)
                target = TokenScore(token_text(a.runner, token_id), token_id, 0.0)
            except PromptError as e:
                st.warning(ui.plain(f"Cannot follow {follow!r}: {e}. Following the prediction."))
        probs, ranks = a.lens_grid(target.token_id, final_norm=view.final_norm)
        values = ranks.numpy() if mode == "rank" else probs.numpy()
        what = "the prediction" if target is top else "followed"
        title = f"{mode} of {visible(target.token)} ({what}, id {target.token_id}) at every layer and position"
        box.plotly_chart(figures.lens_heatmap(a, values, title, rank=mode == "rank"), key="lens", width="stretch")

with edit_tab:
    ui.intervention_panel(view)
