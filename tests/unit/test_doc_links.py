"""Every relative link in the README and the docs resolves to a file in the repository
(and to a heading or `<a id>` anchor of it, when the link names one), so a fresh clone
has no broken link and no doc leans on anything outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXPLICIT_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
HEADING = re.compile(r"^#{1,6} (.+)$")
EXTERNAL = ("http://", "https://", "mailto:")
README_MAX_LINES = 200


def markdown_files() -> list[Path]:
    return [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").rglob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor a code host derives from a heading: lower case, punctuation dropped."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text()
    found = set(EXPLICIT_ANCHOR.findall(text))
    for line in prose_lines(text):
        match = HEADING.match(line)
        if match:
            found.add(slug(match.group(1)))
    return found


def links(path: Path) -> list[str]:
    return [m for line in prose_lines(path.read_text()) for m in LINK.findall(line)]


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """The relative links of `path` that lead nowhere, or outside `root`."""
    broken = []
    for target in links(path):
        if target.startswith(EXTERNAL):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_relative_to(root):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no anchor #{anchor}")
    return broken


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_the_docs_are_linked_from_the_readme():
    linked = {t.partition("#")[0] for t in links(REPO / "README.md")}
    assert {"docs/api.md", "docs/design.md", "docs/protocols/README.md", "LICENSE"} <= linked


def test_the_readme_stays_short():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines"


def test_no_doc_names_the_folder_outside_the_repository():
    for path in markdown_files():
        assert "../shared" not in path.read_text(), path


def test_a_broken_link_and_a_missing_anchor_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-heading) [gone](missing.md) [anchor](other.md#nowhere)\n"
        "[out](../elsewhere.md) [web](https://example.org/x)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file",
        "other.md#nowhere: no anchor #nowhere",
        "../elsewhere.md: outside the repository",
    ]
