"""The wheel (what the Docker image installs) carries every file the code reads."""

from __future__ import annotations

import fnmatch
import tomllib

from tests.conftest import PROJECT_ROOT


def test_every_data_file_of_the_packages_is_package_data() -> None:
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["*"]
    missing = []
    for top in ("app", "workers"):
        for path in (PROJECT_ROOT / top).rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            package = next(p for p in path.parents if (p / "__init__.py").exists())
            inside = path.relative_to(package).as_posix()
            if not any(fnmatch.fnmatch(inside, pattern) for pattern in patterns):
                missing.append(str(path.relative_to(PROJECT_ROOT)))
    assert missing == [], f"not in [tool.setuptools.package-data]: {missing}"
