"""The engine runs start when the session's collection ends and go on beside the rest of it
(tests/engines/runs.py)."""

from __future__ import annotations

import pytest

from tests.engines.runs import start_engine_runs, stop_engine_runs


# After the deselection by ``-m`` and ``-k``: only the runs of the tests that stay start.
@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    start_engine_runs(config, items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_engine_runs(session.config)
