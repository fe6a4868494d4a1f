"""Ids as people type them: a whole UUID, or a unique prefix of at least 8 characters (as git)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

from humanglue_cli.core.errors import BadInput
from humanglue_cli.core.text import shown

MIN_PREFIX = 8
_HEX = frozenset("0123456789abcdef-")


def is_uuid(text: str) -> bool:
    """True for any spelling of a UUID that `uuid.UUID` accepts."""
    try:
        uuid.UUID(text)
    except (ValueError, TypeError):
        return False
    return True


_CANONICAL = re.compile("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uuid_or_none(value: Any) -> str | None:
    """`value`'s canonical form if it is a UUID, else None. The form the capture triggers
    write is recognised without parsing: this runs for every id of every event in a drain."""
    text = str(value)
    if _CANONICAL.fullmatch(text):
        return text
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def canonical(text: str) -> str:
    """The lower-case hyphenated form of a UUID (CONTRACT §5)."""
    return str(uuid.UUID(text))


def is_reference(text: str) -> bool:
    """A whole UUID, or something that can be the start of one (8+ hex digits and hyphens)."""
    ref = text.strip().lower()
    if len(ref) == 36:
        return is_uuid(ref)
    return MIN_PREFIX <= len(ref) < 36 and all(c in _HEX for c in ref)


def references(refs: Sequence[str], what: str = "notification id") -> list[str]:
    """Normalized id references, checked before any database is touched.

    Raises:
        BadInput: none given, or one that is no id nor a prefix of one.
    """
    checked = []
    for ref in refs:
        if not is_reference(ref):
            raise BadInput(
                f"not a {what}: {shown(ref)} (give the id or at least its first "
                f"{MIN_PREFIX} characters)"
            )
        ref = ref.strip().lower()
        # A whole id in any spelling uuid accepts (`urn:…`, no hyphens) is compared as stored.
        checked.append(canonical(ref) if is_uuid(ref) else ref)
    if not checked:
        raise BadInput(f"give at least one {what}")
    return checked
