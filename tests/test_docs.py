"""The docs against the code they describe: tables made from the code, links that resolve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

from cliproxy_host.abi import CAPABILITY_METHODS
from cliproxy_host.errors import PluginError, error_classes

ROOT: Final = Path(__file__).resolve().parent.parent
ABI_DOC: Final = ROOT / "docs" / "ABI.md"
# Files whose relative links must resolve: a moved or renamed doc breaks them.
LINKED_DOCS: Final = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
_LINK: Final = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_CITATION: Final = re.compile(r"ABI\.md,? sections? (\d+)(?: and (\d+))?")


def _table(text: str, name: str) -> list[list[str]]:
    """The body rows of the table between `<!-- name: ... -->` and `<!-- end name -->`."""
    match = re.search(rf"<!-- {name}:.*?-->\n(.*?)<!-- end {name} -->", text, re.S)
    assert match is not None, f"docs/ABI.md has no <!-- {name} --> table"
    lines = [line for line in match.group(1).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _row(cls: type[PluginError]) -> tuple[str, str, str, str]:
    parent = cls.__mro__[1].__name__
    retryable = "yes" if cls.default_retryable else "no"
    return (
        f"`{cls.code}`",
        f"`{cls.__name__}` (`{parent}`)",
        retryable,
        str(cls.default_http_status),
    )


def test_error_table_lists_every_class_of_the_tree_with_its_code_status_and_retryable() -> None:
    rows = _table(ABI_DOC.read_text(encoding="utf-8"), "error-table")
    documented = [tuple(row[:4]) for row in rows]
    expected = [_row(cls) for cls in error_classes()]
    # On a mismatch, the rows to paste (meaning: the class docstring's first line).
    paste = "\n".join(
        f"| {' | '.join(_row(cls))} | {(cls.__doc__ or '').strip().splitlines()[0]} |"
        for cls in error_classes()
    )
    assert documented == expected, f"docs/ABI.md section 2.1 should list:\n{paste}"
    assert all(row[4] for row in rows), "every error code needs its meaning"


def test_capability_table_lists_each_flag_with_exactly_its_methods() -> None:
    rows = _table(ABI_DOC.read_text(encoding="utf-8"), "capability-table")
    documented = {
        row[0].strip("`"): tuple(m.strip().strip("`") for m in row[1].split(",")) for row in rows
    }
    assert documented == CAPABILITY_METHODS
    assert len(rows) == len(documented), "a flag is listed twice"


def test_abi_doc_has_every_section_the_code_cites() -> None:
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", ABI_DOC.read_text("utf-8"), re.M))
    # The numbering of the contract the Go host documents; code and comments cite it.
    assert {str(n) for n in range(1, 8)} <= headings
    assert {f"7.{n}" for n in range(1, 8)} <= headings
    sources = [*ROOT.glob("cliproxy_host/**/*.py"), *ROOT.glob("tests/**/*.py")]
    sources += [ROOT / "include" / "cliproxy_plugin.h", *ROOT.glob("bench/**/*.py")]
    cited = {
        number
        for path in sources
        for match in _CITATION.finditer(path.read_text(encoding="utf-8"))
        for number in match.groups()
        if number
    }
    assert cited, "no code cites ABI.md any more: drop this test or the citations' check"
    assert cited <= headings


@pytest.mark.parametrize("doc", LINKED_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files_that_exist(doc: Path) -> None:
    broken = [
        target
        for target in _LINK.findall(doc.read_text(encoding="utf-8"))
        if "://" not in target and not (doc.parent / target).exists()
    ]
    assert not broken, f"{doc.relative_to(ROOT)} links to missing files: {broken}"


def test_readme_and_header_point_to_the_abi_doc_in_the_repository() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    header = (ROOT / "include" / "cliproxy_plugin.h").read_text(encoding="utf-8")
    assert "](docs/ABI.md" in readme
    assert "docs/ABI.md" in header
