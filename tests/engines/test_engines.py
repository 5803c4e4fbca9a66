"""The cluster suite on the other engines: Valkey 9, and Redis 7.0 and Valkey 9 with the JSON
module.

Each test runs a part of the suite in a pytest subprocess whose session cluster runs on that
engine (``TEST_REDIS_ENGINE``), so the plain ``pytest`` command, which .ci/run runs, covers every
engine. Which part runs on which engine, and why: docs/testing.md, "Engines".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, SERVICE_TESTS
from tests.engines import ENGINE_ENV, EngineNotFound, engine_named, rejson_module, valkey_server

# Every service's tests (each as its own ACL user), and the tests of what engines may do
# differently: scripts and their replies (and the check that they declare their keys), stream
# groups, a failover, ACL rules, INFO, a resharding under traffic.
VALKEY_TESTS = (
    *(f"tests/{service}" for service in SERVICE_TESTS),
    "tests/workers",
    "tests/test_acl.py",
    "tests/test_domain_acl.py",
    "tests/test_services.py",
    "tests/test_autopipeline.py",
    "tests/test_script_keys.py",
    "tests/test_streams.py",
    "tests/test_redis_client.py",
    "tests/test_health.py",
    "tests/observability/test_metrics.py",
    # A slot moving under traffic: Valkey answers TRYAGAIN longer than Redis 7.0 does. (The
    # shard joining and leaving under mixed traffic, a minute on Valkey, runs on Redis only:
    # docs/testing.md, "Engines".)
    "tests/test_resharding.py::test_commands_ride_out_a_slot_moving_to_a_primary_the_client_has_not_seen",
)
# What reads or writes JSON: the trips (documents as JSON keys, the JSON commands in the trip
# script and in the trips' ACL user) and the ACL check that the JSON commands are accepted.
JSON_TESTS = (
    "tests/trips",
    "tests/test_acl.py::test_module_commands_only_where_the_server_has_the_module",
)
ENGINE_TESTS = {"valkey": VALKEY_TESTS, "redis-json": JSON_TESTS, "valkey-json": JSON_TESTS}
# A run on Valkey takes a few minutes; a stuck one must still end well within CI's time.
RUN_TIMEOUT_S = 600
# A run past its time is interrupted (SIGINT), then killed if it has not ended after this.
INTERRUPT_GRACE_S = 30
OUTPUT_TAIL_LINES = 80


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
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
@pytest.mark.parametrize("engine", list(ENGINE_TESTS))
def test_the_suite_passes_on(engine: str, tmp_path: Path) -> None:
    engine_named(engine)  # a missing binary or module fails here, naming it
    log = tmp_path / "pytest.log"
    command = [
        sys.executable, "-m", "pytest", *ENGINE_TESTS[engine],
        "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'run'}", "--durations=10",
        # Servers of their own run Debian's redis-server whatever the engine: run once is enough.
        "-m", "not default_engine_only",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, ENGINE_ENV: engine},
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            returncode = process.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # As Ctrl-C would: pytest prints where it was, the tests' durations and its summary.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            pytest.fail(f"the run on {engine} took over {RUN_TIMEOUT_S} s:\n{_tail(log)}")
    assert returncode == 0, f"the run on {engine} failed:\n{_tail(log)}"


def _tail(log: Path) -> str:
    """Return the last lines of a run's output (the summary of what failed) and where the
    rest is."""
    lines = log.read_text(errors="replace").splitlines()
    return "\n".join([*lines[-OUTPUT_TAIL_LINES:], f"(the whole output: {log})"])
