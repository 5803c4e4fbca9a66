"""The event loop the long-running processes run on (app/runtime.py)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from app import runtime


async def _loop_name() -> str:
    return runtime.loop_name()


def test_processes_run_on_uvloop_as_uvicorn_does() -> None:
    # uvicorn[standard] installs uvloop: the workers' process runs on it, as the API's does.
    assert runtime.run(_loop_name()) == "uvloop"


def test_without_uvloop_asyncios_loop_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert runtime.run(_loop_name()) == "asyncio"


def test_the_answer_and_the_error_of_the_coroutine_come_back() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise LookupError("kept")

    async def answers() -> int:
        await asyncio.sleep(0)
        return 7

    assert runtime.run(answers()) == 7
    with pytest.raises(LookupError, match="kept"):
        runtime.run(fails())
