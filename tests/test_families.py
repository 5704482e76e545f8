"""The README's table of supported families is what the adapters and the measured checks give."""

from lmtt.engine import families
from lmtt.engine.adapters import ADAPTERS
from lmtt.engine.check import run_checks
from lmtt.engine.runner import ModelRunner
from lmtt.tools.serve import ROOT
from tests.tiny_models import FAMILIES, tiny_model, token_ids


def measured_table() -> str:
    """The table with the checks run now on every tiny random model."""
    worst: dict[str, float] = {}
    found: dict[str, list[str]] = {}
    for name in FAMILIES:
        model = tiny_model(name)
        report = run_checks(ModelRunner(model, None, name), token_ids(10))
        assert report.passed, (name, [r.line() for r in report.failures])
        family = model.config.model_type
        worst[family] = max(worst.get(family, 0.0), report.worst())
        found.setdefault(family, [])
        found[family] += [t for t in families.model_twists(model) if t not in found[family]]
    return families.markdown_table(worst, found)


def test_every_adapter_has_a_tiny_model_and_an_example():
    tested = {tiny_model(name).config.model_type for name in FAMILIES}
    assert set(ADAPTERS) <= tested, set(ADAPTERS) - tested
    assert set(ADAPTERS) <= set(families.EXAMPLES)


def test_the_readme_table_matches_the_adapters_and_the_checks():
    readme = (ROOT / "README.md").read_text()
    assert measured_table() in readme, "README's family table is stale: paste `python -m tests.test_families`"


if __name__ == "__main__":
    print(measured_table())
