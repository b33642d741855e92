"""The documents hold together: every relative link in README.md, CHANGELOG.md and docs/ points to a file
or heading that exists, and every test a document names as ``file.py::test_name`` exists in that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")
TEST_NAME = re.compile(r"`?(\w+\.py)::(test_\w+)")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`(?!\])", "", text)


def slug(heading: str) -> str:
    """A heading's anchor as code hosts make it: lower case, punctuation dropped, spaces to hyphens.

    >>> slug("Decisions where the sources disagree"), slug("`selftest --report`: read it")
    ('decisions-where-the-sources-disagree', 'selftest---report-read-it')
    """
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*$", text, re.M)}


def links(doc: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in LINK.finditer(prose(doc.read_text()))]


def test_the_documents_exist() -> None:
    names = {p.name for p in DOCS}
    assert {"README.md", "CHANGELOG.md", "contract.md", "device.md"} <= names
    assert sum(len(links(doc)) for doc in DOCS) > 20  # the checker really finds links


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for text, target in links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... (not checked offline)
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
        if anchor and dest.suffix != ".md":
            line = re.fullmatch(r"L(\d+)", anchor)
            if line is None or int(line.group(1)) > len(dest.read_text().splitlines()):
                broken.append(f"{target}: no line {anchor}")
        for file_name, test in TEST_NAME.findall(text):
            if dest.name != file_name or not re.search(rf"^def {test}\(", dest.read_text(), re.M):
                broken.append(f"[{text}]({target}): no test {test} in {dest.name}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_the_checker_catches_a_broken_link(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n\n[ok](#title) [bad](#nothing) [gone](missing.md) `[code](not-a-link.md)`\n")
    assert links(doc) == [("ok", "#title"), ("bad", "#nothing"), ("gone", "missing.md")]
    assert anchors(doc) == {"title"}
