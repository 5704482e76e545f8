"""AppTest on tiny models saved to disk: the Contributions page's expert view and an expert edit (Qwen2-MoE), and a
parallel block's heads (GPT-J)."""

import json
from urllib.parse import parse_qsl, urlsplit

from lmtt.tools.serve import ROOT
from tests.tiny_models import tiny_model, tiny_tokenizer

PROMPT = "w5 w17 w3 w42 w8 w11"


def _app_on(family: str, tmp_path, monkeypatch):
    """The app on a tiny random `family` model saved to disk (the only model in its config), PROMPT analysed."""
    from streamlit.testing.v1 import AppTest

    directory = tmp_path / family
    tiny_model(family).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    config = tmp_path / "config.yaml"
    config.write_text(f"default_model: tiny\nmodels:\n  tiny:\n    source: path\n    path: {directory}\n")
    monkeypatch.setenv("LMTT_CONFIG", str(config))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.sidebar.text_area(key="_w_prompt").input(PROMPT)
    at.sidebar.button[0].click().run()
    assert not at.exception, at.exception
    return at


def test_moe_contributions_page_shows_experts_and_edits_one(tmp_path, monkeypatch):
    at = _app_on("qwen2_moe", tmp_path, monkeypatch)
    at.session_state["node"] = "ffn:2:4"
    at.switch_page("pages/contributions.py").run()
    assert not at.exception, at.exception
    assert any(h.value == "Experts at layer 2" for h in at.subheader), [h.value for h in at.subheader]
    frames = [f.value for f in at.dataframe]
    assert list(frames[0].columns) == ["expert", "router weight", "contribution"] and len(frames[0]) == 2
    assert frames[1]["neuron"].str.contains("expert|shared").all()
    bars = json.loads(next(c for c in at.get("plotly_chart") if c.key == "neuron_chart").proto.spec)["data"][0]
    assert [h.split(":")[0] for h in bars["hovertext"]] == list(frames[1]["neuron"])  # the bars' names are the table's
    at.number_input(key="expert_factor").set_value(0.0)
    at.button(key="expert_add").click().run()
    at.session_state["neuron"] = (2, 3)
    assert any(e.startswith("expert:2.") for e in at.session_state["edits"])
    assert not at.exception, at.exception
    assert any("With the edits (expert L2.E" in c.value for c in at.main.caption), [c.value for c in at.main.caption]
    at.switch_page("pages/interpretation.py").run()  # the expert edit's before/after, and an expert neuron's view
    assert not at.exception, at.exception
    assert any("expert" in s.value and "neuron" in s.value for s in at.main.subheader), [s.value for s in at.main.subheader]
    assert any(t.value.startswith("expert L2.E") for t in at.main.text), [t.value for t in at.main.text]


def test_a_parallel_blocks_heads_stay_chosen_on_contributions(tmp_path, monkeypatch):
    """GPT-J's attention and FFN share one node (the block's output): choosing "attention" there must show the heads and
    stay chosen, although the node it selects is the same "ffn:" node as the FFN's."""
    at = _app_on("gptj", tmp_path, monkeypatch)
    at.switch_page("pages/contributions.py").run()
    assert not at.exception, at.exception
    at.radio(key="contrib_block").set_value("attention").run()
    assert not at.exception, at.exception
    assert at.radio(key="contrib_block").value == "attention" and at.session_state["node"] == "ffn:1:5"
    assert "Heads at layer 1" in [s.value for s in at.subheader]
    at.run()  # and on the next rerun too
    assert at.radio(key="contrib_block").value == "attention" and "Heads at layer 1" in [s.value for s in at.subheader]


def test_a_chat_link_on_a_model_without_a_template_says_so_and_runs_the_text(tmp_path, monkeypatch):
    """chat=1 in a link for a model with no chat template: a warning, the text analysed as it is, the toggle off, and
    no note that the page shows another run (the run came from the box as it now is)."""
    from streamlit.testing.v1 import AppTest

    _app_on("mistral", tmp_path, monkeypatch)  # writes the tiny model's config (LMTT_CONFIG)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update({"prompt": PROMPT, "chat": "1"})
    at.run()
    assert not at.exception, at.exception
    assert any("Chat template not applied" in w.value and "no chat template" in w.value for w in at.warning), [w.value for w in at.warning]
    assert at.session_state.run[1] == PROMPT and at.sidebar.toggle(key="_w_chat").value is False
    assert not [i.value for i in at.main.info if "shows the last run" in i.value]
    assert "chat" not in dict(parse_qsl(urlsplit(at.sidebar.code[0].value).query))


def test_a_link_names_the_analysed_model_not_one_chosen_and_not_run(tmp_path, monkeypatch):
    """The link had written the sidebar's model: after choosing another model without Run, it named that model with
    the analysed prompt, and opened on another analysis than the page showed."""
    from streamlit.testing.v1 import AppTest

    models = {}
    for name, family in (("first", "mistral"), ("second", "gpt2")):
        models[name] = tmp_path / name
        tiny_model(family).save_pretrained(models[name])
        tiny_tokenizer().save_pretrained(models[name])
    config = tmp_path / "config.yaml"
    entries = "".join(f"  {name}:\n    source: path\n    path: {path}\n" for name, path in models.items())
    config.write_text(f"default_model: first\nmodels:\n{entries}")
    monkeypatch.setenv("LMTT_CONFIG", str(config))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params.update({"prompt": PROMPT})
    at.run()
    at.sidebar.selectbox(key="_w_model").set_value("second").run()
    assert not at.exception, at.exception
    assert at.session_state.run[0] == "first" and [i.value for i in at.main.info if "shows the last run" in i.value]
    assert dict(parse_qsl(urlsplit(at.sidebar.code[0].value).query))["model"] == "first"
