"""Pins, groups and labels: their URL and JSON forms, the subgraph view's summed group edges, and the Graph page."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lmtt.engine.graph import ATTENTION, FFN, RESIDUAL, Subgraph
from lmtt.questions.curation import Curation, group_edges, lone_items, pinned_subgraph

ROOT = Path(__file__).resolve().parent.parent
CURATED = Curation(
    pins=("ffn:29:4", "attn:23:4", "ffn:22:3"),
    groups={"country mover": ("attn:23:4", "ffn:22:3")},
    labels={"attn:23:4": "moves ␣France to ␣is", "emb:3": "the country"},
)


def test_a_curation_survives_its_url_and_json_forms():
    params = CURATED.to_params()
    back = Curation.from_params(
        next(v for k, v in params if k == "pin"), [v for k, v in params if k == "grp"], [v for k, v in params if k == "lbl"]
    )
    assert back == CURATED
    assert Curation.from_json(CURATED.to_json()) == CURATED
    with pytest.raises(ValueError, match="not a saved subgraph"):
        Curation.from_json("[1, 2]")
    with pytest.raises(ValueError, match="at least two"):
        CURATED.group("solo", ("ffn:1:1",))
    assert len(CURATED.to_params()) == 4 and sum(len(v) for _, v in CURATED.to_params()) < 200  # compact


def test_a_group_is_one_node_whose_edges_are_its_members_summed():
    """Hand-built: a and b (grouped as G) both feed c, 0.3 and 0.2; a feeds b (inside G, dropped); d is not shown."""
    # nodes: a = attn:0:1 (level 1, pos 1), b = ffn:0:1 (level 2, pos 1), c = attn:1:2 (level 3, pos 2), d = attn:1:0
    edges = [
        (ATTENTION, 3, 1, 1, 2, 0.3), (ATTENTION, 3, 2, 1, 2, 0.2), (FFN, 2, 1, 1, 1, 0.5), (RESIDUAL, 3, 2, 0, 0, 0.9),
    ]  # fmt: skip
    kind, level, source_level, source, target, weight = (np.array(x) for x in zip(*edges))
    sub = Subgraph(kind.astype(np.int8), level, source_level, source, target, weight.astype(np.float32), (3, 2), 0.0)
    c = Curation(pins=("attn:1:2",), groups={"G": ("attn:0:1", "ffn:0:1")})
    shown = pinned_subgraph(sub, c)
    assert len(shown) == 3  # the edge from ffn:0:0 is not between shown nodes
    assert group_edges(shown, c) == [("G", "attn:1:2", pytest.approx(0.5))]
    # a pin that no route edge joins to the others stands alone in the view, and is named as such
    lone = Curation(pins=("attn:1:2", "attn:1:0", "ffn:0:1", "attn:0:1"), groups={"G": ("attn:0:1", "ffn:0:1")})
    assert lone.items == ["G", "attn:1:2", "attn:1:0"] and lone_items(sub, lone) == ["attn:1:0"]
    assert lone_items(sub, c) == []


def test_the_graph_page_draws_restores_and_exports_a_curated_route():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["prompt"] = "The capital of France is"
    for key in ("pin", "grp", "lbl"):  # repeated keys travel as lists
        at.query_params[key] = [v for k, v in CURATED.to_params() if k == key]
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["curation"] == CURATED
    pinned = next(re.sub(r"\\(.)", r"\1", m.value) for m in at.main.markdown if m.value.startswith("**Pinned"))  # as shown
    assert pinned == "**Pinned (3)**: L29 ffn · ␣is; L23 attn · ␣is (moves ␣France to ␣is); L22 ffn · ␣France"
    spec = at.get("plotly_chart")[0].proto.spec
    assert "pinned attn:23:4: moves" in spec and '"name":"pins"' in spec
    at.toggle(key="subgraph_only").set_value(True).run()
    assert not at.exception, at.exception
    spec = at.get("plotly_chart")[0].proto.spec
    assert '"name":"groups"' in spec and "country mover" in spec
    # no route edge joins layer 23 and 22's states (the group) to the top state at ␣is: both stand alone, and it says so
    said = [re.sub(r"\\(.)", r"\1", c.value) for c in at.main.caption]
    assert any(c.startswith("2 of the 2 pins and groups share no route edge with another (country mover; L29 ffn · ␣is)") for c in said)
    link = dict(at.query_params)
    assert link["pin"] == "ffn:29:4,attn:23:4,ffn:22:3" and "country mover~attn:23:4,ffn:22:3" in str(link["grp"])
    assert link["pinned_only"] == "1"  # the view travels too: a colleague sees the curated subgraph, not the whole graph
    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    for key, value in link.items():
        fresh.query_params[key] = value
    fresh.run()
    assert not fresh.exception, fresh.exception
    assert fresh.toggle(key="subgraph_only").value is True and '"name":"groups"' in fresh.get("plotly_chart")[0].proto.spec
    at.text_input(key="wb_group_name").input("the output").run()  # group the pins by hand, then dissolve it
    at.button(key="wb_group").click().run()
    assert not at.exception, at.exception
    assert at.session_state["curation"].groups["the output"] == CURATED.pins
    assert at.text_input(key="wb_group_name").value == ""  # emptied: the same group is not offered again
    legend = [t for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"] if t.get("name") in ("pins", "groups")]
    assert legend and all(t.get("showlegend", True) for t in legend)  # the legend says what a ★ and a ■ are
    at.button(key="wb_dissolve_1").click().run()
    assert "the output" not in at.session_state["curation"].groups


def test_a_label_typed_beside_groups_labels_its_own_node():
    """The Label box's callback had read the last group's name box (a variable the group loop reuses), so with any
    group a typed label was saved as that group's name: in the Pinned line, the link and the exports."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["prompt"] = "The capital of France is"
    at.query_params["node"] = "attn:23:4"
    at.query_params["grp"] = ["country mover~attn:23:4,ffn:22:3", "the rest~ffn:29:4,ffn:28:4"]
    at.run()
    assert not at.exception, at.exception
    next(t for t in at.text_input if t.label == "Label").input("moves <i>the</i> country").run()
    assert not at.exception, at.exception
    assert at.session_state["curation"].labels == {"attn:23:4": "moves <i>the</i> country"}
    assert list(at.session_state["curation"].groups) == ["country mover", "the rest"]
    assert "attn:23:4~moves <i>the</i> country" in str(at.query_params["lbl"])
