"""Every public name has an entry in the API reference (docs/reference/*.md), so a new export
cannot go undocumented; ``mkdocs build --strict`` (CI) checks that each entry resolves."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import lmstudio_async

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference"

# Public names deliberately without an entry of their own, and why.
NOT_IN_THE_REFERENCE = {
    "__version__": "the package version string, not an API",
}


ENTRY = re.compile(r"^::: lmstudio_async\.([\w.]+)\s*$", re.M)


def _entries() -> set[str]:
    pages = [page.read_text(encoding="utf-8") for page in REFERENCE.glob("*.md")]
    return {match[1] for text in pages for match in ENTRY.finditer(text)}


def test_every_exported_name_has_a_reference_entry() -> None:
    entries = _entries()
    missing = [
        name
        for name in lmstudio_async.__all__
        if name not in entries and name not in NOT_IN_THE_REFERENCE
    ]
    assert missing == [], f"add a '::: lmstudio_async.NAME' entry to docs/reference/: {missing}"


def test_the_allow_list_and_the_entries_are_current() -> None:
    entries = _entries()
    assert set(NOT_IN_THE_REFERENCE) <= set(lmstudio_async.__all__)
    assert not set(NOT_IN_THE_REFERENCE) & entries
    # Entries name the public surface (or a whole module, e.g. errors): an entry for a name
    # that is still importable but no longer exported would pass the docs build unnoticed.
    names = {
        name
        for name in entries
        if "." not in name and not isinstance(getattr(lmstudio_async, name, None), ModuleType)
    }
    assert names <= set(lmstudio_async.__all__), names - set(lmstudio_async.__all__)
