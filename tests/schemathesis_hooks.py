"""Hooks the contract test (tests/test_contract.py) loads into schemathesis.

A receive long-polls for up to ``wait_s`` seconds (20 at most) when its queue or group is empty,
as it mostly is for generated names: a generated ``wait_s`` is capped to a fraction of a second,
which keeps the run near a minute. Only values inside the schema's range are touched, so a
request generated to break the schema still breaks it.
"""

from __future__ import annotations

from typing import Any

import schemathesis

MAX_WAIT_S = 0.2
SCHEMA_MAX_WAIT_S = 20


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    """Cap a receive's long poll."""
    operation = context.operation
    if operation is None or not operation.path.endswith("/receive") or not isinstance(body, dict):
        return body
    wait = body.get("wait_s")
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        return body
    if 0 < wait <= SCHEMA_MAX_WAIT_S:
        return {**body, "wait_s": 0 if isinstance(wait, int) else min(wait, MAX_WAIT_S)}
    return body
