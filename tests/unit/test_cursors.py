"""Listing cursors: opaque, round-tripping, and refusing what the service did not make."""

from __future__ import annotations

import pytest

from app.records.index import Cursor


def test_cursors_round_trip_and_refuse_junk() -> None:
    cursor = Cursor(1234, "2f1c:with:colons")
    assert Cursor.decode(cursor.encode()) == cursor
    for junk in ("", "!!!", Cursor(1).encode()[:-2] + "zz", "Mjo1OjE"):
        with pytest.raises(ValueError, match="not a cursor"):
            Cursor.decode(junk)
