"""The engine runs start when the session's tests start and go on beside them; their tests
wait for them at the session's end (tests/engines/runs.py)."""

from __future__ import annotations

import pytest

from tests.engines.runs import move_engine_runs_last, start_engine_runs, stop_engine_runs


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    move_engine_runs_last(items)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    start_engine_runs(session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_engine_runs(session.config)
