"""Entity tags from record versions, and the If-Match and If-None-Match preconditions.

A record's ETag is its version number in quotes (``"3"``): the version rises with every change
made through this service, so a tag names one state of the record. ``If-Match`` makes a write
conditional on the current version (strong comparison: a weak tag ``W/"3"`` never matches);
``If-None-Match`` on a read answers 304 when the client already has the current version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.errors import AppError

# RFC 9110 entity-tag: an optional W/ and a quoted string without quotes or controls.
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')


class MalformedPrecondition(AppError):
    def __init__(self, header: str) -> None:
        super().__init__(f'{header} must be * or a comma-separated list of entity tags like "3"')


def etag(version: int) -> str:
    """Return the ETag of a record at ``version``."""
    return f'"{version}"'


@dataclass(frozen=True)
class Precondition:
    """The versions a conditional write accepts; None accepts any (no If-Match, or ``*``)."""

    versions: frozenset[int] | None = None

    def script_arg(self) -> str:
        """Encode for a script: '' for any version, else ``,3,5,`` (``,`` matches none)."""
        if self.versions is None:
            return ""
        return "," + "".join(f"{version}," for version in sorted(self.versions))


def _tags(header: str, value: str) -> list[tuple[bool, str]]:
    tags = []
    for item in value.split(","):
        match = _ENTITY_TAG.fullmatch(item.strip())
        if match is None:
            raise MalformedPrecondition(header)
        tags.append((match.group(1) is not None, match.group(2)))
    return tags


def _version(opaque: str) -> int | None:
    # Tags compare as strings: only the exact text of a version (no leading zeros) names it.
    if opaque.isascii() and opaque.isdigit() and len(opaque) < 19 and str(int(opaque)) == opaque:
        return int(opaque)
    return None


def parse_if_match(value: str | None) -> Precondition:
    """Read an If-Match header; raise MalformedPrecondition (400)."""
    if value is None or value.strip() == "*":
        return Precondition()
    versions = {
        version
        for weak, opaque in _tags("If-Match", value)
        if not weak and (version := _version(opaque)) is not None
    }
    return Precondition(frozenset(versions))


def none_match(value: str | None, version: int) -> bool:
    """Return True if an If-None-Match header names ``version`` (weak comparison) or is ``*``."""
    if value is None:
        return False
    if value.strip() == "*":
        return True
    return any(_version(opaque) == version for _weak, opaque in _tags("If-None-Match", value))
