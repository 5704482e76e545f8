"""bench/RESULTS.md holds several reports; each tool rewrites only its own section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "RESULTS.md"


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace the `## heading` section of the file (or append it), keeping the others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# lmtt benchmarks\n"
    lines, out, skipping = text.splitlines(), [], False
    for line in lines:
        if line.startswith("## "):
            skipping = line[3:].strip() == heading
        if not skipping:
            out.append(line)
    path.write_text("\n".join(out).rstrip() + f"\n\n## {heading}\n\n{body.strip()}\n")
