"""The route workbench on the Graph page: pin nodes, group them, label them, accept suggested groups, draw only the
pinned subgraph, and save, load, download or upload it. The state is one Curation (lmtt.questions.curation) in the
session and in the link."""

from __future__ import annotations

import streamlit as st

from lmtt.analysis import Analysis
from lmtt.engine.graph import Subgraph, states_label
from lmtt.engine.tokens import readable_tokens
from lmtt.questions.curation import Curation, lone_items
from lmtt.questions.groups import suggest_groups
from lmtt.ui.markdown import plain
from lmtt.ui.state import ss
from lmtt.viz.figures import describe_node


def curation() -> Curation:
    return ss.get("curation") or Curation()


def _set(value: Curation) -> None:
    """Replace the curation and redraw; the text boxes start afresh (a loaded subgraph brings its own labels)."""
    ss.curation = value
    ss._wb_version = ss.get("_wb_version", 0) + 1
    st.rerun()


def _update(change) -> None:
    """An on_change callback's edit of the curation (it runs before the page, so no extra rerun)."""
    ss.curation = change(curation())


def _group_pins() -> None:
    """Group them's callback: the pins become a group under the typed name, and the name box empties (it had kept the
    name, so the same group could be made again)."""
    _update(lambda cur: cur.group(ss.wb_group_name, cur.pins))
    ss.wb_group_name = ""
    ss._wb_version = ss.get("_wb_version", 0) + 1  # the groups' name boxes start afresh, as after _set


def _pin_name(c: Curation, node: str, tokens: tuple[str, ...]) -> str:
    """A pin as the workbench names it: its state, and its label if it has one ('L23 attn · ␣is (moves …)')."""
    return states_label([node], tokens) + (f" ({c.labels[node]})" if node in c.labels else "")


def workbench(analysis: Analysis, sub: Subgraph, node: str | None) -> None:
    """The panel: the selected node's pin and label, the pins, the groups, suggestions, and saving."""
    c, tokens = curation(), readable_tokens(analysis)
    with st.expander("Route workbench: pin, group, label", expanded=bool(c) or node is not None):
        if node is not None:
            st.caption(plain(describe_node(analysis, node)))
            if node in c.pins:
                if st.button("Unpin this node", key="wb_unpin", width="stretch"):
                    _set(c.unpin(node))
            elif st.button("Pin this node", key="wb_pin", width="stretch", help="Pinned nodes form the subgraph view"):
                _set(c.pin(node))
            label_key = f"wb_label_{node}_{ss.get('_wb_version', 0)}"
            st.text_input("Label", value=c.labels.get(node, ""), key=label_key, placeholder="e.g. country mover",
                          on_change=lambda: _update(lambda cur: cur.label(node, ss[label_key])))  # fmt: skip
        if c.pins:
            names = [_pin_name(c, p, tokens) for p in c.pins]
            st.markdown(f"**Pinned ({len(c.pins)})**: " + plain("; ".join(names)), help="Node ids: " + ", ".join(c.pins))
            name = st.text_input("Group the pinned nodes as", key="wb_group_name", placeholder="a name, e.g. name movers")
            st.button("Group them", key="wb_group", width="stretch", disabled=len(c.pins) < 2 or not name.strip(), on_click=_group_pins)
        for n, (name, members) in enumerate(c.groups.items()):  # the name's box, then its button (side by side cut "Dissolve")
            key = f"wb_rename_{n}_{name}_{ss.get('_wb_version', 0)}"
            st.text_input(f"Group of {len(members)}", value=name, key=key, help=plain(states_label(members, tokens)),
                          on_change=lambda name=name, key=key: _update(lambda cur: cur.rename(name, ss[key])))  # fmt: skip
            if st.button("Dissolve", key=f"wb_dissolve_{n}"):
                _set(c.dissolve(name))
        route = (analysis.tokens, sub.root, sub.threshold)  # suggestions belong to the route they were made for
        if st.button("Suggest groups", key="wb_suggest", width="stretch", help="Cluster the route's states by the edges they share"):
            ss._suggested = (route, [g.to_dict() for g in suggest_groups(analysis, sub)[:8]])
        suggested = ss.get("_suggested")
        for n, g in enumerate(suggested[1] if suggested and suggested[0] == route else []):
            st.markdown(f"**{plain(g['label'])}** ({len(g['members'])} nodes)")  # a token may be '*' or '$'
            st.caption(plain(g["reason"]))
            if st.button("Accept", key=f"wb_accept_{n}"):
                ss._suggested = (route, [x for x in suggested[1] if x is not g])
                accepted = c.group(g["label"], tuple(g["members"]))
                _set(Curation(tuple(dict.fromkeys((*accepted.pins, *g["members"]))), accepted.groups, accepted.labels))
        if c:
            st.toggle("Show only the pinned subgraph", key="subgraph_only", help="Pins and groups, with the route's edges between them")
            if ss.get("subgraph_only") and (alone := lone_items(sub, c)):
                st.caption(
                    f"{len(alone)} of the {len(c.items)} pins and groups share no route edge with another "
                    f"({plain('; '.join(x if x in c.groups else _pin_name(c, x, tokens) for x in alone))}): "
                    "the view draws only the route's direct edges between them. Pin the states between them to join them."
                )
        _saving(analysis, c)


def _saving(analysis: Analysis, c: Curation) -> None:
    """Named subgraphs in this session; a JSON file to download or upload."""
    saved: dict[str, str] = ss.setdefault("_saved_subgraphs", {})
    cols = st.columns([2, 1], vertical_alignment="bottom")  # [3, 1] cut "Save" to "S…"
    name = cols[0].text_input("Save as", key="wb_save_name", placeholder="a name")
    if cols[1].button("Save", key="wb_save", disabled=not (c and name.strip())):
        saved[name.strip()] = c.to_json(analysis, name.strip())
    if saved:
        cols = st.columns([2, 1], vertical_alignment="bottom")
        chosen = cols[0].selectbox("Saved subgraphs", list(saved), key="wb_saved")
        if cols[1].button("Load", key="wb_load"):
            _set(Curation.from_json(saved[chosen]))
    if c:
        st.download_button("Download the subgraph (JSON)", c.to_json(analysis), file_name="subgraph.json", mime="application/json",
                           key="wb_download", width="stretch")  # fmt: skip
    upload = st.file_uploader("Upload a subgraph (JSON)", type=["json"], key="wb_upload")
    if upload is not None and ss.get("_uploaded") != upload.file_id:
        ss._uploaded = upload.file_id
        try:
            loaded, dropped = Curation.from_json(upload.getvalue()).checked(analysis)
        except ValueError as e:
            st.error(plain(str(e)))
        else:
            for d in dropped:
                st.warning(f"Ignored {d}")
            _set(loaded)
