"""config.yaml validation names the bad field; loading refuses unsafe or missing weights."""

from pathlib import Path

import pytest
import torch
import yaml

from lmtt.engine.config import DEMO_MAX_PROMPT_CHARS, DEMO_MAX_PROMPT_TOKENS, ConfigError, ModelEntry, load_config, parse_config
from lmtt.engine.loading import LoadError, load_model
from tests.tiny_models import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_config_is_valid():
    config = load_config(ROOT / "config.yaml")
    assert config.default_model in config.models
    assert config.models[config.default_model].source == "embedded"
    assert "The capital of France is" in config.sample_prompts
    assert config.max_prompt_tokens >= 4096 and config.max_prompt_chars >= 16_000  # a 4,000-token text fits


def test_demo_mode_keeps_prompts_small_whatever_the_file_says():
    raw = {"models": {"m": {}}, "max_prompt_tokens": 8192, "max_prompt_chars": 40_000}
    assert (parse_config(raw).max_prompt_tokens, parse_config(raw).max_prompt_chars) == (8192, 40_000)
    demo = parse_config({**raw, "demo_mode": True})
    assert (demo.max_prompt_tokens, demo.max_prompt_chars) == (DEMO_MAX_PROMPT_TOKENS, DEMO_MAX_PROMPT_CHARS) == (512, 4000)
    assert parse_config({**raw, "demo_mode": True, "max_prompt_tokens": 100}).max_prompt_tokens == 100  # lower stays lower


@pytest.mark.parametrize(
    "raw,field",
    [
        (None, "top level"),
        ({"models": {}}, "models"),
        ({"models": {"m": {"source": "magic"}}}, "models.m.source"),
        ({"models": {"m": {"dtype": "fp33"}}}, "models.m.dtype"),
        ({"models": {"m": {"device": "tpu"}}}, "models.m.device"),
        ({"models": {"m": {"source": "path"}}}, "models.m.path"),
        ({"models": {"m": {"source": "gguf", "path": "/x"}}}, "models.m.gguf_file"),
        ({"models": {"m": {"colour": "red"}}}, "models.m.colour"),
        ({"models": {"m": {"trust_remote_code": "yes"}}}, "models.m.trust_remote_code"),
        ({"models": {"m": "embedded"}}, "models.m"),
        ({"models": {"m": {}}, "default_model": "other"}, "default_model"),
        ({"models": {"m": {}}, "max_prompt_tokens": -3}, "max_prompt_tokens"),
        ({"models": {"m": {}}, "default_threshold": 2}, "default_threshold"),
        ({"models": {"m": {}}, "sample_prompts": "missing.txt"}, "sample_prompts"),
    ],
)
def test_errors_name_the_bad_field(raw, field):
    with pytest.raises(ConfigError, match=rf"config.yaml: {field}\b"):
        parse_config(raw, ROOT / "config.yaml")


@pytest.mark.parametrize("text", ["", "models: [unclosed", "\x00\x01", "just a string"])
def test_broken_files_give_a_config_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_model_name(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": {"source": "path", "path": str(tmp_path)}}}))
    with pytest.raises(LoadError, match="unknown model 'other'"):
        load_model("other", load_config(path))


def save_tiny(directory: Path, safe: bool) -> None:
    tiny_model("llama_gqa_bias").save_pretrained(directory, safe_serialization=safe)
    tiny_tokenizer().save_pretrained(directory)


def test_a_local_safetensors_directory_loads(tmp_path):
    save_tiny(tmp_path, safe=True)
    runner = load_model(ModelEntry(name="tiny", source="path", path=str(tmp_path)))
    assert runner.adapter.family == "llama" and len(runner.blocks) == 3
    assert runner.trace("w5 w7 w9").tokens == ("w5", "w7", "w9")


def test_pickle_only_directories_are_refused(tmp_path):
    model = tiny_model("gpt2")
    model.config.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(LoadError, match="pickle"):
        load_model(ModelEntry(name="tiny", source="path", path=str(tmp_path)))


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(LoadError, match="does not exist"):
        load_model(ModelEntry(name="gone", source="path", path=str(tmp_path / "gone")))


def test_corrupt_weights_are_refused(tmp_path):
    save_tiny(tmp_path, safe=True)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(LoadError, match="could not be loaded"):
        load_model(ModelEntry(name="broken", source="path", path=str(tmp_path)))


def test_corrupt_gguf_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x00" * 100)
    with pytest.raises(LoadError, match="GGUF"):
        load_model(ModelEntry(name="bad", source="gguf", path=str(tmp_path), gguf_file="bad.gguf"))


def test_unsupported_family_is_named(tmp_path):
    import transformers as tf

    tf.BertConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(LoadError, match="model family 'bert' cannot be decomposed: no adapter"):
        load_model(ModelEntry(name="bert", source="path", path=str(tmp_path), allow_pickle=True))


@pytest.mark.parametrize("family", ["bloom", "mpt", "falcon"])
def test_refused_families_name_the_missing_piece(tmp_path, family, cli):
    """Families that open in transformers but cannot be decomposed: the family and the reason, no traceback."""
    import transformers as tf

    tf.AutoConfig.for_model(family).save_pretrained(tmp_path)
    with pytest.raises(LoadError, match=f"model family '{family}' cannot be decomposed: its"):
        load_model(ModelEntry(name=family, source="path", path=str(tmp_path), allow_pickle=True))
    config = tmp_path / "config.yaml"
    config.write_text(f"default_model: m\nmodels:\n  m:\n    source: path\n    path: {tmp_path}\n    allow_pickle: true\n")
    run = cli("check", "--config", str(config))
    assert run.returncode == 2 and f"model family '{family}' cannot be decomposed" in run.stderr and "Traceback" not in run.stderr
