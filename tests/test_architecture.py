"""The folders are the architecture: imports point down engine -> questions -> analysis -> viz -> ui | tools.

Imports under `if TYPE_CHECKING:` are annotations only (a question takes an Analysis as an argument
without importing the facade at run time), so they are not counted.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# rank of each part of lmtt: a module may import its own part and parts of a lower rank only
RANKS = {"engine": 0, "questions": 1, "analysis": 2, "viz": 3, "ui": 4, "tools": 4}
STREAMLIT_ALLOWED = ("lmtt/ui/", "app.py", "pages/")


def part_of(module: str) -> str | None:
    """'lmtt.engine.runner' -> 'engine'; the package itself and its entry shims (lmtt, lmtt.bench) -> None."""
    pieces = module.split(".")
    if pieces[0] != "lmtt" or len(pieces) < 2:
        return None
    return pieces[1] if pieces[1] in RANKS else None


def runtime_imports(source: str) -> list[str]:
    """Every module an import statement names, outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(source)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from lmtt import ui` names its part in the imported name, `from lmtt.ui import state` in the module
            out += [node.module] if part_of(node.module) else [f"{node.module}.{a.name}" for a in node.names]
    return out


def violations(path: str, source: str) -> list[str]:
    """What a file imports against the architecture, in words."""
    module = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    mine = part_of(module)
    found = []
    for imported in runtime_imports(source):
        if imported.split(".")[0] == "streamlit" and not path.startswith(STREAMLIT_ALLOWED):
            found.append(f"{path} imports streamlit (only lmtt/ui, app.py and pages/ may)")
        theirs = part_of(imported)
        if mine is None or theirs is None or theirs == mine:
            continue
        if RANKS[theirs] >= RANKS[mine]:
            found.append(f"{path} ({mine}) imports {imported} ({theirs}): imports must point down")
    return found


def project_files() -> list[Path]:
    return [*sorted((ROOT / "lmtt").rglob("*.py")), ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]


def test_every_import_points_down_and_only_the_ui_imports_streamlit():
    found = []
    for f in project_files():
        found += violations(str(f.relative_to(ROOT)), f.read_text(encoding="utf-8"))
    assert found == []


def test_the_folders_exist_with_their_modules():
    for part in ("engine", "questions", "viz", "ui", "tools"):
        assert (ROOT / "lmtt" / part / "__init__.py").is_file(), part
    assert not [p.name for p in (ROOT / "lmtt").glob("*.py")
                if p.stem not in ("__init__", "__main__", "analysis", "bench", "loadtest")]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("lmtt/engine/runner.py", "from lmtt.questions import dla", ["imports must point down"]),
        ("lmtt/engine/runner.py", "def f():\n    import lmtt.analysis", ["imports must point down"]),
        ("lmtt/questions/lens.py", "from lmtt.analysis import Analysis", ["imports must point down"]),
        ("lmtt/ui/panels.py", "from lmtt.tools.cli import main", ["imports must point down"]),
        ("lmtt/tools/cli.py", "from lmtt.ui import state", ["imports must point down"]),
        ("lmtt/viz/figures.py", "import streamlit as st", ["imports streamlit"]),
        ("lmtt/questions/lens.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lmtt.analysis import Analysis", []),
        ("lmtt/viz/figures.py", "from lmtt.analysis import Analysis\nfrom lmtt.engine import graph", []),
        ("pages/target.py", "import streamlit as st\nfrom lmtt import ui", []),
    ],
)
def test_the_checker_finds_what_it_must(path, source, expected):
    found = violations(path, source)
    assert len(found) == len(expected) and all(e in f for e, f in zip(expected, found))
