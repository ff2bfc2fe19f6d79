"""``scripts/install.sh --deploy PREFIX`` without ``--system``: every path its settings and unit name lies under PREFIX.

The packages are not installed here: a stand-in ``venv/bin/python`` that
does nothing takes pip's place, so the script's own work (code, settings,
unit, nginx files) runs in a second. The install with real packages is
tests/test_install_deploy.py (slow).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gunicorn import REPO

ABSOLUTE = re.compile(r"(?<![\w.$])/[A-Za-z0-9._/-]+")


def _deploy(prefix: Path, *flags: str) -> subprocess.CompletedProcess:
    stand_in = prefix / "venv" / "bin" / "python"
    if not stand_in.exists():
        stand_in.parent.mkdir(parents=True)
        stand_in.write_text("#!/bin/sh\nexit 0\n")  # "pip install" without the download
        stand_in.chmod(0o755)
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(
        ["bash", "scripts/install.sh", "--deploy", str(prefix), *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def _paths(path: Path) -> list[str]:
    """Every absolute path in a file, comments included (a comment that names /run is a wrong instruction)."""
    found = []
    for line in path.read_text().splitlines():
        found += [match.group(0) for match in ABSOLUTE.finditer(line.split("=", 1)[-1] if "=" in line else line)]
    return found


@pytest.fixture
def prefix(tmp_path) -> Path:
    target = tmp_path / "opt" / "shop"
    done = _deploy(target)
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def test_every_path_in_the_settings_and_the_unit_lies_under_the_prefix(prefix):
    for name in ("fashion-search.env", "fashion-search.service"):
        paths = _paths(prefix / name)
        assert paths, name
        outside = [path for path in paths if not (path == str(prefix) or path.startswith(f"{prefix}/"))]
        assert not outside, f"{name} names {outside}, outside {prefix}"
    settings = dict(
        line.split("=", 1) for line in (prefix / "fashion-search.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["BIND"] == f"unix:{prefix}/run/gunicorn.sock"
    assert settings["FASHION_INDEX_DIR"] == f"{prefix}/var/index"
    assert settings["FASHION_CATALOGUE"] == f"{prefix}/catalogue"
    unit = (prefix / "fashion-search.service").read_text()
    assert "RuntimeDirectory" not in unit and "StateDirectory" not in unit  # they would make /run and /var/lib folders
    assert f"ReadWritePaths={prefix}/var {prefix}/run" in unit
    assert (prefix / "run").is_dir() and (prefix / "var").is_dir() and (prefix / "catalogue").is_dir()


def test_a_second_run_keeps_the_settings_under_the_prefix(prefix):
    settings = prefix / "fashion-search.env"
    settings.write_text(settings.read_text() + "FASHION_TOP_K=7\n")
    done = _deploy(prefix)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FASHION_TOP_K=7" in settings.read_text() and f"{prefix}/var/index" in settings.read_text()
