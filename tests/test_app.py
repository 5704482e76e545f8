"""AppTest (no browser) for every page: run, change threshold and token, select, switch pages, bad input."""

import json
import re
from pathlib import Path

import pytest
from streamlit.elements.plotly_chart import PlotlySelectionState, PlotlyState
from streamlit.testing.v1 import AppTest

from lmtt.engine.runner import ModelRunner

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180  # the first run loads the model (and converts the GGUF on a fresh cache)


@pytest.fixture
def at() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)


@pytest.fixture
def traces(monkeypatch) -> list[str]:
    """Counts forward passes: every call of ModelRunner.trace."""
    calls: list[str] = []
    real = ModelRunner.trace

    def counting(self, prompt, *args, **kwargs):
        calls.append(str(prompt))
        return real(self, prompt, *args, **kwargs)

    monkeypatch.setattr(ModelRunner, "trace", counting)
    return calls


def ran(at: AppTest, prompt: str | None = None) -> AppTest:
    at.run()
    if prompt is not None:
        at.sidebar.text_area(key="_w_prompt").input(prompt)
    at.sidebar.button[0].click().run()
    assert not at.exception, at.exception
    return at


def caption(at: AppTest) -> str:
    return " ".join(c.value for c in at.main.caption)


def click(at: AppTest, key: str, customdata) -> AppTest:
    at.session_state[key] = PlotlyState(
        {"selection": PlotlySelectionState({"points": [{"customdata": customdata}], "point_indices": [0], "box": [], "lasso": []})}
    )
    return at.run()


def test_first_visit_explains_and_draws_the_default_prompt(at):
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Graph"]
    intro = " ".join(m.value for m in at.main.markdown)
    assert "shows how a language model reaches its next-token prediction" in intro and "press **Run**" in intro
    assert "predicts ␣Paris" in caption(at) and [c.key for c in at.get("plotly_chart")] == ["graph_chart"]
    labels = [link.label for link in at.sidebar.get("page_link")]
    assert labels == ["Graph", "Contributions", "Interpretation", "Compare", "Target", "Faithfulness", "Patching", "Dataset"]
    at.sidebar.button[0].click().run()  # the first Run: the paragraph has done its job
    assert "shows how a language model" not in " ".join(m.value for m in at.main.markdown)


def test_run_default_prompt_shows_the_prediction_and_graph(at):
    ran(at)
    assert "predicts ␣Paris" in caption(at)
    assert len(at.get("plotly_chart")) == 1
    assert at.query_params["prompt"] == "The capital of France is"
    assert at.query_params["token"] == "4"


def test_threshold_and_token_changes_do_not_rerun_the_model(at, traces):
    ran(at)
    n = len(traces)
    edges = int(caption(at).split()[0])
    at.sidebar.slider(key="_w_threshold").set_value(0.2).run()
    assert int(caption(at).split()[0]) < edges
    at.sidebar.selectbox(key="_w_token").set_value(2).run()
    assert "to token 2" in caption(at)
    assert at.query_params["threshold"] == "0.2" and at.query_params["token"] == "2"
    assert len(traces) == n, "a threshold or token change ran the model"


def test_clicking_a_node_shows_its_logit_lens(at, traces):
    ran(at)
    n = len(traces)
    click(at, "graph_chart", "ffn:29:4")
    assert not at.exception
    assert any("Logit lens" in m.value for m in at.main.markdown)
    assert "layer 29 after FFN, token 4 ␣is" in [t.value for t in at.main.text]
    lens = at.main.dataframe[0].value
    assert lens["token"].iloc[0] == "␣Paris"
    assert at.query_params["node"] == "ffn:29:4"
    assert len(traces) == n


def test_a_node_click_keeps_the_figure_and_names_the_node_to_ring(at, monkeypatch):
    """The selection is not in the figure (the browser rings it): a click builds no new figure and sends the same
    spec, so Streamlit does not draw the graph again. A new threshold builds one."""
    from lmtt.viz import figures

    built = []
    real = figures.graph_figure
    monkeypatch.setattr(figures, "graph_figure", lambda *a, **k: built.append(1) or real(*a, **k))
    ran(at)
    spec = next(c for c in at.get("plotly_chart") if c.key == "graph_chart").proto.spec
    assert len(built) == 1
    for node in ("ffn:29:4", "attn:3:1"):
        click(at, "graph_chart", node)
        assert not at.exception
        assert next(c for c in at.get("plotly_chart") if c.key == "graph_chart").proto.spec == spec
        scripts = [h.proto.body for h in at.main.get("html")]
        assert any(f'["graph_chart", "{node}"]' in body for body in scripts), scripts
    assert len(built) == 1
    at.sidebar.slider(key="_w_threshold").set_value(0.1).run()
    assert not at.exception and len(built) == 2


def test_clicking_an_attention_edge_shows_its_heads(at):
    ran(at)
    click(at, "graph_chart", "edge|attention|45|3|4")  # layer 22, " France" -> " is"
    assert not at.exception
    assert [s.value for s in at.main.subheader][0] == "Attention edge"
    assert at.main.metric[0].label == "Weight (sum over heads)"
    # the logit lens below is of the edge's target node, and the panel names it (level 45: layer 22 after attention)
    assert any(m.value.startswith("**Its target node:** layer 22 after attention, token 4 ␣is") for m in at.main.markdown)
    click(at, "graph_chart", "edge|ffn|60|4|4")  # layer 29's FFN at " is"
    assert [s.value for s in at.main.subheader][0] == "FFN edge"  # not "Ffn edge"


def test_pages_share_the_selection(at):
    ran(at)
    click(at, "graph_chart", "attn:22:4")
    at.switch_page("pages/contributions.py").run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Contributions"]
    assert at.main.selectbox[0].value == 22 and at.main.radio[0].value == "attention"
    click(at, "head_chart", 3)
    assert at.session_state["head"] == (22, 3)
    at.main.radio[0].set_value("FFN").run()
    assert not at.exception and len(at.main.dataframe) == 1
    click(at, "neuron_chart", 7)
    assert at.session_state["neuron"] == (22, 7)
    at.switch_page("pages/interpretation.py").run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Interpretation"]
    subheaders = [s.value for s in at.main.subheader]
    assert "Head L22.H3: its update at token 4 (␣is)" in subheaders
    assert "Neuron L22.N7" in subheaders
    assert at.query_params["head"] == "22.3" and at.query_params["neuron"] == "22.7"
    at.main.radio(key="lens_mode").set_value("probability").run()
    assert not at.exception


def test_opening_contributions_selects_no_node_until_the_user_chooses(at):
    """Merely opening Contributions had selected the last token's top node: the Graph page's panel, and every share
    link, then carried a node nobody clicked. A neuron clicked there (of the node shown by default, layer 29's FFN) or
    a layer chosen there does select its node."""
    ran(at)
    at.switch_page("pages/contributions.py").run()
    assert not at.exception, at.exception
    assert at.main.selectbox[0].value == 29 and at.main.radio[0].value == "FFN"  # shown: the default node, ffn:29:4
    assert at.session_state["node"] is None and "node" not in at.query_params
    click(at, "neuron_chart", 7)  # a neuron of the shown node: that node is chosen with it
    assert at.session_state["node"] == "ffn:29:4" and at.session_state["neuron"] == (29, 7)
    at.main.selectbox[0].set_value(12).run()
    assert at.session_state["node"] == "ffn:12:4" and at.query_params["node"] == "ffn:12:4"


def test_hostile_prompt_is_text(at):
    ran(at, "<img src=x onerror=alert(1)> **bold** $x$")
    assert not at.exception
    options = at.sidebar.selectbox(key="_w_token").options
    text = "".join(o.split(": ", 1)[1] for o in options).replace("␣", " ")
    assert text == "<img src=x onerror=alert(1)> **bold** $x$"


def test_suggested_groups_show_their_tokens_as_text(at, default_runner):
    """The workbench's suggested groups name their tokens in Markdown: a group over the token ␣$ had read as LaTeX.
    Shown as text, each name and reason reads back as the library's own (`suggest_groups`, no Markdown)."""
    import lmtt

    prompt = "Costs: $5 *and* $6 *or* $7, so *$"
    at.query_params["prompt"] = prompt
    at.run()
    at.button(key="wb_suggest").click().run()
    assert not at.exception, at.exception
    unescape = lambda md: re.sub(r"\\(.)", r"\1", md)  # noqa: E731
    shown = [m.value for m in at.main.markdown if m.value.endswith(" nodes)")]
    said = [c.value for c in at.main.caption if "edge profiles alike" in c.value]
    for md in [s[2 : s.rindex("**")] for s in shown] + said:  # no bare Markdown or LaTeX character inside
        assert not re.search(r"(?<!\\)[$*_`]", md), md
    names, reasons = [unescape(s) for s in shown], [unescape(s) for s in said]
    a = lmtt.analyze(default_runner, prompt)
    expected = a.suggest_groups(-1, at.session_state["threshold"])[:8]
    assert names == [f"**{g.label}** ({len(g.members)} nodes)" for g in expected] and any("$" in n for n in names)
    assert reasons == [g.reason for g in expected]


@pytest.mark.parametrize("prompt,message", [("   ", "the prompt is empty")])
def test_bad_prompts_show_an_error(at, prompt, message):
    ran(at, prompt)
    assert any(message in e.value for e in at.error)


def test_input_never_vanishes(at, traces):
    """Issue 20: 100,000 characters pasted stay in the box, Run names the limit and analyses nothing again;
    a chosen sample prompt runs at once."""
    ran(at, "The capital of France is")
    before = len(traces)
    long = "word " * 20_000
    at.sidebar.text_area(key="_w_prompt").input(long)
    at.sidebar.button[0].click().run()
    assert not at.exception, at.exception
    assert any("100,000 characters" in e.value and "at most 20,000" in e.value for e in at.sidebar.error)
    assert at.sidebar.text_area(key="_w_prompt").value == long  # nothing lost
    assert len(traces) == before  # the old prompt was not re-analysed
    assert at.session_state["run"][1] == "The capital of France is"  # the graph shown is still the last run's
    last_run = "This page shows the last run: smollm2-135m, 5 tokens, “The capital of France is”."
    at.switch_page("pages/contributions.py").run()  # another page says so too, once Run's message is gone
    notes = [i.value for i in at.main.info if i.value.startswith(last_run)]
    assert len(notes) == 1 and "has 100,000 characters, over this server's 20,000" in notes[0], [i.value for i in at.main.info]
    at.switch_page("app.py").run()
    sample = at.sidebar.selectbox(key="_w_sample")
    choice = sample.options[2]
    sample.select(choice).run()
    assert not at.exception, at.exception
    assert at.sidebar.text_area(key="_w_prompt").value == choice
    assert at.session_state["run"][1] == choice and len(traces) > before  # analysed without pressing Run
    assert not [i.value for i in at.main.info if "shows the last run" in i.value]
    at.sidebar.text_area(key="_w_prompt").input("The capital of Spain is").run()  # typed, not yet run
    notes = [i.value for i in at.main.info if i.value.startswith("This page shows the last run")]
    assert len(notes) == 1 and "has changed since: press **Run**" in notes[0]
    at.switch_page("pages/dataset.py").run()  # which runs its own prompts with the sidebar's model: no such note
    assert not [i.value for i in at.main.info if "shows the last run" in i.value]


def test_url_restores_the_view(at):
    at.query_params.update({"prompt": "The capital of France is", "token": "3", "threshold": "0.1", "node": "attn:5:3", "head": "5.2"})
    at.run()
    assert not at.exception
    assert at.session_state["token"] == 3 and at.session_state["threshold"] == 0.1
    assert "layer 5 after attention, token 3 ␣France" in [t.value for t in at.main.text]


@pytest.mark.parametrize(
    "params",
    [
        {"threshold": "nan", "token": "-99"},
        {"threshold": "-1", "token": "x", "node": "attn:99:0", "head": "1.999", "neuron": "bogus"},
        {"model": "no-such-model", "edge": "edge|attention|1|9|0"},
        {"pinned_only": "yes", "lens": "sideways"},
    ],
)
def test_bad_url_values_are_named_and_dropped(at, params):
    at.query_params.update({"prompt": "The capital of France is", **params})
    at.run()
    assert not at.exception
    assert at.warning, "a bad URL value was dropped silently"
    if "pinned_only" in params:
        warned = " ".join(w.value for w in at.warning)
        assert "pinned\\_only='yes'" in warned and "expected 1 or 0" in warned and "expected one of probability" in warned, warned
    assert "predicts ␣Paris" in caption(at)


def test_broken_config_shows_a_message(at, tmp_path, monkeypatch):
    bad = tmp_path / "config.yaml"
    bad.write_text("models: [unclosed")
    monkeypatch.setenv("LMTT_CONFIG", str(bad))
    at.run()
    assert not at.exception
    assert "not valid YAML" in at.error[0].value


def test_two_clicks_from_an_edge_to_an_ablation_effect(at, traces):
    ran(at)
    click(at, "graph_chart", "edge|attention|45|3|4")  # layer 22, " France" -> " is"
    click(at, "edge_heads", 4)  # click 1: a head of the edge
    assert not at.exception, at.exception
    assert at.session_state["head"] == (22, 4)
    assert "**Head L22.H4** at token 4 (␣is)" in [m.value for m in at.main.markdown]
    assert {"Promoted", "Suppressed", "Its attention from token 4"} <= {c.value for c in at.main.caption}
    next(b for b in at.main.button if b.label == "Zero").click().run()  # click 2: the ablation
    assert not at.exception, at.exception
    assert at.session_state["edits"] == ["head:22.4:zero"]
    assert at.query_params["edit"] in ("head:22.4:zero", ["head:22.4:zero"])
    labels = [m.label for m in at.main.metric]
    assert "p of ␣Paris" in labels and "logit of ␣Paris" in labels
    table = next(d.value for d in at.main.dataframe if "p before" in d.value.columns)
    assert list(table.columns) == ["before", "p before", "after", "p after"] and table["before"].iloc[0] == "␣Paris"
    at.toggle(key="graph_head_show_edited").set_value(True).run()
    assert "with the edits" in caption(at)
    n = len(traces)
    at.sidebar.slider(key="_w_threshold").set_value(0.1).run()  # the edited run is cached too
    assert len(traces) == n and not at.exception


def test_the_chip_shows_edits_on_every_page_and_clears_them(at):
    at.query_params.update({"prompt": "The capital of France is"})
    at.query_params["edit"] = ["head:23.4:zero", "neuron:3.5:x0.5"]
    at.run()
    for page in ("app.py", "pages/contributions.py", "pages/interpretation.py", "pages/compare.py"):
        at.switch_page(page).run()
        assert not at.exception, at.exception
        chip = [m.value for m in at.main.markdown if "edits active" in m.value]
        assert chip == [":orange-badge[✎ 2 edits active: head L23.H4 zeroed, neuron L3.N5 scaled ×0.5]"], page
    at.button(key="chip_clear").click().run()
    assert at.session_state["edits"] == [] and "edit" not in at.query_params
    assert not [m for m in at.main.markdown if "edits active" in m.value]


def test_a_new_run_drops_the_old_prompts_edits_and_selections(at):
    at.query_params.update({"prompt": "The capital of France is", "node": "attn:22:4", "head": "22.4", "compare": "Rome is"})
    at.query_params["edit"] = ["head:23.4:zero"]
    at.switch_page("pages/contributions.py").run()
    assert at.session_state["edits"] == ["head:23.4:zero"] and at.query_params["head"] == "22.4"
    ran(at, "The capital of Italy is")
    assert not at.exception, at.exception
    assert at.session_state["edits"] == [] and at.session_state["head"] is None and at.session_state["compare"] == ""
    assert set(at.query_params) == {"model", "prompt", "token", "threshold", "norm"}
    assert at.query_params["prompt"] == "The capital of Italy is"
    assert not [m for m in at.main.markdown if "edits active" in m.value]


def test_pinned_edits_survive_a_new_run(at):
    at.query_params.update({"prompt": "The capital of France is", "node": "attn:22:4"})
    at.query_params["edit"] = ["head:23.4:zero"]
    at.run()
    at.sidebar.toggle(key="pin").set_value(True).run()
    ran(at, "The capital of Italy is")
    assert at.session_state["edits"] == ["head:23.4:zero"] and at.query_params["node"] == "attn:22:4"


def test_a_link_carries_only_the_open_views_state(at):
    at.query_params.update(
        {"prompt": "The capital of France is", "node": "ffn:3:4", "head": "3.1", "neuron": "3.7", "compare": "Rome is", "dataset": "/srv"}
    )
    at.run()  # Graph: no edge is open, so no head; no neuron, compare or path
    assert set(at.query_params) == {"model", "prompt", "token", "threshold", "norm", "node"}
    at.switch_page("pages/contributions.py").run()
    assert at.query_params["neuron"] == "3.7" and "compare" not in at.query_params
    at.switch_page("pages/compare.py").run()
    assert at.query_params["compare"] == "Rome is" and "node" not in at.query_params and "neuron" not in at.query_params
    at.switch_page("pages/dataset.py").run()
    assert set(at.query_params) == {"model", "prompt", "token", "threshold", "norm"}


def test_contributions_head_and_neuron_are_editable_in_place(at):
    at.query_params.update({"prompt": "The capital of France is", "node": "attn:22:4"})
    at.switch_page("pages/contributions.py").run()
    assert not [b for b in at.main.button if b.label == "Zero"], "an edit offered before a head was chosen"
    click(at, "head_chart", 4)
    next(b for b in at.main.button if b.label == "Mean").click().run()
    assert at.session_state["edits"] == ["head:22.4:mean"]
    assert any("reads the **unedited** run" in i.value for i in at.main.info)  # its shares are the model's own
    next(b for b in at.main.button if b.label == "Zero").click().run()  # the same head: replaced, not stacked
    assert at.session_state["edits"] == ["head:22.4:zero"]
    at.main.radio[0].set_value("FFN").run()
    assert not [b for b in at.main.button if b.label == "Zero"]
    click(at, "neuron_chart", 7)
    at.main.number_input(key="contrib_neuron_factor").set_value(2.0)
    next(b for b in at.main.button if b.label == "Scale").click().run()
    assert not at.exception, at.exception
    assert at.session_state["edits"] == ["head:22.4:zero", "neuron:22.7:x2"]
    assert any("2 edits active" in m.value for m in at.main.markdown)


def test_no_neuron_edit_before_a_neuron_is_chosen(at):
    ran(at)
    at.switch_page("pages/interpretation.py").run()
    assert not at.exception, at.exception
    assert not [b for b in at.main.button if b.label in ("Zero", "Mean", "Scale")]
    assert any("Choose a layer and a neuron" in i.value for i in at.main.info)
    at.main.number_input(key="_w_neuron_layer").set_value(23).run()
    at.main.number_input(key="_w_neuron_index").set_value(5).run()
    assert "Neuron L23.N5" in [s.value for s in at.main.subheader]
    assert at.session_state["neuron"] == (23, 5)


def test_logit_lens_follows_any_token_and_shows_top_tokens(at):
    ran(at)
    at.switch_page("pages/interpretation.py").run()
    lens = json.loads(next(c for c in at.get("plotly_chart") if c.key == "lens").proto.spec)
    assert lens["layout"]["title"]["text"].startswith("Top token of every state")
    assert lens["data"][0]["text"][-1][-1] == "␣Paris"  # the top token is written in the cells: the output state at the last token
    at.main.radio(key="lens_mode").set_value("probability").run()
    at.main.text_input(key="lens_follow").input(" Rome").run()
    assert not at.exception, at.exception
    lens = json.loads(next(c for c in at.get("plotly_chart") if c.key == "lens").proto.spec)
    assert lens["layout"]["title"]["text"].startswith("probability of ␣Rome (followed")


def test_dataset_page_runs_pasted_prompts(at):
    at.switch_page("pages/dataset.py").run()
    assert not at.exception, at.exception
    assert not at.main.text_input, "the Dataset page asks for a server path"
    at.main.text_area(key="dataset_text").input("The capital of France is\nThe capital of Italy is\n\n").run()
    at.button(key="dataset_run").click().run()
    assert not at.exception, at.exception
    assert any("2 prompts. A head's importance is its direct effect" in c.value for c in at.main.caption)
    always = at.main.dataframe[0].value  # important for every prompt: the largest mean |effect| first
    assert list(always.columns) == ["head", "mean effect"] and len(always) > 1
    assert all(re.fullmatch(r"L\d+\.H\d+", name) for name in always["head"]), "heads are named as on every page (L23.H4)"
    assert list(always["mean effect"].abs()) == sorted(always["mean effect"].abs(), reverse=True)
    click(at, "dataset_heads", [23, 4])
    assert "Head L23.H4: the prompts where it mattered most" in [s.value for s in at.main.subheader]
    assert len(at.main.dataframe[-1].value) == 2
    glu = next(d.value for d in at.main.dataframe if "quadrant (gate, up)" in d.value.columns)
    assert len(glu) == 4 and all(m.startswith("— (no position)") or float(m) == float(m) for m in glu["mean activation"])
    click(at, "dataset_share", [28, 8])  # the share heatmap's hover says "click for its prompts": its click opens them too
    assert "Head L28.H8: the prompts where it mattered most" in [s.value for s in at.main.subheader]


def test_url_restores_interventions(at):
    at.query_params.update({"prompt": "The capital of France is"})
    at.query_params["edit"] = ["head:20.1:zero", "neuron:3.5:x0.5", "bogus"]
    at.switch_page("pages/interpretation.py").run()
    assert not at.exception, at.exception
    assert at.session_state["edits"] == ["head:20.1:zero", "neuron:3.5:x0.5"]
    assert any("bogus" in w.value for w in at.warning)
    shown = [c.value for c in at.sidebar.code]  # "Copy link to this view": every edit, not the last one alone
    assert len(shown) == 1 and "edit=head%3A20.1%3Azero" in shown[0] and "edit=neuron%3A3.5%3Ax0.5" in shown[0], shown


def test_compare_page(at, traces):
    ran(at)
    at.switch_page("pages/compare.py").run()
    assert not at.exception and "Enter a second prompt" in at.info[0].value
    at.main.text_input(key="_w_compare").input("The capital of Italy is").run()
    assert not at.exception, at.exception
    assert at.query_params["compare"] == "The capital of Italy is"
    table = at.main.dataframe[-1].value
    assert list(table.columns)[:3] == ["layer", "edge", "into"] and len(table) == 25
    assert {"compare_graph_A", "compare_graph_B", "head_delta"} <= {c.key for c in at.get("plotly_chart")}
    n = len(traces)
    at.sidebar.slider(key="_w_threshold").set_value(0.1).run()
    assert len(traces) == n and not at.exception


def test_generate_then_explain_a_generated_token(at, traces):
    at.run()
    at.sidebar.number_input(key="gen_n").set_value(3)
    at.sidebar.button(key="gen_go").click().run()
    assert not at.exception, at.exception
    text = at.session_state["run"][1]
    assert text.startswith("The capital of France is Paris")
    options = at.sidebar.selectbox(key="_w_token").options
    assert options[5] == "5: ␣Paris ✦" and "✦" not in options[4]
    # the first generated token is explained by default: the graph of the prompt's last token, which predicted it
    assert at.session_state["token"] == 4 and "predicts ␣Paris" in caption(at)
    assert at.query_params["gen"] == "5"
    assert "<|im_end|>" not in at.sidebar.text_area(key="_w_prompt").value
    n = len(traces)
    at.sidebar.selectbox(key="_w_token").set_value(6).run()  # a generated token: no new run
    assert len(traces) == n


def test_generation_stops_at_the_first_special_token():
    from lmtt.ui.runs import stop_at_special

    special = ["<|im_end|>", "<|endoftext|>"]
    assert stop_at_special("Hi Paris.<|im_end|>\nmore", "Hi", special) == "Hi Paris."
    assert stop_at_special("Hi Paris.", "Hi", special) == "Hi Paris."
    assert stop_at_special("<|im_end|>Hi there", "<|im_end|>Hi", special) == "<|im_end|>Hi there"  # the prompt's own are kept


def test_a_long_prompt_draws_the_touched_columns_and_the_toggle_draws_every_one(at):
    ran(at, " ".join(["The quick brown fox jumps over the lazy dog."] * 10))  # 100 tokens

    def columns() -> list[str]:
        spec = json.loads(next(c for c in at.get("plotly_chart") if c.key == "graph_chart").proto.spec)
        nodes = [n for t in spec["data"] if t.get("name") == "nodes" for n in t["customdata"]]
        return sorted((n for n in nodes if n.startswith("emb:")), key=lambda n: int(n[4:]))  # an embedding node per drawn column

    packed = columns()
    assert packed[-1] == "emb:99" and len(packed) < 100
    toggle = next(t for t in at.main.toggle if t.label == "Every token's column")
    assert not toggle.value and not toggle.disabled
    toggle.set_value(True).run()
    assert not at.exception
    assert columns() == [f"emb:{p}" for p in range(100)]


def test_the_analysis_progress_bar_is_updated_at_most_twice_a_second(monkeypatch):
    """Each update is a message the browser draws on the analysis's cores: a 30-layer analysis sent 31 in 5 s."""
    from lmtt.ui import runs

    clock = iter([0.0, 0.1, 0.2, 0.6, 0.7, 1.2, 1.25])
    monkeypatch.setattr(runs.time, "perf_counter", lambda: next(clock))
    sent = []

    class Bar:
        def progress(self, fraction, text):
            sent.append((fraction, text))

    update = runs.throttled(Bar(), every_s=0.5)
    for step in range(7):
        update(step / 6, f"layer {step}")
    assert sent == [(0.0, "layer 0"), (0.5, "layer 3"), (5 / 6, "layer 5")]


def test_a_question_draws_its_progress_only_after_a_while_and_then_rarely(monkeypatch):
    """Issue 20: each progress message is drawn by the browser on the question's own cores, so a question answered
    within SHOW_AFTER_S draws no bar, and a longer one updates it at most every EVERY_S; Cancel comes with the bar."""
    from lmtt.ui import progress

    drawn = []

    class Bar:
        def progress(self, fraction, text):
            drawn.append((round(fraction, 3), text.split(" · ")[0]))

    class Place:  # a placeholder: Cancel and the bar each replace one
        def empty(self):
            drawn.append("emptied")

        def button(self, label, **_):
            drawn.append(label)

        def progress(self, *_a, **_k):
            return Bar()

    monkeypatch.setattr(progress.st, "empty", Place)
    monkeypatch.setattr(progress, "ss", {})
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])

    quick = progress.Steps("quick", "Quick", show_after_s=0.4, every_s=0.25)
    for done, t in ((1, 0.1), (2, 0.2), (3, 0.39)):
        clock[0] = t
        quick(done, 3)
    quick.close()
    assert drawn == ["emptied"] * 4  # answered in 0.39 s: no bar, no Cancel (its two places emptied, then cleared)

    drawn.clear()
    clock[0] = 10.0
    slow = progress.Steps("slow", "Slow", show_after_s=0.4, every_s=0.25)
    for done, t in ((1, 10.3), (2, 10.45), (3, 10.6), (4, 10.8), (5, 10.9), (6, 11.0)):
        clock[0] = t
        slow(done, 10)
    assert drawn[2:] == ["Cancel", (0.2, "Slow: 2 of 10 steps done"), (0.4, "Slow: 4 of 10 steps done")]  # at 0.45 s and 0.8 s
    assert progress.ss["_steps_slow"] == (6, 10, pytest.approx(1.0))  # Cancel's message counts every step, drawn or not


def test_tables_show_three_significant_digits():
    """Issue 20: a table's decimal numbers read to 3 significant digits (0.7725 as 0.773, 40.3464 as 40.3), in every
    float column the caller does not format itself; whole numbers and text keep theirs."""
    import streamlit as st

    from lmtt.ui.panels import table

    class Place:  # where the table goes: records what st.dataframe would get
        def dataframe(self, frame, **options):
            self.frame, self.options = frame, options

    where = Place()
    custom = st.column_config.NumberColumn(format="%.2e")
    table({"token": ["␣Paris"], "id": [7042], "prob": [0.7725], "effect": [40.3464], "p": [1e-9]}, where, column_config={"p": custom})
    config = where.options["column_config"]
    assert set(config) == {"prob", "effect", "p"} and config["p"] == custom
    assert config["prob"]["type_config"]["format"] == config["effect"]["type_config"]["format"] == "%.3g"
    assert where.options["hide_index"] is True and list(where.frame.columns) == ["token", "id", "prob", "effect", "p"]


def test_what_the_user_typed_is_shown_as_typed_in_a_warning(at):
    """A look-up of "$x$ **y** <b>z</b>" (not one token) had been warned about in Markdown and LaTeX: an italic x, a
    bold y and a garbled token list, where the user needs to read the split."""
    at.query_params.update({"prompt": "The capital of France is", "head": "23.4"})
    at.switch_page("pages/interpretation.py").run()
    at.text_input(key="head_lookup").input("$x$ **y** <b>z</b>").run()
    assert not at.exception, at.exception
    warning = next(w.value for w in at.warning if "not one" in w.value)
    assert "\\$x\\$ \\*\\*y\\*\\* \\<b\\>z\\</b\\>" in warning, warning  # every Markdown, LaTeX and HTML character escaped


def test_a_neurons_projection_says_where_it_is_read(at):
    """The neuron tab's second chart had no heading: nothing said it is what the neuron writes at the chosen token."""
    at.query_params.update({"prompt": "The capital of France is", "neuron": "23.604"})
    at.switch_page("pages/interpretation.py").run()
    assert not at.exception, at.exception
    assert any(m.value.startswith("**What it writes at token 4 (") for m in at.main.markdown), [m.value for m in at.main.markdown]


def test_search_by_token_names_each_tables_unit(at, default_runner):
    """The four tables had one column name, "score", for logits (+2.82), a copying score (+351) and an effect per unit
    of activation: each now says which, and its rows are the library's."""
    import lmtt

    at.query_params["prompt"] = "The capital of France is"
    at.run()
    at.switch_page("pages/interpretation.py").run()
    at.text_input(key="search_token").input(" Paris").run()
    assert not at.exception, at.exception
    found = lmtt.analyze(default_runner, "The capital of France is").search_token(" Paris", 4, 10, True)
    tables = [d.value for d in at.main.dataframe][-4:]
    units = ["direct effect (logits)", "direct effect (logits)", "copying score", "direct effect per unit of activation (logits)"]
    hits = (found.in_context_heads, found.in_context_neurons, found.weight_heads, found.weight_neurons)
    for table, unit, expected in zip(tables, units, hits):
        assert list(table.columns) == ["component", unit]
        assert table[unit].tolist() == pytest.approx([h.score for h in expected], rel=1e-4, abs=1e-6)


def test_an_emptied_head_box_keeps_the_head(at):
    """A Layer box that reports empty keeps the chosen head, and shows it again (two CI runs had found head 23.4 gone,
    the boxes empty, with no new run)."""
    at.query_params.update({"prompt": "The capital of France is", "head": "23.4"})
    at.run()
    at.switch_page("pages/interpretation.py").run()
    at.number_input(key="_w_head_layer").set_value(None).run()
    assert not at.exception, at.exception
    assert at.session_state["head"] == (23, 4) and at.number_input(key="_w_head_layer").value == 23
    at.number_input(key="_w_head_layer").set_value(20).run()
    assert at.session_state["head"] == (20, 4)  # a new layer still chooses a new head
