"""The runs of a part of the suite on the other engines, in pytest subprocesses that start with
the session's tests and go on beside them.

The main run keeps about one of this machine's two CPUs busy (a pytest process waits on its
servers and subprocesses most of the time), so a run on another engine beside it takes the
other one instead of adding its minutes to the session's (docs/testing.md, "Engines"). The
runs go one after another, in a thread; ``test_the_suite_passes_on`` waits for its engine's,
as the session's last tests. Runs the session no longer waits for (an interrupted or ``-x``
session) are stopped when it ends: their clusters die with them (``die_with_parent``). A
session killed outright leaves its run to end by itself: a ``preexec_fn`` that would tie the
run to the session is unsafe in a process with threads. A run takes its ports from a region of
its own (``PORT_REGION_ENV``), so that neither session finds free a port the other has just
chosen, or is about to take back (a node restarted on its port).
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
from tests.service import PORT_REGION_ENV

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
# A run on Valkey takes about five minutes beside the main run, over six on a slow stretch of
# this machine (docs/benchmarks.md, "Durations"); a stuck one must still end well within CI's
# time.
RUN_TIMEOUT_S = 900
# A run past its time is interrupted (SIGINT), then killed if it has not ended after this.
INTERRUPT_GRACE_S = 30
OUTPUT_TAIL_LINES = 80
WAIT_STEP_S = 0.5
# The test of each engine's run: moved to the session's end, its run started with the tests.
ENGINE_RUN_TEST = "test_the_suite_passes_on"


class EngineRun:
    """One engine's run: its pytest subprocess, its output, and how it ended."""

    def __init__(self, engine: str, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        self.log = directory / "pytest.log"
        self.returncode: int | None = None
        self.timed_out = False
        self.error: BaseException | None = None  # the run could not be started or waited for
        self.ended = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False
        # Between a stop and the start of the subprocess: a run stopped before it started
        # never starts, one started is interrupted.
        self._lock = threading.Lock()

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
            with self._lock:
                if self._stopping:
                    return
                self.directory.mkdir(parents=True)
                with self.log.open("wb") as sink:
                    self._process = subprocess.Popen(
                        command,
                        cwd=PROJECT_ROOT,
                        # Its own ports, apart from this session's (tests/service.py).
                        env={**os.environ, ENGINE_ENV: self.engine, PORT_REGION_ENV: "1"},
                        stdin=subprocess.DEVNULL,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
            try:
                self.returncode = self._process.wait(RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.timed_out = True
                self.interrupt()
        except Exception as exc:  # for the run's test to report, not the thread to swallow
            self.error = exc
        finally:
            self.ended.set()

    def stop(self) -> None:
        """Keep the run from starting if it has not."""
        with self._lock:
            self._stopping = True

    def interrupt(self) -> None:
        """Stop the run as Ctrl-C would (pytest prints where it was, the tests' durations and
        its summary), then kill it if it has not ended after ``INTERRUPT_GRACE_S``."""
        self.stop()
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def failed(self) -> bool:
        """Whether the run could not start, failed or took too long."""
        return self.error is not None or self.timed_out or self.returncode not in (None, 0)

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
        self._thread = threading.Thread(target=self._run_all, name="engine-runs", daemon=True)

    def start(self) -> None:
        """Start the runs in the background."""
        self._thread.start()

    def _run_all(self) -> None:
        try:
            for run in self.runs.values():
                run.run()
        finally:  # no test waits forever for a run that will not come
            for run in self.runs.values():
                run.ended.set()

    def wait(self, engine: str) -> EngineRun:
        """Wait for ``engine``'s run to end; return it."""
        run = self.runs[engine]
        # In steps: a wait without a timeout would not see a signal (Ctrl-C, pytest-timeout's
        # SIGALRM) that Linux hands to the runs' thread instead of this one.
        while not run.ended.wait(WAIT_STEP_S):
            pass
        return run

    def stop(self) -> None:
        """Stop the runs still going or not started, and remove the output of all but those
        that ended failing (kept for their tests' messages)."""
        going = [run for run in self.runs.values() if not run.ended.is_set()]
        for run in self.runs.values():
            run.stop()  # first, so the thread starts no next run while one is interrupted
        for run in going:
            run.interrupt()
        if self._thread.ident is not None:
            self._thread.join()
        for run in self.runs.values():
            if run in going or not run.failed:
                shutil.rmtree(run.directory, ignore_errors=True)
        if not any(self.directory.iterdir()):
            self.directory.rmdir()


RUNS_KEY = pytest.StashKey[EngineRuns]()


def move_engine_runs_last(items: list[pytest.Item]) -> None:
    """Move the engine-run tests to the end of ``items``: they wait for their runs, which go on
    beside the tests before them."""
    chosen = [item for item in items if _is_engine_run(item)]
    items[:] = [*(item for item in items if item not in chosen), *chosen]


def start_engine_runs(session: pytest.Session) -> None:
    """Start the runs of the engine-run tests the session is about to run (its final list:
    after ``-m``, ``-k``, ``--lf`` and the others have chosen)."""
    config = session.config
    if os.environ.get(ENGINE_ENV) or config.option.collectonly:
        return  # inside a run on one engine (never again), or nothing runs
    if session.testsfailed and not config.option.continue_on_collection_errors:
        return  # collection errors: the session stops before its first test
    engines = [
        str(item.callspec.params["engine"])
        for item in session.items
        if isinstance(item, pytest.Function) and _is_engine_run(item)
    ]
    if engines:
        runs = config.stash[RUNS_KEY] = EngineRuns(engines)
        runs.start()


def _is_engine_run(item: pytest.Item) -> bool:
    return isinstance(item, pytest.Function) and item.originalname == ENGINE_RUN_TEST


def stop_engine_runs(config: pytest.Config) -> None:
    """Stop what is left of the session's engine runs (see ``EngineRuns.stop``)."""
    runs = config.stash.get(RUNS_KEY, None)
    if runs is not None:
        runs.stop()
        del config.stash[RUNS_KEY]
