"""AppTest (no browser) for every page: run, change threshold and token, select, switch pages, bad input."""

from pathlib import Path

import pytest
from streamlit.elements.plotly_chart import PlotlySelectionState, PlotlyState
from streamlit.testing.v1 import AppTest

from lmtt.runner import ModelRunner

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


def test_empty_state_before_run(at):
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Graph"]
    assert "press **Run**" in at.info[0].value
    labels = [link.label for link in at.sidebar.get("page_link")]
    assert labels == ["Graph", "Contributions", "Interpretation", "Compare", "Target", "Faithfulness", "Patching", "Dataset"]


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


def test_clicking_an_attention_edge_shows_its_heads(at):
    ran(at)
    click(at, "graph_chart", "edge|attention|45|3|4")  # layer 22, " France" -> " is"
    assert not at.exception
    assert [s.value for s in at.main.subheader][0] == "Attention edge"
    assert at.main.metric[0].label == "Weight (sum over heads)"


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
    assert "Layer 22, head 3: its update at token 4 (␣is)" in subheaders
    assert "Layer 22, neuron 7" in subheaders
    assert at.query_params["head"] == "22.3" and at.query_params["neuron"] == "22.7"
    at.main.radio(key="lens_mode").set_value("probability").run()
    assert not at.exception


def test_hostile_prompt_is_text(at):
    ran(at, "<img src=x onerror=alert(1)> **bold** $x$")
    assert not at.exception
    options = at.sidebar.selectbox(key="_w_token").options
    text = "".join(o.split(": ", 1)[1] for o in options).replace("␣", " ")
    assert text == "<img src=x onerror=alert(1)> **bold** $x$"


@pytest.mark.parametrize("prompt,message", [("   ", "the prompt is empty")])
def test_bad_prompts_show_an_error(at, prompt, message):
    ran(at, prompt)
    assert any(message in e.value for e in at.error)


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
    ],
)
def test_bad_url_values_are_named_and_dropped(at, params):
    at.query_params.update({"prompt": "The capital of France is", **params})
    at.run()
    assert not at.exception
    assert at.warning, "a bad URL value was dropped silently"
    assert "predicts ␣Paris" in caption(at)


def test_broken_config_shows_a_message(at, tmp_path, monkeypatch):
    bad = tmp_path / "config.yaml"
    bad.write_text("models: [unclosed")
    monkeypatch.setenv("LMTT_CONFIG", str(bad))
    at.run()
    assert not at.exception
    assert "not valid YAML" in at.error[0].value


def test_interventions_from_the_interpretation_page(at, traces):
    ran(at)
    click(at, "graph_chart", "attn:20:4")
    at.switch_page("pages/interpretation.py").run()
    at.main.number_input(key="head_layer").set_value(20).run()
    add = next(b for b in at.main.button if b.label == "Add head 20.0")
    add.click().run()
    assert not at.exception, at.exception
    assert at.session_state["edits"] == ["head:20.0:zero"]
    assert at.query_params["edit"] in ("head:20.0:zero", ["head:20.0:zero"])
    labels = [m.label for m in at.main.metric]
    assert "probability of ␣Paris" in labels
    assert {"graph_before", "graph_after"} <= {c.key for c in at.get("plotly_chart")}
    n = len(traces)
    at.sidebar.slider(key="_w_threshold").set_value(0.1).run()  # the edited run is cached too
    assert len(traces) == n and not at.exception


def test_url_restores_interventions(at):
    at.query_params.update({"prompt": "The capital of France is"})
    at.query_params["edit"] = ["head:20.1:zero", "neuron:3.5:x0.5", "bogus"]
    at.switch_page("pages/interpretation.py").run()
    assert not at.exception, at.exception
    assert at.session_state["edits"] == ["head:20.1:zero", "neuron:3.5:x0.5"]
    assert any("bogus" in w.value for w in at.warning)


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
    n = len(traces)
    at.sidebar.selectbox(key="_w_token").set_value(4).run()  # the prompt's own last token: no new run
    assert "predicts ␣Paris" in caption(at) and len(traces) == n
