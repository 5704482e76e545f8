"""The CLI's target questions (--dla, --direct-threshold, --lens, --faithfulness, --patch), --ids, --chat, and config discovery."""

import json
from pathlib import Path

import pytest

from lmtt.engine.config import DEFAULT_CONFIG, find_config
from lmtt.tools import cli

ROOT = Path(__file__).resolve().parent.parent


def test_config_is_found_the_same_way_everywhere(monkeypatch, tmp_path):
    monkeypatch.delenv("LMTT_CONFIG", raising=False)
    assert find_config() == DEFAULT_CONFIG
    monkeypatch.setenv("LMTT_CONFIG", str(tmp_path / "env.yaml"))
    assert find_config() == tmp_path / "env.yaml"
    assert find_config(None, ["app.py", "--config", "a.yaml"]) == Path("a.yaml")
    assert find_config(None, ["app.py", "--config=b.yaml"]) == Path("b.yaml")
    assert find_config("c.yaml", ["app.py", "--config", "a.yaml"]) == Path("c.yaml")


def test_cli_reads_lmtt_config(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LMTT_CONFIG", str(tmp_path / "missing.yaml"))
    assert cli.main(["analyze", "--prompt", "x"]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ids", "1,x"], "comma-separated integers"),
        (["--prompt", "x", "--direct-threshold", "-1"], "--direct-threshold"),
        (["--ids", "1,2", "--chat"], "need --prompt"),
    ],
)
def test_bad_flags_give_one_line(argv, message, capsys):
    assert cli.main(["analyze", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def run_json(cli, *args: str) -> dict:
    out = cli("analyze", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.default_model
def test_cli_target_questions_on_the_default_model(cli):
    r = run_json(
        cli,
        "--prompt", "The capital of France is", "--target", " Paris", "--contrast", " Rome",
        "--dla", "--direct-threshold", "1", "--lens", "--faithfulness", "--threshold", "0", "--patch", "The capital of Italy is",
    )  # fmt: skip
    assert r["target"]["quantity"] == "logit(' Paris') - logit(' Rome')"
    d = r["direct_effects"]
    assert d["sum_of_direct_effects"] == pytest.approx(d["value"], abs=1e-4 * max(1, abs(d["value"])))
    assert r["faithfulness"]["faithfulness"] == pytest.approx(1.0, abs=1e-6)
    assert len(r["target_lens"]["quantity"]) == 61
    assert r["patching"]["resid"][0][3] == pytest.approx(1.0, abs=1e-3)  # ' France' at layer 0
    assert all(abs(e["effect"]) >= 1 for e in r["direct_edges"])


@pytest.mark.default_model
def test_cli_ids_and_chat_template(cli):
    ids = run_json(cli, "--ids", "504,3575,282,4649,314")  # "The capital of France is"
    assert ids["tokens"] == ["The", " capital", " of", " France", " is"]
    chat = run_json(cli, "--prompt", "What is the capital of France?", "--chat")
    assert chat["chat_prompt"].startswith("<|im_start|>") and chat["chat_prompt"].endswith("<|im_start|>assistant\n")
    assert "".join(chat["tokens"][-3:]) == "assistant\n"


@pytest.mark.default_model
def test_cli_draws_the_paths_to_any_node(cli):
    """--node: the graph of why an intermediate state is what it is; every edge leads to that node or below it."""
    r = run_json(cli, "--prompt", "The capital of France is", "--node", "ffn:12:3", "--threshold", "0.05")
    assert r["graph"]["root"] == "ffn:12:3"
    targets = {e["target"] for e in r["graph"]["edges"]}
    assert "ffn:12:3" in targets
    assert all(t.startswith("emb:") or int(t.split(":")[1]) <= 12 for t in targets)
    bad = cli("analyze", "--prompt", "The capital of France is", "--node", "ffn:99:0")
    assert bad.returncode != 0 and "out of range" in bad.stderr


@pytest.mark.default_model
def test_cli_reads_a_probe_direction_at_a_node(cli, tmp_path):
    """--probe FILE: a (576,) direction from .npy or .pt, read at --node; bad files give one clear line."""
    import numpy as np
    import torch

    w = np.random.default_rng(0).standard_normal(576).astype(np.float32)
    np.save(tmp_path / "probe.npy", w)
    torch.save(torch.from_numpy(w), tmp_path / "probe.pt")
    a = run_json(cli, "--prompt", "The capital of France is", "--probe", str(tmp_path / "probe.npy"), "--node", "ffn:12:3")
    b = run_json(cli, "--prompt", "The capital of France is", "--probe", str(tmp_path / "probe.pt"), "--node", "ffn:12:3")
    assert a["probe"]["node"] == "ffn:12:3" and a["probe"]["value"] == pytest.approx(b["probe"]["value"])
    assert a["probe"]["sum_of_effects"] == pytest.approx(a["probe"]["value"], rel=1e-4, abs=1e-4)
    np.save(tmp_path / "wrong.npy", w[:100])
    bad = cli("analyze", "--prompt", "The capital of France is", "--probe", str(tmp_path / "wrong.npy"))
    assert bad.returncode != 0 and "shape (576,)" in bad.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a tensor")
    junk = cli("analyze", "--prompt", "The capital of France is", "--probe", str(tmp_path / "junk.pt"))
    assert junk.returncode != 0 and "cannot read a direction" in junk.stderr
