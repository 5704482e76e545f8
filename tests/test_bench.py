"""`python -m lmtt.bench`'s real-size shapes and flags, on sizes that fit a test run.

The shapes' parameter counts are checked against the published model sizes, built on the meta device
(no memory). The flags run end to end on tiny configs of the same classes.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from lmtt.tools import bench

# published total parameter counts, in billions (model cards)
PUBLISHED_B = {
    "llama-3.2-1b": 1.24,
    "qwen3-1.7b": 1.72,
    "gemma-2-2b": 2.61,
    "llama-3.1-8b": 8.03,
    "mixtral-8x7b": 46.7,
    "qwen3-30b-a3b": 30.5,
    "gpt-oss-20b": 20.9,
}
TINY = dict(hidden_size=64, intermediate_size=64, moe_intermediate_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16)


def test_every_shape_is_benchmarked_with_a_published_size():
    assert set(PUBLISHED_B) == set(bench.SHAPES) == set(bench.REAL_SIZE_LAYERS)


@pytest.mark.parametrize("name", sorted(PUBLISHED_B))
def test_shapes_have_their_published_parameter_counts(name):
    model = bench.shape_model(name, "meta", "bfloat16")
    n = sum(p.numel() for p in model.parameters())
    assert n / 1e9 == pytest.approx(PUBLISHED_B[name], rel=0.02)
    assert bench.weights_mb(model) == pytest.approx(2 * n / 2**20)  # two bytes a bfloat16 parameter


@pytest.mark.parametrize("name", ["mixtral-8x7b", "qwen3-30b-a3b", "gpt-oss-20b"])
def test_layers_keep_the_widths_and_cut_the_depth(name):
    full = bench.shape_model(name, "meta", "bfloat16")
    two = bench.shape_model(name, "meta", "bfloat16", layers=2)
    assert two.config.num_hidden_layers == 2
    for key in ("hidden_size", "num_attention_heads", "vocab_size"):
        assert getattr(two.config, key) == getattr(full.config, key)
    experts = getattr(full.config, "num_local_experts", None) or full.config.num_experts
    assert experts == (getattr(two.config, "num_local_experts", None) or two.config.num_experts) > 1
    per_layer = (sum(p.numel() for p in full.parameters()) - sum(p.numel() for p in two.parameters())) / (full.config.num_hidden_layers - 2)
    assert per_layer * full.config.num_hidden_layers < sum(p.numel() for p in full.parameters())  # the rest is embeddings


@pytest.mark.parametrize("name", ["mixtral-8x7b", "qwen3-30b-a3b", "gpt-oss-20b", "llama-3.1-8b"])
def test_a_bf16_worker_reports_memory_and_ratios(name, monkeypatch):
    """The worker that `--shape NAME --dtype bfloat16 --layers 1` runs, on a tiny config of the shape's class."""
    config_class, dims = bench.SHAPES[name]
    monkeypatch.setitem(bench.SHAPES, name, (config_class, {**dims, **{k: v for k, v in TINY.items() if k in dims}, "vocab_size": 32000}))
    r = bench.run_size(24, "cpu", 1, shape=name, dtype="bfloat16", layers=1)
    model = bench.shape_model(name, "cpu", "bfloat16", layers=1)
    assert next(model.parameters()).dtype == torch.bfloat16
    assert r["weights_mb"] == pytest.approx(bench.weights_mb(model))
    assert r["peak_rss_mb"] > r["weights_mb"] > 0 and r["peak_rss_mb"] > r["trace_mb"] > 0
    assert r["full_ratio"] == pytest.approx((r["trace_s"] + r["full_graph_s"]) / r["forward_s"])
    assert r["od_ratio"] == pytest.approx((r["trace_s"] + r["on_demand_s"]) / r["forward_s"])
    report = {"device": "cpu", "repeats": 1, "machine": bench.machine(), "results": [{"shape": name, "layers": 1, **r}]}
    row = bench.real_sizes_markdown(report).splitlines()[-1]
    assert row.startswith(f"| {name} | 1 | 24 | ") and f"{bench.overhead(r):.2f}" in row


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--layers", "2"], "apply to a --shape"),
        (["--dtype", "bfloat16"], "apply to a --shape"),
        (["--shape", "mixtral-8x7b", "--layers", "0"], "at least 1"),
        (["--shape", "gpt-5"], "unknown --shape"),
        (["--shape", "mixtral-8x7b", "--dtype", "float8"], "invalid choice"),
    ],
)
def test_bad_flags_are_refused_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main([*argv, "--sizes", "8", "--out", ""])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_dashboard_table_reports_what_was_measured():
    """`python -m lmtt.tools.dashboard`'s RESULTS table: the app's time over the engine and the app / library ratio,
    from hand-made timings (the browser run itself is a tool, not a test)."""
    from lmtt.tools import dashboard

    nan = float("nan")
    runs = [  # three 4,000-token prompts: the medians are of different runs, and "over" is each run's own difference
        dashboard.GraphTiming(4000, 25.0, 35.75, 5.3, 10.75, fresh_engine_s=33.0),  # the first, also in a new process
        dashboard.GraphTiming(4000, 20.0, 23.0, nan, 3.0),  # no click was taken
        dashboard.GraphTiming(4000, 30.0, 34.0, 0.5, 4.0),
    ]
    many = dashboard.summary(runs)
    assert (many.engine_s, many.first_graph_s, many.node_click_s, many.runs) == (25.0, 34.0, 2.9, 3)
    assert (many.over_s, many.over_min_s, many.over_max_s) == (4.0, 3.0, 10.75)
    one = dashboard.summary([dashboard.GraphTiming(500, 2.0, 4.5, nan, 2.5)])
    result = {"graphs": [asdict(many), asdict(one)], "questions": [{"question": "faithfulness curve", "library_s": 2.0, "app_s": 3.0}]}
    table = dashboard.markdown(result).splitlines()
    assert "| 4,000 | 3 | 25.00 | 34.00 | +4.00 (+3.00 to +10.75) | 2.90 |" in table
    assert "| 500 | 1 | 2.00 | 4.50 | +2.50 | not taken |" in table
    assert "| 4,000 | 35.75 | 33.00 | +2.75 |" in table  # the first prompt against the engine in a new process
    assert not [row for row in table if row.startswith("| 500 | 4.50")]  # none was timed so
    assert "| faithfulness curve | 2.00 | 3.00 | 1.50× |" in table


@pytest.mark.default_model
def test_the_dashboard_repeats_a_size_with_other_prompts_of_that_size(default_runner):
    """`--repeats N`: each repeat is another text (a cache miss in the server) of exactly the size, with no white space
    at its ends for the text box to lose."""
    from lmtt.tools import dashboard

    prompts = [dashboard.prompt_of(default_runner.tokenizer, 500, r * dashboard.REPEAT_SKIP) for r in range(3)]
    assert len(set(prompts)) == 3
    assert all(len(default_runner.tokenize(p)) == 500 and p == p.strip() for p in prompts)


@pytest.mark.default_model
def test_the_dashboard_dataset_question_runs_new_one_line_prompts_each_repeat(default_runner):
    """The Dataset question's prompts: DATASET_PROMPTS of DATASET_TOKENS tokens, one line each (the page splits its box
    into lines), and another set for each repeat (each a cache miss in the server)."""
    from lmtt.tools import dashboard

    sets = [dashboard.dataset_prompts(default_runner.tokenizer, r) for r in range(dashboard.REPEATS)]
    prompts = [p for s in sets for p in s]
    assert all(len(s) == dashboard.DATASET_PROMPTS for s in sets) and len(set(prompts)) == len(prompts)
    assert all("\n" not in p and p == p.strip() and len(default_runner.tokenize(p)) == dashboard.DATASET_TOKENS for p in prompts)


@pytest.mark.default_model
def test_the_dashboard_questions_can_follow_a_preface_of_prose(default_runner):
    """`--preface-tokens N`: both prompts of the questions after the same N tokens of prose, so that patching can pair
    them (the same token count), and the questions are N tokens longer than without a preface."""
    from lmtt.tools import dashboard

    assert dashboard.question_prompts(default_runner.tokenizer, 0) == dashboard.QUESTION_PROMPT
    clean, corrupt = dashboard.question_prompts(default_runner.tokenizer, 40)
    short = [len(default_runner.tokenize(p)) for p in dashboard.QUESTION_PROMPT]
    assert clean.endswith(dashboard.QUESTION_PROMPT[0]) and corrupt.endswith(dashboard.QUESTION_PROMPT[1])
    assert len(default_runner.tokenize(clean)) == len(default_runner.tokenize(corrupt)) > short[0] + 40 - 2
