"""The OpenAPI contract under a fuzzer: schemathesis, every operation, every check, against the
service served by uvicorn over the test cluster.

Each operation gets a bounded number of generated requests from a fixed seed (so a run is
repeatable and takes about a minute), then the stateful phase follows the schema's links (create,
then read, update, delete). Zero failures means: no 500, every status code and header
documented, every response valid against its model, every schema-valid request accepted and
every schema-violating one refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.local_cluster import LocalCluster
from tests.conftest import PROJECT_ROOT
from tests.service import HOST, free_port

SEED = 1
EXAMPLES_PER_OPERATION = 20
RUN_TIMEOUT_S = 600
CONFIG = Path(__file__).with_name("schemathesis.toml")


@contextmanager
def served(redis_url: str) -> Iterator[str]:
    """Serve the app with uvicorn on a free port over ``redis_url``; yield its base URL."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", HOST, "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=PROJECT_ROOT, env=env,
    )  # fmt: skip
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the service did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
def test_the_schema_holds_under_the_fuzzer(cluster: LocalCluster, tmp_path: Path) -> None:
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis is not None, "schemathesis is installed with the test extras"
    with served(cluster.url) as url:
        result = subprocess.run(
            [schemathesis, "--no-color", "--config-file", str(CONFIG), "run",
             f"{url}/openapi.json", "--checks", "all",
             "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(SEED)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
                 "PYTHONPATH": str(PROJECT_ROOT)},
        )  # fmt: skip
    summary = result.stdout[result.stdout.find("SUMMARY") - 40 :]
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "Tested: " in summary, summary
    assert "Stateful" in summary, "the stateful phase ran (links from create to read)"
