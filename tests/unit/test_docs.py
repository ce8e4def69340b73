"""README.md and docs/*.md point only at what the project has.

Every link resolves to a file in the checkout (and an ``#anchor`` to a heading of it);
every ``nonstop COMMAND`` the docs show is a command the CLI has.  Links to the web are
left alone: nothing is fetched.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nonstop.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"(`+).*?\1", re.S)
_INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)


def _links(text: str) -> list[str]:
    prose = _CODE.sub("", _FENCE.sub("", text))
    return _INLINE.findall(prose) + _REFERENCE.findall(prose)


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def _broken(doc: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for link in _links(doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto: ...
            continue
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.is_relative_to(root) or not target.exists():
            broken.append(f"{link} (no such file in the project)")
        elif anchor and (target.suffix != ".md" or anchor not in _anchors(target.read_text())):
            broken.append(f"{link} (no such heading)")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(ROOT)) for doc in DOCS])
def test_every_link_resolves_inside_the_project(doc: Path) -> None:
    assert _broken(doc) == []


@pytest.mark.parametrize("doc", DOCS, ids=[str(doc.relative_to(ROOT)) for doc in DOCS])
def test_every_nonstop_command_the_docs_name_exists(doc: Path) -> None:
    text = doc.read_text()
    shown = re.findall(r"`(?:\S*/)?nonstop ([a-z][a-z-]*)", text)
    for block in _BLOCK.findall(text):
        shown += re.findall(r"^(?:\S*/)?nonstop ([a-z][a-z-]*)", block, re.M)
    assert sorted(set(shown) - set(main.commands)) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    (tmp_path / "other.md").write_text("# Title\n\n## How it works\n")
    doc.write_text(
        "[ok](other.md#how-it-works) [gone](PRODUCT.md) [bad](other.md#nope)\n"
        "`[not a link](x.md)` [web](https://example.org/x.md)\n"
    )
    assert _broken(doc, tmp_path) == [
        "PRODUCT.md (no such file in the project)",
        "other.md#nope (no such heading)",
    ]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "up.md").write_text("[outside](../../etc/passwd)\n")
    assert _broken(tmp_path / "sub" / "up.md", tmp_path / "sub") == [
        "../../etc/passwd (no such file in the project)"
    ]


def test_no_file_in_the_project_holds_a_merge_conflict() -> None:
    tracked = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for folder in ("docs", "bench", "src", "tests", "examples", "scripts"):
        tracked += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".md", ".py", ".toml"}]
    marked = re.compile(r"^(<{7} |={7}$|>{7} )", re.M)
    found = [str(p.relative_to(ROOT)) for p in tracked if marked.search(p.read_text())]
    assert found == []
