"""Share links carry long prompts compactly: text, compressed, or a reference the server resolves."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from lmtt.tools.bench import natural_text
from lmtt.ui import links
from tests.test_app import ROOT


def test_short_prompts_stay_text_and_long_ones_round_trip_compressed():
    assert links.prompt_params("The capital of France is") == [("prompt", "The capital of France is")]
    text = natural_text()[:16_779]  # about 4,000 tokens of English prose
    (key, packed), = links.prompt_params(text)
    assert key == "pz" and len(packed) < 7_800
    assert links.prompt_from({"pz": packed}, 20_000) == (text, None)
    damaged, problem = links.prompt_from({"pz": packed[:-40] + "!!"}, 20_000)
    assert damaged is None and "damaged" in problem
    bomb = links.prompt_params("a" * 1_000_000)  # compresses to almost nothing: the inflate stops at the limit
    assert links.prompt_from(dict(bomb), 20_000) == (None, "The link's prompt is longer than this server's limit of 20,000 characters.")


def test_a_very_long_prompt_travels_as_a_reference_until_the_server_forgets_it():
    text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(9000))  # CJK text barely compresses
    (key, ref), = links.prompt_params(text)
    assert key == "ph" and len(ref) == 24
    assert links.prompt_from({"ph": ref}, 50_000) == (text, None)
    links._store().clear()  # what a restart does
    gone, problem = links.prompt_from({"ph": ref}, 50_000)
    assert gone is None and "restarted" in problem


@pytest.mark.default_model
def test_a_long_prompts_link_opens_it_in_a_fresh_session():
    text = natural_text()[:1_600]  # just over the plain-text limit: compressed
    first = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    first.query_params["prompt"] = text
    first.run()
    assert not first.exception, first.exception
    assert "pz" in first.query_params and "prompt" not in first.query_params
    second = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    second.query_params["pz"] = first.query_params["pz"]
    second.run()
    assert not second.exception, second.exception
    assert second.session_state["run"][1] == text


@pytest.mark.default_model
def test_a_question_pages_link_reproduces_its_choices():
    """Issue 20: the Faithfulness page's target, contrast and ablation, and the Interpretation page's lens mode and
    followed token, come back in a fresh session from the link alone."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["prompt"] = "The capital of France is"
    at.run()
    at.switch_page("pages/faithfulness.py").run()
    at.selectbox(key="_w_q_contrast").select(-3).run()  # the runner-up
    assert at.query_params["b"] == "-3"  # in the link of this very rerun (the body sets it after the sidebar wrote the link)
    at.radio(key="q_ablation").set_value("zero").run()
    assert not at.exception, at.exception
    link = {k: at.query_params[k] for k in at.query_params}
    assert link["b"] == "-3" and link["ablation"] == "zero"
    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    for k, v in link.items():
        fresh.query_params[k] = v
    fresh.run()
    fresh.switch_page("pages/faithfulness.py").run()
    fresh.button(key="run_curve").click().run()
    assert not fresh.exception, fresh.exception
    assert fresh.radio(key="q_ablation").value == "zero" and fresh.selectbox(key="_w_q_contrast").value == -3
    title = json.loads(fresh.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]
    assert "logit(␣Paris) - logit" in title  # A against the runner-up
    fresh.query_params.clear()
    interp = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    interp.query_params.update({"prompt": "The capital of France is", "lens": "probability", "follow": " Rome"})
    interp.run()
    interp.switch_page("pages/interpretation.py").run()
    assert not interp.exception, interp.exception
    assert interp.radio(key="lens_mode").value == "probability" and interp.text_input(key="lens_follow").value == " Rome"


@pytest.mark.default_model
def test_the_target_pages_link_carries_its_qk_head_and_keys_at_once():
    """Issue 20: the Target page's QK head, key and compared key travel in the link, and a changed choice (target A,
    the head) is in the link of the same rerun, not one click later. Out-of-range values are named and dropped."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["prompt"] = "The capital of France is"
    at.run()
    at.switch_page("pages/target.py").run()
    at.text_input(key="q_search").input("Rome").run()
    rome = next(o for o in at.selectbox(key="_w_q_target").options if o.startswith("␣Rome "))
    at.selectbox(key="_w_q_target").select(rome).run()
    assert not at.exception, at.exception
    rome_id = at.session_state["q_target"]
    assert at.query_params["a"] == str(rome_id)  # this rerun's link, before any other click
    at.number_input(key="q_qk_layer").set_value(20).run()
    at.number_input(key="q_qk_head").set_value(5).run()
    at.selectbox(key="q_qk_key").select(2).run()
    at.selectbox(key="q_qk_other").select(0).run()
    assert not at.exception, at.exception
    link = {k: at.query_params[k] for k in at.query_params}
    assert (link["qk_layer"], link["qk_head"], link["qk_key"], link["qk_vs"]) == ("20", "5", "2", "0")
    said = [m.value for m in at.markdown if "Score of head" in m.value]
    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    fresh.query_params.update(link)
    fresh.run()
    fresh.switch_page("pages/target.py").run()
    assert not fresh.exception, fresh.exception
    assert [fresh.number_input(key=k).value for k in ("q_qk_layer", "q_qk_head")] == [20, 5]
    assert fresh.selectbox(key="q_qk_key").value == 2 and fresh.selectbox(key="q_qk_other").value == 0
    assert [m.value for m in fresh.markdown if "Score of head" in m.value] == said  # the same score, against the same key
    assert said and "Score of head L20.H5 from token 4 to token 2" in said[0] and "Against token 0" in said[0]
    bad = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    bad.query_params.update({"prompt": "The capital of France is", "qk_layer": "99", "qk_key": "3"})
    bad.run()
    bad.switch_page("pages/target.py").run()
    assert not bad.exception, bad.exception
    assert any("Ignored qk_layer=99 in the link" in w.value for w in bad.warning)
    assert bad.selectbox(key="q_qk_key").value == 3  # what fits is kept
