import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from lmtt.runner import ModelRunner  # noqa: E402
from tests.tiny_models import FAMILIES, tiny_model  # noqa: E402


@pytest.fixture(scope="session", params=FAMILIES)
def tiny_runner(request) -> ModelRunner:
    """A runner over a tiny random model, one per family."""
    return ModelRunner(tiny_model(request.param), tokenizer=None, name=request.param)


@pytest.fixture(scope="session")
def default_runner() -> ModelRunner:
    """The embedded SmolLM2-135M-Instruct, loaded once per test session."""
    import lmtt

    return lmtt.load_model()
