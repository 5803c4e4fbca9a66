"""The runs of a part of the suite on the other engines, in pytest subprocesses that start when
the main run's collection ends and go on beside it.

The main run keeps about one of this machine's two CPUs busy (a pytest process waits on its
servers and subprocesses most of the time), so a run on another engine beside it takes the
other one instead of adding its minutes to the session's (docs/testing.md, "Engines"). The
runs go one after another, in a thread; ``test_the_suite_passes_on`` waits for its engine's,
as the session's last tests. Runs the session no longer waits for (an interrupted or ``-x``
session) are stopped when it ends: their clusters die with them (``die_with_parent``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, SERVICE_TESTS
from tests.engines import ENGINE_ENV

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
# The test of each engine's run: moved to the session's end, its run started at collection.
ENGINE_RUN_TEST = "test_the_suite_passes_on"


class EngineRun:
    """One engine's run: its pytest subprocess, its output, and how it ended."""

    def __init__(self, engine: str, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        self.log = directory / "pytest.log"
        self.returncode: int | None = None
        self.timed_out = False
        self.ended = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def run(self) -> None:
        """Run the engine's tests to their end, interrupting them after ``RUN_TIMEOUT_S``."""
        command = [
            sys.executable, "-m", "pytest", *ENGINE_TESTS[self.engine],
            "-q", "-p", "no:cacheprovider", f"--basetemp={self.directory / 'run'}",
            "--durations=10",
            # Servers of their own run Debian's redis-server whatever the engine: once is enough.
            "-m", "not default_engine_only",
        ]  # fmt: skip
        try:
            if self._stopping:
                return
            with self.log.open("wb") as sink:
                self._process = subprocess.Popen(
                    command,
                    cwd=PROJECT_ROOT,
                    env={**os.environ, ENGINE_ENV: self.engine},
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
                try:
                    self.returncode = self._process.wait(RUN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.timed_out = True
                    self.interrupt()
        finally:
            self.ended.set()

    def interrupt(self) -> None:
        """Stop the run as Ctrl-C would (pytest prints where it was, the tests' durations and
        its summary), then kill it if it has not ended after ``INTERRUPT_GRACE_S``."""
        self._stopping = True
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def tail(self) -> str:
        """Return the last lines of the run's output (the summary of what failed) and where
        the rest is."""
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join([*lines[-OUTPUT_TAIL_LINES:], f"(the whole output: {self.log})"])


class EngineRuns:
    """The session's engine runs, one after another in a background thread."""

    def __init__(self, engines: Sequence[str]) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="pytest-engines-"))
        self.runs = {engine: EngineRun(engine, self.directory / engine) for engine in engines}
        for run in self.runs.values():
            run.directory.mkdir()
        self._thread = threading.Thread(target=self._run_all, name="engine-runs", daemon=True)

    def start(self) -> None:
        """Start the runs in the background."""
        self._thread.start()

    def _run_all(self) -> None:
        for run in self.runs.values():
            run.run()

    def wait(self, engine: str) -> EngineRun:
        """Wait for ``engine``'s run to end; return it."""
        run = self.runs[engine]
        run.ended.wait()
        return run

    def stop(self) -> None:
        """Stop the runs still going or not started, and remove the output of those that
        passed (a failed run's stays, for its test's message)."""
        for run in self.runs.values():
            run.interrupt()
        self._thread.join()
        for run in self.runs.values():
            if run.returncode == 0:
                shutil.rmtree(run.directory, ignore_errors=True)
        if not any(self.directory.iterdir()):
            self.directory.rmdir()


RUNS_KEY = pytest.StashKey[EngineRuns]()


def start_engine_runs(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the selected engine-run tests to the end of ``items`` and start their runs."""
    if os.environ.get(ENGINE_ENV) or config.option.collectonly:
        return  # inside a run on one engine (never again), or nothing runs
    chosen = [
        item
        for item in items
        if isinstance(item, pytest.Function) and item.originalname == ENGINE_RUN_TEST
    ]
    if not chosen:
        return
    items[:] = [*(item for item in items if item not in chosen), *chosen]
    engines = [str(item.callspec.params["engine"]) for item in chosen]
    runs = config.stash[RUNS_KEY] = EngineRuns(engines)
    runs.start()


def stop_engine_runs(config: pytest.Config) -> None:
    """Stop what is left of the session's engine runs (see ``EngineRuns.stop``)."""
    runs = config.stash.get(RUNS_KEY, None)
    if runs is not None:
        runs.stop()
        del config.stash[RUNS_KEY]
