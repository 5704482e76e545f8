"""Command line: `python -m lmtt analyze --prompt TEXT [--model NAME] [--token I] [--threshold T] --json`
(plus --generate N, --edit EDIT, --compare TEXT, --out DIR; --ids, --chat; --target/--contrast with --dla,
--direct-threshold, --lens, --faithfulness, --faithfulness-curve, --qk, --neuron, --patch TEXT) and
`python -m lmtt batch PROMPTS_FILE --out DIR`, and `python -m lmtt check [--model NAME] [--prompt TEXT]`
(exit status 1 when an identity fails).

Errors print one line on stderr and exit with status 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from lmtt.analysis import DEFAULT_THRESHOLD, Analysis, analyze
from lmtt.engine.chat import chat_prompt
from lmtt.engine.config import ConfigError, load_config
from lmtt.engine.edits import Edit
from lmtt.engine.levels import head_name
from lmtt.engine.loading import LoadError, load_model
from lmtt.engine.runner import PromptError, check_prompt
from lmtt.questions.compare import compare_prompts
from lmtt.questions.dla import load_direction
from lmtt.questions.export import NEURONPEDIA_FILE, write_files


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lmtt", description="See how a language model reaches its prediction.")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="analyse one prompt and print its predictions and important subgraph")
    source = a.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt")
    source.add_argument("--ids", default=None, metavar="I,J,...", help="token ids instead of a prompt, comma-separated")
    a.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template (instruct models)")
    a.add_argument("--model", default=None, help="a model name from config.yaml (default: its default_model)")
    a.add_argument("--config", default=None, help="path to config.yaml")
    a.add_argument("--token", type=int, default=-1, help="token index to explain (default: the last)")
    a.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    a.add_argument("--node", default=None, metavar="NODE", help="draw the paths to this node instead (e.g. ffn:12:4, attn:3:2, emb:0)")
    a.add_argument("--probe", default=None, metavar="FILE", help="a direction (.npy or .pt, shape (d,)) read at --node or the top node")
    a.add_argument("--top", type=int, default=10, help="how many predictions to list")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument(
        "--out", default=None, help="also write graph.json, graph.graphml, contributions.csv, predictions.csv, graph-neuronpedia.json here"
    )
    a.add_argument(
        "--format", choices=("all", "neuronpedia"), default="all", help="with --out: every file, or only graph-neuronpedia.json"
    )
    a.add_argument("--generate", type=int, default=0, metavar="N", help="first extend the prompt by N generated tokens")
    a.add_argument("--seed", type=int, default=None, help="sample the generated tokens with this seed (default: greedy)")
    a.add_argument("--edit", action="append", default=[], metavar="EDIT", help="an intervention, e.g. head:20.3:zero (repeatable)")
    a.add_argument("--compare", default=None, metavar="TEXT", help="a second prompt to compare with")
    q = a.add_argument_group("a target token and a contrast (at --token)")
    q.add_argument("--target", default=None, metavar="TOKEN", help="token A, text (' Paris') or id (default: the top prediction)")
    q.add_argument("--contrast", default=None, metavar="TOKEN", help="token B: explain logit(A) - logit(B)")
    q.add_argument("--dla", action="store_true", help="direct logit attribution of every head, neuron, FFN and bias")
    q.add_argument("--direct-threshold", type=float, default=None, metavar="LOGITS", help="list heads/FFNs whose |direct effect| >= this")
    q.add_argument("--lens", action="store_true", help="logit lens of A, B and A - B at every node")
    q.add_argument("--faithfulness", action="store_true", help="how much of the target the route at --threshold keeps alone")
    q.add_argument("--faithfulness-curve", action="store_true", help="faithfulness against edges kept over a range of thresholds")
    q.add_argument("--ablation", choices=("mean", "zero"), default="mean", help="what replaces parts outside the route (default: mean)")
    q.add_argument("--qk", default=None, metavar="L.H:Q:K", help="QK attribution of head L.H's score from query Q to key K")
    q.add_argument("--neuron", default=None, metavar="L.N", help="a GLU neuron's gate, up and product per position")
    q.add_argument("--head", default=None, metavar="L.H", help="what the app's head panel shows for head L.H at --token")
    q.add_argument("--patch", default=None, metavar="TEXT", help="activation patching: this corrupted prompt (same token count)")
    c = sub.add_parser("check", help="check that lmtt's decomposition adds up for a model (one line per identity)")
    c.add_argument("--model", default=None, help="a model name from config.yaml (default: its default_model)")
    c.add_argument("--config", default=None, help="path to config.yaml")
    c.add_argument("--prompt", default=None, help="the probe prompt (default: a short built-in one)")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    b = sub.add_parser("batch", help="analyse every prompt of a file (one per line); resumable")
    b.add_argument("prompts_file")
    b.add_argument("--out", required=True, help="directory for per-prompt summaries and aggregate.json")
    b.add_argument("--model", default=None)
    b.add_argument("--config", default=None)
    b.add_argument("--ray", default=None, metavar="ADDRESS", help="spread the prompts over this Ray cluster (pip install ray)")
    b.add_argument("--workers", type=int, default=2, help="Ray actors, each holding the model once")
    return parser


def _batch(args) -> int:
    from lmtt.tools import dataset

    config = load_config(args.config)
    try:
        prompts = dataset.read_prompts(args.prompts_file)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {args.prompts_file}: {e}") from None
    for prompt in prompts:
        check_prompt(prompt, config.max_prompt_chars)
    todo = len(dataset.pending(prompts, Path(args.out)))
    print(f"{len(prompts)} prompts, {len(prompts) - todo} already done", file=sys.stderr)
    if args.ray:
        name = args.model or config.default_model
        if name not in config.models:
            raise LoadError(f"unknown model {name!r}; config.yaml lists: {', '.join(config.models)}")
        result = dataset.run_batch_ray(args.ray, config.models[name], prompts, args.out, args.workers)
    else:
        runner = load_model(args.model, config)
        result = dataset.run_batch(runner, prompts, args.out, on_progress=lambda d, n: print(f"\r{d}/{n}", end="", file=sys.stderr))
        print(file=sys.stderr)
    print(json.dumps({"prompts": result["prompts"], "always_important_heads": result.get("always_important_heads", [])}))
    return 0


def _check(args) -> int:
    """Exit 0 when every identity holds within its tolerance, 1 when one fails."""
    from lmtt.engine.check import PROBE_PROMPT, run_checks

    config = load_config(args.config)
    prompt = check_prompt(args.prompt, config.max_prompt_chars) if args.prompt is not None else PROBE_PROMPT
    runner = load_model(args.model, config)
    report = run_checks(runner, prompt)
    if args.json:
        results = [{**vars(r), "passed": r.passed} for r in report.results]
        print(json.dumps({"model": report.model, "tokens": report.n_tokens, "passed": report.passed, "checks": results}))
    else:
        print(f"model: {report.model} ({runner.adapter.family})   probe: {report.n_tokens} tokens")
        for r in report.results:
            print(r.line())
        print("all checks passed" if report.passed else f"{len(report.failures)} check(s) FAILED")
    return 0 if report.passed else 1


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise PromptError(f"--ids must be comma-separated integers, got {text!r}") from None


def _target_questions(args, analysis: Analysis, runner, config) -> dict:
    """The JSON of --dla, --direct-threshold, --lens, --faithfulness(-curve) and --patch."""
    out: dict = {}
    if args.qk is not None:
        m = re.fullmatch(r"(\d+)\.(\d+):(-?\d+):(-?\d+)", args.qk.strip())
        if not m:
            raise ValueError(f"--qk expects LAYER.HEAD:QUERY:KEY, e.g. 23.3:13:9, got {args.qk!r}")
        out["qk_attribution"] = analysis.qk_attribution(*(int(g) for g in m.groups())).to_dict(args.top)
    if args.neuron is not None:
        m = re.fullmatch(r"(\d+)\.(\d+)", args.neuron.strip())
        if not m:
            raise ValueError(f"--neuron expects LAYER.NEURON, e.g. 20.1337, got {args.neuron!r}")
        out["neuron_profile"] = analysis.neuron_profile(int(m.group(1)), int(m.group(2))).to_dict()
    if args.head is not None:
        m = re.fullmatch(r"(\d+)\.(\d+)", args.head.strip())
        if not m:
            raise ValueError(f"--head expects LAYER.HEAD, e.g. 23.4, got {args.head!r}")
        out["head"] = _head_panel(analysis, int(m.group(1)), int(m.group(2)), args.token, args.top)
    asked = args.dla or args.lens or args.faithfulness or args.faithfulness_curve or args.patch is not None
    if not (asked or args.direct_threshold is not None or args.target or args.contrast):
        return out
    target = analysis.target(args.token, args.target, args.contrast)
    out["target"] = {**target.to_dict(), "quantity": target.describe()}
    if args.dla:
        out["direct_effects"] = analysis.direct_effects(target).to_dict(args.top)
    if args.direct_threshold is not None:
        out["direct_edges"] = [e.to_dict() for e in analysis.direct_edges(target, args.direct_threshold)]
    if args.lens:
        out["target_lens"] = analysis.target_lens(target).to_dict()
    route_target = target if args.contrast else analysis.log_prob_target(args.token, args.target)
    if args.faithfulness:  # without --contrast: log p(A), a measure that moves with p(A)
        out["faithfulness"] = analysis.faithfulness(args.threshold, route_target, args.ablation).to_dict()
    if args.faithfulness_curve:
        out["faithfulness_curve"] = analysis.faithfulness_curve(target=route_target, ablation=args.ablation).to_dict()
    if args.patch is not None:
        check_prompt(args.patch, config.max_prompt_chars)
        corrupted = chat_prompt(runner, args.patch) if args.chat else args.patch
        out["patching"] = {"prompt": args.patch, **analysis.patching(corrupted, target).to_dict()}
    return out


def _head_panel(analysis: Analysis, layer: int, head: int, token: int, k: int) -> dict:
    """The head panel's numbers: its direct effect on each logit at the token, its share of the node, where it looks."""
    position = analysis.position(token)
    shares = analysis.head_contributions(layer, position)
    attention = analysis.trace.attention(layer, slice(position, position + 1), n_keys=position + 1)[head, 0]  # (J,)
    top = attention.topk(min(k, attention.numel()))
    return {
        "layer": layer,
        "head": head,
        "position": position,
        "token": analysis.tokens[position],
        "share_of_node": float(shares.heads[head]),
        **analysis.head_tokens(layer, position, head, k).to_dict(),
        "attention": [{"source": j, "token": analysis.tokens[j], "weight": w} for w, j in zip(top.values.tolist(), top.indices.tolist())],
    }


def _analyze(args) -> int:
    if not math.isfinite(args.threshold) or args.threshold < 0:
        raise ValueError(f"--threshold must be a finite number >= 0, got {args.threshold}")
    if args.direct_threshold is not None and not (math.isfinite(args.direct_threshold) and args.direct_threshold >= 0):
        raise ValueError(f"--direct-threshold must be a finite number >= 0, got {args.direct_threshold}")
    config = load_config(args.config)
    ids = _parse_ids(args.ids) if args.ids is not None else None
    if ids is None:
        check_prompt(args.prompt, config.max_prompt_chars)
    elif args.generate or args.chat:
        raise ValueError("--generate and --chat need --prompt, not --ids")
    edits = [Edit.parse(e) for e in args.edit]
    if args.compare is not None:
        check_prompt(args.compare, config.max_prompt_chars)
    runner = load_model(args.model, config)
    if runner.check_report is not None and not runner.check_report.passed:
        print(f"warning: the decomposition does not add up for this model: {runner.check_report.failures}", file=sys.stderr)
    prompt = chat_prompt(runner, args.prompt) if args.chat else args.prompt
    start = prompt
    if args.generate:
        prompt = runner.generate(prompt, args.generate, args.seed)
    analysis = analyze(runner, ids if ids is not None else prompt, max_tokens=config.max_prompt_tokens)
    result = analysis.to_dict(args.token, args.threshold, args.top, node=args.node)
    if args.probe is not None:
        direction = load_direction(args.probe, analysis.trace.d_model)
        result["probe"] = analysis.probe_effects(direction, args.node).to_dict(args.top)
    if args.chat:
        result["chat_prompt"] = prompt
    if args.generate:
        result["generated_from"] = len(runner.tokenize(start))  # tokens from here on were generated
    if edits:
        change = analysis.intervene(edits, args.token, args.top)
        result["intervention"] = {
            "edits": [str(e) for e in change.edits],
            "target": change.target.token,
            "logit_before": change.logit_before,
            "logit_after": change.logit_after,
            "prob_before": change.prob_before,
            "prob_after": change.prob_after,
            "predictions_after": [{"token": p.token, "prob": p.score} for p in change.after],
        }
    if args.compare is not None:
        cmp = compare_prompts(analysis, analyze(runner, args.compare, max_tokens=config.max_prompt_tokens))
        result["comparison"] = {
            "prompt": args.compare,
            "alignment": cmp.alignment,
            "offset": cmp.offset,
            "edges": [{**vars(e), "delta": e.delta} for e in cmp.edges],
            "head_delta": cmp.head_delta.tolist(),
        }
    result.update(_target_questions(args, analysis, runner, config))
    if args.out:
        write_files(analysis, args.out, args.token, args.threshold, args.node, NEURONPEDIA_FILE if args.format == "neuronpedia" else None)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"model: {result['model']}   tokens: {len(result['tokens'])}")
    for p in result["predictions"]:
        print(f"  {p['prob']:.3f}  {p['token']!r}")
    graph = result["graph"]
    root = f"node {args.node}" if args.node else f"token {args.token}"
    print(f"paths to {root} at threshold {args.threshold}: {len(graph['nodes'])} nodes, {len(graph['edges'])} edges")
    if "probe" in result:
        p = result["probe"]
        heads = ", ".join(f"{head_name(h['layer'], h['head'])} {h['effect']:+.3f}" for h in p["top_heads"][:5])
        print(f"probe at {p['node']}: {p['value']:.4f} (components sum to {p['sum_of_effects']:.4f}); top heads: {heads}")
    if "intervention" in result:
        i = result["intervention"]
        print(f"with {', '.join(i['edits'])}: p({i['target']!r}) {i['prob_before']:.3f} -> {i['prob_after']:.3f}")
    if "comparison" in result:
        top = result["comparison"]["edges"][0]
        print(f"largest change against {args.compare!r}: {top['kind']} edge at layer {top['layer']} ({top['delta']:+.3f})")
    _print_target_questions(result)
    return 0


def _fraction(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.3f}"


def _print_target_questions(result: dict) -> None:
    if "qk_attribution" in result:
        q = result["qk_attribution"]
        name = head_name(q["layer"], q["head"])
        print(f"head {name} score {q['query']} -> {q['key']}: {q['score']:.3f} = sum of pairs {q['sum_of_pairs']:.3f}")
        for p in q["top_pairs"][:5]:
            print(f"  {p['query_part']} x {p['key_part']}: {p['value']:+.3f}")
    if "head" in result:
        h = result["head"]
        name = head_name(h["layer"], h["head"])
        print(f"head {name} at token {h['position']} {h['token']!r}: share of the node {h['share_of_node']:.3f}")
        for kind in ("promoted", "suppressed"):
            print(f"  {kind} (direct effect on the logit): " + ", ".join(f"{s['token']!r} {s['effect']:+.3f}" for s in h[kind][:5]))
        print("  attends to: " + ", ".join(f"{a['source']} {a['token']!r} {a['weight']:.3f}" for a in h["attention"][:5]))
    if "target" not in result:
        return
    print(f"target: {result['target']['quantity']} at token {result['target']['position']}")
    if "direct_effects" in result:
        d = result["direct_effects"]
        print(f"  value {d['value']:.3f} = sum of direct effects {d['sum_of_direct_effects']:.3f}")
        for h in d["top_heads"][:5]:
            print(f"  head {head_name(h['layer'], h['head'])}: {h['effect']:+.3f}")
    for e in result.get("direct_edges", []):
        print(f"  {'booster' if e['effect'] > 0 else 'suppressor'} {e['name']}: {e['effect']:+.3f} ({e['source']} -> {e['target']})")
    if "faithfulness" in result:
        f = result["faithfulness"]
        kept = f"faithfulness {_fraction(f['faithfulness'])}, p kept {_fraction(f['prob_kept'])}"
        print(f"  route at threshold {f['threshold']}: {f['edges']} edges, {kept}")
    for f in result.get("faithfulness_curve", {}).get("points", []):
        print(f"  threshold {f['threshold']:.3f}: {f['edges']:5d} edges, faithfulness {_fraction(f['faithfulness'])}")
    if "patching" in result:
        p = result["patching"]
        values = f"clean {p['clean_value']:.3f}, corrupted {p['corrupted_value']:.3f}"
        print(f"  patching: {values}, {p['passes']} passes in {p['seconds']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep stderr to the one error line
    try:
        return {"batch": _batch, "check": _check, "analyze": _analyze}[args.command](args)
    except (ConfigError, LoadError, PromptError, IndexError, ValueError, OSError) as e:  # TargetError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
