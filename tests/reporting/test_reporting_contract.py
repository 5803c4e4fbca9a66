"""The reporting service's OpenAPI contract: its one operation as the schema states it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.main import create_app
from app.reporting.router import MAX_TOP

PATH = "/reporting/profileStats/{n}"


def test_the_operation_is_documented() -> None:
    operation: dict[str, Any] = create_app().openapi()["paths"][PATH]["get"]
    assert operation["summary"]
    assert operation["description"]
    (n,) = operation["parameters"]
    assert (n["schema"]["exclusiveMinimum"], n["schema"]["maximum"]) == (0, MAX_TOP)
    assert n["schema"]["type"] == "integer"
    assert {"200", "422", "503"} <= set(operation["responses"])


@pytest.mark.parametrize("n", [1, MAX_TOP])
async def test_the_bounds_are_accepted(client: httpx.AsyncClient, n: int) -> None:
    answer = await client.get(f"/reporting/profileStats/{n}")
    assert answer.status_code == 200
    assert answer.json() == {"results": []}


@pytest.mark.parametrize("n", ["0", str(MAX_TOP + 1), "1.5", "x"])
async def test_outside_the_bounds_is_422(client: httpx.AsyncClient, n: str) -> None:
    answer = await client.get(f"/reporting/profileStats/{n}")
    assert answer.status_code == 422
    assert "Invalid path parameter 'n'" in answer.json()["message"]
