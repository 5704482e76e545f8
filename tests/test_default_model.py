"""The embedded SmolLM2-135M-Instruct end to end: prediction, route, CLI contract."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import lmtt

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def analysis(default_runner) -> lmtt.Analysis:
    return lmtt.analyze(default_runner, PROMPT)


def test_shape_of_the_default_model(default_runner):
    assert (len(default_runner.blocks), default_runner.n_heads, default_runner.n_kv) == (30, 9, 3)


def test_predicts_paris(analysis):
    top = analysis.predictions(k=5)[0]
    assert top.token == " Paris"
    assert top.score == pytest.approx(0.77, abs=0.02)


def test_runner_logits_equal_the_models_own(default_runner, analysis):
    with torch.no_grad():
        own = default_runner.model(input_ids=analysis.trace.token_ids[None]).logits[0]
    assert torch.allclose(analysis.trace.logits, own.float(), rtol=0, atol=1e-4 * float(own.abs().max()))
    assert torch.allclose(analysis.trace.logits_at(2), own[2].float(), rtol=0, atol=1e-4 * float(own.abs().max()))


def test_graph_routes_france_to_the_last_token(analysis):
    france = analysis.tokens.index(" France")
    sub = analysis.paths_to(-1, 0.04)
    assert any(
        e["kind"] == "attention" and e["source"].endswith(f":{france}") and e["target"].endswith(f":{len(analysis.tokens) - 1}")
        for e in sub.edges()
    )
    # and the France embedding itself is on a route to the output
    assert f"emb:{france}" in {n["id"] for n in sub.nodes()}


def test_threads_on_the_shared_model_get_their_own_results(default_runner):
    prompts = [PROMPT, "The Eiffel Tower is in", "One, two, three,", "Water boils at"]
    expected = [default_runner.trace(p) for p in prompts]
    got: dict[int, lmtt.Trace] = {}
    barrier = threading.Barrier(len(prompts))

    def work(k):
        barrier.wait()
        got[k] = default_runner.trace(prompts[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(prompts))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for k, trace in enumerate(expected):
        assert torch.equal(got[k].logits, trace.logits)
        for name in ("queries", "values", "resid"):
            assert all(torch.equal(x, y) for x, y in zip(getattr(got[k], name), getattr(trace, name))), name


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmtt", "analyze", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_json_contract():
    """The real entry point, `python -m lmtt`, in a subprocess of its own (the other CLI tests share this process's model)."""
    proc = run_cli("--prompt", PROMPT, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"model", "tokens", "predictions", "graph"}
    assert out["model"] == "smollm2-135m"
    assert out["tokens"] == ["The", " capital", " of", " France", " is"]
    assert out["predictions"][0]["token"] == " Paris"
    ids = {n["id"] for n in out["graph"]["nodes"]}
    for n in out["graph"]["nodes"]:
        assert set(n) == {"id", "layer", "position", "kind"}
    for e in out["graph"]["edges"]:
        assert set(e) == {"source", "target", "weight", "kind"}
        assert e["source"] in ids and e["target"] in ids and e["weight"] > 0.04


def test_cli_threshold_zero_and_token(cli):
    proc = cli("analyze", "--prompt", PROMPT, "--json", "--threshold", "0", "--token", "1")
    out = json.loads(proc.stdout)
    targets = {e["target"] for e in out["graph"]["edges"]}
    assert all(t.endswith(":0") or t.endswith(":1") for t in targets)
    # Layers 0-28: into attn(0) 1 attention + 1 residual, into attn(1) 2 + 1, into each ffn node
    # 1 residual + 1 FFN. Layer 29: only token 1's two nodes lead to the root (3 + 2).
    assert len(out["graph"]["edges"]) == 29 * (2 + 3 + 2 * 2) + (3 + 2)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--prompt", "   "], "empty"),
        (["--prompt", PROMPT, "--model", "nope"], "unknown model"),
        (["--prompt", PROMPT, "--token", "9"], "out of range"),
        (["--prompt", PROMPT, "--threshold", "nan"], "threshold"),
    ],
)
def test_cli_errors_are_one_line(cli, args, needle):
    proc = cli("analyze", *args)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_generate_edit_and_compare(cli):
    proc = cli(
        "analyze", "--prompt", PROMPT, "--json", "--generate", "2", "--edit", "head:23.4:zero",
        "--compare", "The capital of Italy is", "--token", "4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["tokens"][:6] == ["The", " capital", " of", " France", " is", " Paris"] and out["generated_from"] == 5
    change = out["intervention"]
    assert change["edits"] == ["head:23.4:zero"] and change["target"] == " Paris"
    assert change["prob_after"] < change["prob_before"] - 0.3
    assert out["comparison"]["alignment"] == "final token" and len(out["comparison"]["head_delta"]) == 30


def test_cli_bad_edit_is_one_line(cli):
    proc = cli("analyze", "--prompt", PROMPT, "--edit", "head:99.0:zero")
    assert proc.returncode == 2 and "out of range" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.default_model
def test_head_23_4s_projection_of_paris_is_its_direct_effect(analysis):
    """Issue 19: the head panel showed 44.6 for ' Paris' (W_U without the final norm); its direct effect is a few logits."""
    paris = analysis.target(-1, " Paris")
    value = analysis.head_tokens(23, -1, 4).effect_on(paris.token_id)
    assert value == pytest.approx(float(analysis.direct_effects(paris).heads[23, 4]), rel=1e-4)
    assert 0 < value < 10  # a booster, in logits
