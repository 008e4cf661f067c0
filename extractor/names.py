"""The one rule for user-chosen names (datasets, heads): safe as folder names and in URLs."""

from __future__ import annotations

import re

from extractor.errors import HeadstartError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def check_name(kind: str, name: str) -> str:
    """`name` if it is 1-64 ASCII letters, digits, '.', '_' or '-' starting with a letter or digit."""
    if not _NAME.match(name or ""):
        raise HeadstartError(f"{kind} name {name!r}: expected 1-64 letters, digits, '.', '_' or '-', "
                             f"starting with a letter or digit")
    return name
