"""The cluster suite on the other engines: Valkey 9, and Redis 7.0 and Valkey 9 with the JSON
module.

Each engine's test checks a run of a part of the suite in a pytest subprocess whose session
cluster runs on that engine (``TEST_REDIS_ENGINE``), so the plain ``pytest`` command, which
.ci/run runs, covers every engine. The runs start with the session's tests and go on beside
them (tests/engines/runs.py). Which part runs on which engine, and why: docs/testing.md,
"Engines".
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.engines import ENGINE_ENV, EngineNotFound, engine_named, rejson_module, valkey_server
from tests.engines.runs import ENGINE_TESTS, INTERRUPT_GRACE_S, RUN_TIMEOUT_S, RUNS_KEY


def test_the_engines_are_installed() -> None:
    """The test extras bring Valkey 9 and the JSON module where tests/engines looks for them."""
    version = subprocess.run(
        [valkey_server(), "--version"], capture_output=True, text=True, timeout=10, check=True
    )
    assert version.stdout.startswith("Valkey server v=9."), version.stdout
    assert rejson_module().is_file()
    assert engine_named("valkey-json").modules == (rejson_module(),)
    with pytest.raises(EngineNotFound, match="'redis-stack' is not one of redis, valkey"):
        engine_named("redis-stack")


@pytest.mark.slow
# Inside a run on one engine (this test's own subprocess, or a person's), not again.
@pytest.mark.skipif(bool(os.environ.get(ENGINE_ENV)), reason=f"{ENGINE_ENV} chose the engine")
# The runs go one after another: the last one's test may wait for all of them.
@pytest.mark.timeout(len(ENGINE_TESTS) * (RUN_TIMEOUT_S + INTERRUPT_GRACE_S) + 60)
@pytest.mark.parametrize("engine", list(ENGINE_TESTS))
def test_the_suite_passes_on(engine: str, request: pytest.FixtureRequest) -> None:
    engine_named(engine)  # a missing binary or module fails here, naming it
    # Started with the session's tests, beside them (tests/engines/runs.py).
    runs = request.config.stash.get(RUNS_KEY, None)
    assert runs is not None, "tests/engines/conftest.py starts the runs (not with --noconftest)"
    run = runs.wait(engine)
    if run.error is not None:
        pytest.fail(f"the run on {engine} could not run: {run.error!r}")
    if run.timed_out:
        pytest.fail(f"the run on {engine} took over {RUN_TIMEOUT_S} s:\n{run.tail()}")
    assert run.returncode == 0, f"the run on {engine} failed:\n{run.tail()}"
