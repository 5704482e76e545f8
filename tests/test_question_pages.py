"""AppTest (no browser) for the Target, Faithfulness and Patching pages on the default model."""

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180
MARY_JOHN = "When Mary and John went to the store, John gave a drink to"

pytestmark = pytest.mark.default_model


def opened(page: str, prompt: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.query_params["prompt"] = prompt
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def choose_john(at: AppTest, key: str) -> None:
    """Search the vocabulary for 'John' and pick ␣John in the selectbox `key` (target or contrast)."""
    at.text_input(key="q_search").input("John").run()
    john = next(o for o in at.selectbox(key=key).options if o.startswith("␣John "))
    at.selectbox(key=key).select(john).run()


def text(at: AppTest) -> str:
    return " ".join(m.value for m in at.main.markdown)


def test_target_page_finds_the_suppressor_of_john():
    at = opened("pages/target.py", MARY_JOHN)
    assert [t.value for t in at.title] == ["Target"]
    choose_john(at, "_w_q_target")
    assert not at.exception, at.exception
    assert "logit\\(␣John\\)" in text(at)
    table = at.main.dataframe[0].value
    row = table[table["component"] == "L23.H3"].iloc[0]
    assert row["role"] == "suppressor" and row["direct effect"] < -2
    # its edge, named as the Graph page names nodes: from the state before layer 23 at ␣John (9) into layer 23's attention
    assert (row["from"], row["into"]) == ("layer 22 after FFN, token 9 ␣John", "layer 23 after attention, token 13 ␣to")
    assert "Score of head L23.H3 from token 13 to token 9" in text(at)  # QK tab: the strongest head, its main source
    assert [m.label for m in at.metric] == ["Gate open (share of positions)", "Mean |activation|"]  # Neurons tab: GLU parts
    assert not at.exception


def test_target_page_with_a_contrast_and_the_lens():
    at = opened("pages/target.py", MARY_JOHN)
    choose_john(at, "_w_q_contrast")
    assert "logit\\(␣Mary\\) \\- logit\\(␣John\\)" in text(at)
    at.radio(key="q_lens").set_value("B").run()
    assert not at.exception, at.exception


def test_faithfulness_page_shows_the_curve():
    at = opened("pages/faithfulness.py", "The capital of France is")
    assert [t.value for t in at.title] == ["Faithfulness"]
    assert at.metric[0].label.startswith("Faithfulness of log p\\(␣Paris\\) at threshold")  # its scale named
    assert not at.main.dataframe and "press Draw the faithfulness curve" in at.info[0].value  # issue 20: on a button
    at.button(key="run_curve").click().run()
    assert not at.exception, at.exception
    curve = at.main.dataframe[0].value
    assert curve["faithfulness"].iloc[-1] == pytest.approx(1.0, abs=1e-6)  # threshold 0: the full graph
    # the route keeps p(A) of about 1e-7 at 0.04 (the model's 0.773 against the route's 3.6e-7): not "0.000"
    kept = float(at.metric[1].value)
    assert 0 < kept < 1e-3 and at.metric[1].value != "0.000"
    tops = list(curve["top_route"])  # white space shown as ␣ and ↵, a piece of a character as its bytes ⟨E2 82⟩
    assert "␣Paris" in tops and not any(t[:1].isspace() or "\n" in t or "\ufffd" in t for t in tops)
    at.radio(key="q_ablation").set_value("zero").run()
    assert not at.exception, at.exception


def test_patching_page_france_italy_and_a_length_mismatch():
    at = opened("pages/patching.py", "The capital of France is")
    assert "corrupted prompt" in at.info[0].value
    at.text_input(key="_w_patch").input("The capital of Italy is").run()
    assert not at.exception, at.exception
    assert "batched passes" not in text(at) and "Press Run patching" in at.info[0].value  # issue 20: heavy, so on a button
    at.button(key="run_patching_resid").click().run()  # the open tab's grid: the residual stream
    assert not at.exception, at.exception
    shown = text(at)
    assert "batched passes" in shown
    at.text_input(key="q_search").input("Rome").run()  # a keystroke in the token search box does not patch again
    assert text(at) == shown and "run_patching_resid" not in [b.key for b in at.button]  # the remembered result, to the 0.1 s
    at.text_input(key="_w_patch").input("The capital city of Italy is").run()
    assert "same length" in at.error[0].value and "has 5 tokens and the corrupted one 6" in at.error[0].value


@pytest.mark.parametrize(("page", "box"), [("pages/patching.py", "_w_patch"), ("pages/compare.py", "_w_compare")])
def test_an_over_long_second_prompt_is_kept_and_explained(page, box):
    """Issue 20: a paste over the server's limit stays whole in its box (no max_chars for the browser to cut it at) and
    the page says why it is not used."""
    at = opened(page, "The capital of France is")
    long = "Rome " * 5000  # 25,000 characters; config.yaml allows 20,000
    at.text_input(key=box).input(long).run()
    assert not at.exception, at.exception
    assert at.text_input(key=box).value == long and at.text_input(key=box).max_chars in (None, 0)
    assert "25,000 characters; the limit is 20,000" in " ".join(e.value for e in at.error)


QUESTION = "What is the capital of France?"


def chat_run(question: str) -> tuple[AppTest, str]:
    """A fresh session that ran `question` with the chat template on; and the text it analysed."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.sidebar.text_area(key="_w_prompt").input(question)
    at.sidebar.toggle(key="_w_chat").set_value(True)
    at.sidebar.button[0].click().run()
    wrapped = at.session_state.run[1]
    assert wrapped.startswith("<|im_start|>") and wrapped.endswith("<|im_start|>assistant\n") and question in wrapped
    return at, wrapped


def test_chat_template_toggle_wraps_the_prompt():
    at, _wrapped = chat_run(QUESTION)  # it checks the template's text around the question
    assert not at.exception, at.exception
    # the toggle stays on on another page (it had reset there, so Run there analysed the bare prompt), and no page
    # takes the chat run for an unrun change
    at.switch_page("pages/contributions.py").run()
    assert at.sidebar.toggle(key="_w_chat").value is True
    assert not [i.value for i in at.main.info if "shows the last run" in i.value]
    at.sidebar.toggle(key="_w_chat").set_value(False).run()  # switched off, not run: the page says so
    assert [i.value for i in at.main.info if "chat template or model has changed" in i.value]


def test_a_chat_run_travels_in_a_link_as_the_users_text():
    """A link of a chat-template run had carried the template's text and no flag: it opened with "<|im_start|>…" in
    the box and the toggle off, and turning the toggle on would have wrapped it again. It now carries the user's words
    and chat=1, and opens on the same analysed text, with the box and toggle as the user left them."""
    at, wrapped = chat_run(QUESTION)
    params = dict(parse_qsl(urlsplit(at.sidebar.code[0].value).query))
    assert params["prompt"] == QUESTION and params["chat"] == "1", params

    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    fresh.query_params.update(params)
    fresh.run()
    assert not fresh.exception, fresh.exception
    assert fresh.session_state.run[1] == wrapped  # the same analysed text as the run the link was copied from
    assert fresh.sidebar.text_area(key="_w_prompt").value == QUESTION and fresh.sidebar.toggle(key="_w_chat").value is True
    assert not [i.value for i in fresh.main.info if "shows the last run" in i.value]
    assert dict(parse_qsl(urlsplit(fresh.sidebar.code[0].value).query))["chat"] == "1"  # and its own link says so too


def test_generating_with_the_chat_template_continues_the_chat_form():
    """With the toggle on, "Generate and analyse" had continued the bare text. Now the model answers the chat form,
    and the box holds that form and the reply, with the toggle off (Run would otherwise wrap it a second time)."""
    at, wrapped = chat_run(QUESTION)
    at.sidebar.number_input(key="gen_n").set_value(3)
    at.sidebar.button(key="gen_go").click().run()
    assert not at.exception, at.exception
    text = at.session_state.run[1]
    assert text.startswith(wrapped) and len(text) > len(wrapped), text
    assert at.sidebar.text_area(key="_w_prompt").value == text and at.sidebar.toggle(key="_w_chat").value is False
    assert "chat" not in dict(parse_qsl(urlsplit(at.sidebar.code[0].value).query))
    # the instruct model answers in a few tokens and ends its turn: the page says it stopped early, and why
    at.sidebar.number_input(key="gen_n").set_value(40)
    at.sidebar.text_area(key="_w_prompt").input(QUESTION)
    at.sidebar.toggle(key="_w_chat").set_value(True)
    at.sidebar.button(key="gen_go").click().run()
    stopped = [re.sub(r"\\(.)", r"\1", w.value) for w in at.warning]  # as shown: Markdown's escapes undone
    stopped = [w for w in stopped if w.startswith("Generation stopped after")]
    assert stopped and "of 40 tokens: the model wrote its end token (<|im_end|>)" in stopped[0], [w.value for w in at.warning]
    assert "<|im_end|>" not in at.session_state.run[1][len(wrapped) :]


def test_a_new_run_resets_target_and_contrast_to_the_new_prompts_defaults():
    """Issue 19: A = ' John' chosen on the IOI prompt must not explain 'The capital of France is' after a new Run."""
    at = opened("pages/target.py", MARY_JOHN)
    choose_john(at, "_w_q_target")
    assert "logit\\(␣John\\)" in text(at)
    at.sidebar.text_area(key="_w_prompt").input("The capital of France is")
    at.sidebar.button[0].click().run()  # Run: a new prompt
    assert not at.exception, at.exception
    assert "logit\\(␣Paris\\)" in text(at) and "John" not in text(at)
    at.switch_page("pages/faithfulness.py").run()  # log p(A) of the top prediction by default
    at.button(key="run_curve").click().run()
    assert not at.exception, at.exception
    quantity = at.get("plotly_chart")[0].proto.spec
    assert "Paris" in quantity and "John" not in quantity and "log p" in quantity


def test_the_qk_tab_starts_at_the_head_the_user_came_from(default_runner):
    """Without a head chosen elsewhere, the strongest head for the target; with one (head 20.5 clicked), that head."""
    import lmtt

    at = opened("pages/target.py", MARY_JOHN)
    strongest = lmtt.analyze(default_runner, MARY_JOHN).direct_effects().top_heads(1)[0]  # for the top prediction
    assert [n.value for n in at.number_input if n.label in ("Layer", "Head")] == [strongest.layer, strongest.index]
    at.session_state["head"] = (20, 5)
    at.run()
    assert not at.exception, at.exception
    assert [n.value for n in at.number_input if n.label in ("Layer", "Head")] == [20, 5]
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("the score of every key for query 13" in t for t in titles)


def test_the_target_pages_graph_pins_a_clicked_node():
    """Issue 22: the Target page's graph takes a node click, and its workbench pins it; the pin is drawn and linked."""
    from tests.test_app import click

    at = opened("pages/target.py", "The capital of France is")
    click(at, "target_graph", "ffn:22:3")
    assert not at.exception, at.exception
    # the clicked node is ringed in the browser (named to graph_view.js) and travels in the link
    assert any('["target_graph", "ffn:22:3"]' in h.proto.body for h in at.main.get("html"))
    assert at.query_params["node"] == "ffn:22:3"
    at.button(key="wb_pin").click().run()
    assert not at.exception, at.exception
    assert at.session_state["curation"].pins == ("ffn:22:3",)
    assert '"name":"pins"' in at.get("plotly_chart")[0].proto.spec
    assert "ffn:22:3" in str(at.query_params["pin"])


def test_compare_restates_both_prompts_and_aligns_in_words():
    """Compare had named its prompts only "A predicts ␣Paris" and "B predicts ␣Rome", said "B's positions are A's + -3"
    for prompts of other lengths, gave B's source and not its target, and did not say what its numbers are."""
    at = opened("pages/compare.py", "The capital of France is")
    at.text_input(key="_w_compare").input("In the end, the capital of Italy is").run()
    assert not at.exception, at.exception
    said = [m.value for m in at.main.markdown]
    assert any(m.startswith("**A**, the sidebar's prompt (5 tokens): “The capital of France is” predicts") for m in said), said
    assert any(m.startswith("**B**, the second prompt (9 tokens): “In the end, the capital of Italy is” predicts") for m in said), said
    caption = next(c.value for c in at.main.caption if c.value.startswith("Aligned by final token"))
    assert "(position i of A meets position i + 4 of B)" in caption and "shares of the node" in caption, caption
    assert "leaves out the first position where the two meet" in caption
    edges = at.main.dataframe[-1].value
    assert {"source (A)", "target (A)", "source (B)", "target (B)", "B - A"} <= set(edges.columns)
    row = edges.iloc[0]
    assert int(row["target (B)"].split(":")[0]) == int(row["target (A)"].split(":")[0]) + 4
    graphs = [c.proto.spec for c in at.get("plotly_chart") if '"name":"nodes"' in c.proto.spec]
    assert len(graphs) == 2 and not any("click " in g for g in graphs)  # its graphs are read, not clicked: no hover promises it
