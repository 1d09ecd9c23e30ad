"""Write one script's block of a Markdown document, leaving every other block as it is.

Each reproduction script owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``
in ``docs/reproductions.md``; a block that is not there yet is appended at the end.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["markers", "write_block"]


def markers(name: str) -> tuple[str, str]:
    """The ``BEGIN`` and ``END`` markers of block ``name``."""
    return f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"


def write_block(doc: Path, name: str, section: str) -> None:
    """Replace block ``name`` of ``doc`` by ``section`` (which holds both markers)."""
    begin, end = markers(name)
    if not (section.startswith(begin) and section.rstrip().endswith(end)):
        raise ValueError(f"section must start with {begin!r} and end with {end!r}")
    text = doc.read_text() if doc.exists() else "# Reproductions\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
