"""What of a stored preference a reader may see.

A preference keeps the prompt and every candidate's text (the TRL export needs them),
which are the comparison's content: in a sensitive project they are for its members
only, like an item's payload. The verdict, the order shown, the models and the reason
are provenance, which every reviewer reads. Pure: rows in, rows out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CONTENT = ("prompt", "texts")


def without_content(preference: dict[str, Any] | None) -> dict[str, Any] | None:
    """The preference with its prompt and candidate texts left out."""
    if preference is None:
        return None
    return {k: v for k, v in preference.items() if k not in CONTENT}


def visible(rows: Iterable[dict[str, Any]], payloads_visible: bool) -> list[dict[str, Any]]:
    """Label rows as a reader sees them: a preference's content only where the reader
    may see the project's payloads."""
    if payloads_visible:
        return list(rows)
    return [{**r, "preference": without_content(r.get("preference"))}
            if r.get("preference") is not None else r for r in rows]
