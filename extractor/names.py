"""The one rule for user-chosen names (datasets, heads): safe as folder names on any system and in URLs."""

from __future__ import annotations

import re

from extractor.errors import HeadstartError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
# Windows reserves these as device names, with or without an extension: a home copied there (or onto an SMB
# share) would break on them.
_DEVICES = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?", re.IGNORECASE)


def check_name(kind: str, name: str) -> str:
    """`name` if it is 1-64 ASCII letters, digits, '.', '_' or '-' starting with a letter or digit, as a whole
    (a trailing newline is refused too), and not a Windows device name (con, nul, com1, ...)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith("."):
        raise HeadstartError(f"{kind} name {name!r}: expected 1-64 letters, digits, '.', '_' or '-', "
                             f"starting with a letter or digit and not ending with '.'")
    if _DEVICES.fullmatch(name):
        raise HeadstartError(f"{kind} name {name!r} is a device name on Windows (con, prn, aux, nul, com1-9, "
                             f"lpt1-9); choose another")
    return name
