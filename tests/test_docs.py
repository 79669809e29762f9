"""Every reference from the code to docs/algorithms.md names a section that exists; no reference points to a
document outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "algorithms.md"
REFERENCE = re.compile(r"algorithms\.md(#[a-z0-9-]+(?:, #[a-z0-9-]+)*)")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", markdown, re.M)}


def sources() -> list[Path]:
    return sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py")])


def test_every_algorithms_reference_resolves():
    doc = DOC.read_text(encoding="utf-8")
    known = anchors(doc)
    cited = {a for a in re.findall(r"\]\(#([a-z0-9-]+)\)", doc)}
    for path in sources():
        for match in REFERENCE.finditer(path.read_text(encoding="utf-8")):
            cited.update(re.findall(r"#([a-z0-9-]+)", match.group(1)))
    assert len(cited) > 30
    assert sorted(cited - known) == []


def test_no_reference_to_documents_outside_the_repository():
    marker = "SP" + "EC"  # spelled apart so this file does not match itself
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in sources()
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(rf"\b{marker}\b|\u00a7", line)]
    assert offenders == []
