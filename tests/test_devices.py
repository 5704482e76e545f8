"""Where the work runs: one device, a GPU, or layers spread over devices by a device map.

The CUDA tests skip with a loud reason where no GPU exists (CI has none); they
were run on an H100 (see bench/RESULTS.md, "GPU"). The CPU tests check the
logic that the GPU path relies on: no copies to the CPU inside the chunk loop,
and loading through accelerate's device map.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

import lmtt
from lmtt.engine import attribution
from lmtt.engine.attribution import compute_contributions
from lmtt.engine.check import run_checks
from lmtt.engine.config import ConfigError, ModelEntry, parse_config
from lmtt.engine.edits import Edit
from lmtt.engine.graph import ContributionGraph
from lmtt.engine.loading import load_model
from lmtt.engine.ondemand import OnDemandGraph
from lmtt.engine.runner import ModelRunner
from tests import reference
from tests.test_attribution import assert_matches_oracle
from tests.test_ondemand import same_subgraph
from tests.tiny_models import tiny_model, tiny_tokenizer, token_ids

CUDA = torch.cuda.is_available()
NO_CUDA = "NO GPU HERE: the CUDA tests did not run (they need torch.cuda.is_available())"
if not CUDA:
    warnings.warn(NO_CUDA, stacklevel=1)
needs_cuda = pytest.mark.skipif(not CUDA, reason=NO_CUDA)
# The twists that touch devices: GQA + biases, post-norms + softcaps, q/k norms, MoE + shared expert, Conv1D, multipliers.
GPU_TOL = 1e-4  # a GPU's float32 kernels sum in another order than the CPU's: the oracle (from the CPU trace) to 1e-4
GPU_FAMILIES = ("llama_gqa_bias", "gemma2", "qwen3", "qwen2_moe", "gpt2", "olmo2", "granite", "gpt_oss")


def _saved(tmp_path, name: str = "llama_gqa_bias"):
    directory = tmp_path / name
    tiny_model(name).save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def _device_map(model: torch.nn.Module, place) -> dict[str, str | int]:
    """An explicit device map: each decoder layer placed by place(layer index), every other module by place(None)."""
    out: dict[str, str | int] = {}

    def visit(prefix: str, module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, torch.nn.ModuleList):
                out.update({f"{prefix}{name}.{i}": place(i) for i in range(len(child))})
            elif any(isinstance(m, torch.nn.ModuleList) for m in child.modules()):
                visit(f"{prefix}{name}.", child)
            else:
                out[f"{prefix}{name}"] = place(None)

    visit("", model)
    return out


# ---- CPU: the logic the GPU path relies on ----


def test_results_cross_devices_once_per_layer_not_per_chunk(monkeypatch, tiny_runner):
    """On a GPU every .cpu() / .numpy() / .item() / .tolist() is a synchronising copy: none inside the chunk loop."""
    trace = tiny_runner.trace(token_ids(9))
    calls = []
    for name in ("cpu", "numpy", "item", "tolist"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: calls.append(_n) or _o(self, *a, **k))
    compute_contributions(trace, tiny_runner.layer_weights, budget_bytes=1)  # one query per chunk: 9 chunks per layer
    monkeypatch.undo()
    assert len(calls) <= 2 * trace.n_layers, calls  # the FFN shares of each layer (the attention results are written in place)


def test_config_takes_a_device_map():
    raw = {"models": {"m": {"source": "path", "path": "/x", "device_map": "auto"}, "n": {"source": "path", "path": "/y"}}}
    config = parse_config(raw)
    assert config.models["m"].device_map_arg() == "auto" and config.models["n"].device_map_arg() is None
    explicit = parse_config({"models": {"m": {"source": "path", "path": "/x", "device_map": {"model.layers.0": 0, "lm_head": "cpu"}}}})
    assert explicit.models["m"].device_map_arg() == {"model.layers.0": 0, "lm_head": "cpu"}
    hash(explicit.models["m"])  # entries are cache keys
    for bad in ("everywhere", 3, {"model.layers.0": 1.5}):
        with pytest.raises(ConfigError, match="models.m.device_map"):
            parse_config({"models": {"m": {"source": "path", "path": "/x", "device_map": bad}}})


@pytest.mark.parametrize("device_map", ["auto", "explicit"])
def test_a_device_map_loads_and_gives_the_same_numbers(tmp_path, device_map):
    """A device map loads through accelerate and changes no number."""
    directory = _saved(tmp_path)
    plain_model = tiny_model("llama_gqa_bias")
    mapping = _device_map(plain_model, lambda _i: "cpu") if device_map == "explicit" else "auto"
    assert device_map == "auto" or {f"model.layers.{i}" for i in range(3)} <= set(mapping)
    entry = ModelEntry(name="tiny", source="path", path=str(directory), device_map=mapping if mapping == "auto" else tuple(mapping.items()))
    runner = load_model(entry)
    assert runner.check_report.passed, runner.check_report
    where = "cuda" if CUDA and device_map == "auto" else "cpu"  # "auto" fills the GPU first
    assert all(d.type == where for d in runner.layer_devices)
    plain = ModelRunner(plain_model, tokenizer=None)
    ids = token_ids(8)
    got, expected = runner.trace(ids), plain.trace(ids)
    assert torch.allclose(got.logits.cpu(), expected.logits, atol=GPU_TOL)
    assert_matches_oracle(compute_contributions(got, runner.layer_weights), reference.contributions(plain, expected), GPU_TOL)


def test_accelerate_hooks_do_not_change_the_trace():
    """A dispatched model (accelerate's hooks move each layer's inputs, after lmtt's pre-hooks) traces the same numbers."""
    import accelerate

    plain = ModelRunner(tiny_model("gemma2"), tokenizer=None)
    model = tiny_model("gemma2")
    model = accelerate.dispatch_model(model, device_map=_device_map(model, lambda _i: "cpu"), main_device="cpu", force_hooks=True)
    hooked = ModelRunner(model, tokenizer=None)
    assert hasattr(hooked.blocks[0], "_hf_hook")
    assert run_checks(hooked, token_ids(10)).passed
    ids = token_ids(8)
    assert_matches_oracle(compute_contributions(hooked.trace(ids), hooked.layer_weights), reference.contributions(plain, plain.trace(ids)))


# ---- CUDA ----


@pytest.fixture(scope="module", params=GPU_FAMILIES)
def gpu_pair(request):
    """(the family's tiny model on the GPU, the same weights on the CPU), in float32."""
    if not CUDA:
        pytest.skip(NO_CUDA)
    cpu = ModelRunner(tiny_model(request.param), tokenizer=None, name=request.param)
    gpu = ModelRunner(tiny_model(request.param).cuda(), tokenizer=None, name=request.param)
    return gpu, cpu


@needs_cuda
def test_identities_hold_on_the_gpu(gpu_pair):
    gpu, _ = gpu_pair
    report = run_checks(gpu, token_ids(10))
    assert report.passed, report


@needs_cuda
def test_the_trace_stays_on_the_gpu_in_float32(gpu_pair):
    gpu, _ = gpu_pair
    trace = gpu.trace(token_ids(10))
    for name in ("resid", "attn_out", "ffn_out", "queries", "keys", "values", "neuron_acts"):
        for x in getattr(trace, name):
            assert x.device.type == "cuda" and x.dtype == torch.float32, name
    assert all(w.w_out.device.type == "cuda" for w in gpu.layer_weights)


@needs_cuda
def test_gpu_contributions_equal_the_cpu_ones_and_the_oracle(gpu_pair):
    gpu, cpu = gpu_pair
    ids = token_ids(12)
    got = compute_contributions(gpu.trace(ids), gpu.layer_weights)
    cpu_trace = cpu.trace(ids)
    assert_matches_oracle(got, reference.contributions(cpu, cpu_trace), GPU_TOL)
    expected = compute_contributions(cpu_trace, cpu.layer_weights)
    for name in ("attn_edges", "attn_resid", "ffn_resid", "ffn"):
        assert torch.allclose(getattr(got, name), getattr(expected, name), atol=GPU_TOL), name


@needs_cuda
def test_gpu_on_demand_graph_equals_the_full_one(gpu_pair):
    gpu, _ = gpu_pair
    trace = gpu.trace(token_ids(12))
    full = ContributionGraph(compute_contributions(trace, gpu.layer_weights))
    lazy = OnDemandGraph(trace, gpu.layer_weights)
    for token, threshold in ((-1, 0.04), (5, 0.02)):
        same_subgraph(lazy.paths_to(token, threshold), full.paths_to(token, threshold))


@needs_cuda
def test_the_fused_kernel_compiles_for_the_gpu(compiled_kernels, monkeypatch):
    attribution.warm_up(64, "cuda")
    assert attribution.small_coords_correction.modes["cuda"] == "fused"  # the GPU build of the kernel compiled
    cpu = ModelRunner(tiny_model("llama_gqa_bias"), tokenizer=None)
    gpu = ModelRunner(tiny_model("llama_gqa_bias").cuda(), tokenizer=None)
    ids = token_ids(9)
    monkeypatch.setattr(attribution, "EAGER_BELOW", 0)  # the tiny inputs go through the compiled kernel
    assert_matches_oracle(compute_contributions(gpu.trace(ids), gpu.layer_weights), reference.contributions(cpu, cpu.trace(ids)), GPU_TOL)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_the_gpu(dtype):
    """The model in bf16/fp16, contributions in float32 on the GPU; the identities hold at the dtype's tolerance."""
    model = tiny_model("llama_gqa_bias").to("cuda", dtype)
    runner = ModelRunner(model, tokenizer=None)
    report = run_checks(runner, token_ids(10))
    assert report.passed, report
    trace = runner.trace(token_ids(10))
    assert trace.resid[0].dtype == torch.float32 and trace.resid[0].device.type == "cuda"
    c = compute_contributions(trace, runner.layer_weights)
    assert torch.allclose(c.attn_edges.sum(-1) + c.attn_resid, torch.ones_like(c.attn_resid), atol=1e-4)


@needs_cuda
def test_analysis_views_and_edits_on_the_gpu():
    """Everything the app asks of an analysis works with the model on the GPU, with the CPU's numbers."""
    cpu = ModelRunner(tiny_model("qwen2_moe"), tokenizer=None)
    gpu = ModelRunner(tiny_model("qwen2_moe").cuda(), tokenizer=None)
    ids = token_ids(10)
    a, b = lmtt.analyze(gpu, ids), lmtt.analyze(cpu, ids)
    assert [p.token for p in a.predictions()] == [p.token for p in b.predictions()]
    same_subgraph(a.paths_to(-1, 0.04), b.paths_to(-1, 0.04))
    node = f"attn:1:{len(a.tokens) - 1}"
    assert [t.token for t in a.logit_lens(node)] == [t.token for t in b.logit_lens(node)]
    assert torch.allclose(a.head_contributions(1, -1).heads.cpu(), b.head_contributions(1, -1).heads.cpu(), atol=GPU_TOL)
    a.neuron_contributions(1, -1)
    a.head_tokens(1, -1, 0)
    a.update_tokens(node)
    a.lens_grid(3)
    edit = (Edit("head", 1, 0, "zero"),)
    got, expected = a.intervene(edit), b.intervene(edit)
    assert got.after[0].token == expected.after[0].token
    assert abs(a.direct_effects().value - b.direct_effects().value) < 1e-3


@needs_cuda
def test_a_device_map_split_between_the_gpu_and_the_cpu():
    """Layers alternate between the GPU and the CPU: each layer's trace and attribution run where it lives."""
    import accelerate

    cpu = ModelRunner(tiny_model("llama_gqa_bias"), tokenizer=None)
    model = tiny_model("llama_gqa_bias")
    mapping = _device_map(model, lambda i: 0 if i is not None and i % 2 == 0 else "cpu")
    model = accelerate.dispatch_model(model, device_map=mapping, main_device="cpu")
    split = ModelRunner(model, tokenizer=None)
    assert {d.type for d in split.layer_devices} == {"cuda", "cpu"}
    report = run_checks(split, token_ids(10))
    assert report.passed, report
    ids = token_ids(12)
    trace = split.trace(ids)
    assert [x.device.type for x in trace.attn_out] == [d.type for d in split.layer_devices]
    got = compute_contributions(trace, split.layer_weights)
    assert_matches_oracle(got, reference.contributions(cpu, cpu.trace(ids)), GPU_TOL)
    same_subgraph(OnDemandGraph(trace, split.layer_weights).paths_to(-1, 0.04), ContributionGraph(got).paths_to(-1, 0.04))


@needs_cuda
def test_loading_with_device_map_auto_puts_the_layers_on_the_gpu(tmp_path):
    entry = ModelEntry(name="tiny", source="path", path=str(_saved(tmp_path, "gemma2")), device_map="auto")
    runner = load_model(dataclasses.replace(entry))
    assert runner.check_report.passed, runner.check_report
    assert all(d.type == "cuda" for d in runner.layer_devices)
