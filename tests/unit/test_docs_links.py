"""Every relative link of the README and of docs/*.md points at a file that exists, and at a heading it has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([PROJECT_ROOT / "README.md", *(PROJECT_ROOT / "docs").glob("*.md")])

_FENCED_BLOCK = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target): the text may itself hold code (already blanked out), the target has no spaces.
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def prose(text: str) -> str:
    """The text without its code: code blocks and code spans may hold brackets that are not links."""
    return _FENCED_BLOCK.sub("", text)


def links(text: str) -> list[str]:
    return _LINK.findall(_INLINE_CODE.sub("code", prose(text)))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (but `-` and `_`), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    found: set[str] = set()
    for heading in _HEADING.findall(prose(document.read_text(encoding="utf-8"))):
        base = anchor(heading)
        name, number = base, 0
        while name in found:  # a repeated heading gets -1, -2, ...
            number += 1
            name = f"{base}-{number}"
        found.add(name)
    return found


def test_there_are_documents_to_check() -> None:
    assert PROJECT_ROOT / "README.md" in DOCUMENTS
    assert len(DOCUMENTS) > 1, "docs/ has no markdown file"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(PROJECT_ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    broken = []
    for target in links(document.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file of the project
            continue
        path_part, _, fragment = target.partition("#")
        linked = (document.parent / path_part).resolve() if path_part else document
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: {linked.name} has no heading with the anchor #{fragment}")
    assert not broken, f"broken links in {document.name}:\n  " + "\n  ".join(broken)


def test_the_anchor_rule_matches_github() -> None:
    assert anchor("`GET /jobs/{jobId}/attempts/{n}/output`") == "get-jobsjobidattemptsnoutput"
    assert anchor("Statuses, outcomes and retries") == "statuses-outcomes-and-retries"
    assert anchor("What a job's process sees") == "what-a-jobs-process-sees"
    assert anchor("Embedded PostgreSQL or `DATABASE_URL`") == "embedded-postgresql-or-database_url"
