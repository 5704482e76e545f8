"""Batch analysis over a prompt file: summaries, resumability, aggregates, the CLI, Ray and the Dataset page."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lmtt.questions.batch import IMPORTANT
from lmtt.tools import dataset as batch
from lmtt.tools.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["The capital of France is", "The capital of Italy is", "The capital of Japan is"]


@pytest.fixture(scope="module")
def done_dir(default_runner, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("batch")
    batch.run_batch(default_runner, PROMPTS, out)
    return out


def test_summaries_and_aggregate(done_dir):
    summaries = batch.load_summaries(done_dir)
    assert [s["prompt"] for s in summaries] == PROMPTS
    assert summaries[0]["predictions"][0]["token"] == " Paris"
    agg = json.loads((done_dir / "aggregate.json").read_text())
    assert agg["prompts"] == 3 and len(agg["mean_head_effect"]) == 30 and len(agg["mean_head_effect"][0]) == 9
    always = {(layer, h) for layer, h, _ in agg["always_important_heads"]}
    for s in summaries:  # a head that matters for every prompt is within IMPORTANT of each prompt's largest head
        largest = max(abs(v) for row in s["heads"] for v in row)
        assert all(abs(s["heads"][layer][h]) >= IMPORTANT * largest for layer, h in always)
    means = [abs(m) for *_, m in agg["always_important_heads"]]
    assert means == sorted(means, reverse=True)  # the largest mean |effect| first
    assert (23, 4) in always  # the head that moves the country to the last token (see the README)


def test_a_summary_holds_the_heads_direct_effects(default_runner):
    """A head's importance is its direct effect on logit(A) - logit(B): the DLA entry, summing with the rest to the model's own
    logit difference (an identity checked against the model's logits, not against this code)."""
    import lmtt

    a = lmtt.analyze(default_runner, PROMPTS[0])
    s = batch.summarize(a, PROMPTS[0])
    logits = a.trace.logits[-1]
    top2 = logits.topk(2).indices.tolist()
    assert s["quantity"] == a.contrast_target().describe()
    effects = a.direct_effects(a.contrast_target())
    assert effects.total == pytest.approx(float(logits[top2[0]] - logits[top2[1]]), abs=1e-3)
    assert s["heads"] == effects.heads.tolist() and s["heads"][23][4] > 0.5  # 23.4 helps ' Paris' win


def test_a_rerun_skips_what_is_done(default_runner, done_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(batch, "analyze", lambda *a, **k: calls.append(a) or pytest.fail("re-analysed a finished prompt"))
    batch.run_batch(default_runner, PROMPTS, done_dir)
    assert calls == []


def test_an_interruption_loses_only_the_prompt_in_flight(default_runner, tmp_path, monkeypatch):
    real = batch.summarize

    def flaky(analysis, prompt):
        if prompt == PROMPTS[1]:
            raise KeyboardInterrupt
        return real(analysis, prompt)

    monkeypatch.setattr(batch, "summarize", flaky)
    with pytest.raises(KeyboardInterrupt):
        batch.run_batch(default_runner, PROMPTS, tmp_path)
    assert [s["prompt"] for s in batch.load_summaries(tmp_path)] == [PROMPTS[0]]
    assert not list((tmp_path / "prompts").glob(".tmp-*"))
    monkeypatch.setattr(batch, "summarize", real)
    assert batch.run_batch(default_runner, PROMPTS, tmp_path)["prompts"] == 3


def test_cli_batch(cli, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n\n")
    cmd = ["batch", str(prompts), "--out", str(tmp_path / "out")]
    proc = cli(*cmd)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["prompts"] == 2
    again = cli(*cmd)
    assert "2 prompts, 2 already done" in again.stderr


@contextlib.contextmanager
def ray_head(env: dict[str, str]) -> Iterator[str]:
    """A local Ray head in its own process group, killed as a whole at the end: `ray stop` took 7 s here, most of it
    waiting 2 s per kind of process for killed processes that nobody reaps."""
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
           "--include-dashboard=false", "--disable-usage-stats"]
    head = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        said = []
        for line in head.stdout:  # `--block` keeps it in the foreground: it says when the cluster is up
            said.append(line)
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail("ray start --head ended early:\n" + "".join(said[-20:]))
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)


def test_batch_over_a_local_ray_cluster(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install ray)")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
    with ray_head(env) as address:
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("\n".join(PROMPTS) + "\n")
        cmd = [sys.executable, "-m", "lmtt", "batch", str(prompts), "--out", str(tmp_path / "out"), "--ray", address]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert [s["prompt"] for s in batch.load_summaries(tmp_path / "out")] == PROMPTS


def test_the_dataset_page_runs_at_most_20_prompts_in_demo_mode(tmp_path, monkeypatch):
    """A public demo bounds the batch; the page says so and runs the first 20 (no server path is ever asked for)."""
    import yaml

    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**raw, "demo_mode": True, "sample_prompts": []}))
    monkeypatch.setenv("LMTT_CONFIG", str(tmp_path / "config.yaml"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/dataset.py").run()
    assert not at.exception and not at.main.text_input
    at.main.text_area(key="dataset_text").input("\n".join(f"Prompt number {i} is" for i in range(25))).run()
    assert any("25 prompts: only the first 20 are run." in w.value for w in at.warning)


def test_ray_is_an_optional_extra():
    assert "ray" not in (ROOT / "requirements.txt").read_text().split()
