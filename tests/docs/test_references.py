"""Every reference to a document, in the docs or in the code, points to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKDOWN = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("*/README.md")])
CODE = sorted(
    path
    for folder in ("app", "bench", "tests", "deploy", ".ci")
    for path in (ROOT / folder).rglob("*.py")
)
# A Markdown link's target, without its #anchor; web and mail links are not files.
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# A document named in code: a path to a .md file (docs/api.md, weights/README.md), or a bare
# capitalised name (README.md, PERFORMANCE.md). Bare lower-case names are outputs the code writes
# (results.md).
_DOC_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)+[\w.-]+\.md|[A-Z][A-Z_]*\.md)\b")


def _is_external(target: str) -> bool:
    return re.match(r"^[a-z]+:", target) is not None


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(doc: Path) -> None:
    targets = [t for t in _LINK.findall(doc.read_text()) if not _is_external(t)]
    missing = [t for t in targets if not (doc.parent / t).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def test_documents_named_in_code_exist() -> None:
    missing = []
    for path in CODE:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for name in _DOC_NAME.findall(line):
                # Named from the repository root, beside the code, or (a bare name) in docs/.
                places = (ROOT / name, path.parent / name, ROOT / "docs" / name)
                if not any(place.exists() for place in places):
                    missing.append(f"{path.relative_to(ROOT)}:{lineno}: {name}")
    assert not missing, "documents named in code that do not exist:\n" + "\n".join(missing)


def test_the_checks_see_the_documents() -> None:
    # Guards the two tests above against passing on nothing.
    assert ROOT / "docs" / "api.md" in MARKDOWN
    named = {n for p in CODE for n in _DOC_NAME.findall(p.read_text())}
    assert "docs/api.md" in named and "docs/PERFORMANCE.md" in named
