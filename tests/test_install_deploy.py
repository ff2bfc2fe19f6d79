"""The production install, as written: ``scripts/install.sh --deploy PREFIX`` into a temporary prefix.

Debian's ``python3 -m pip`` refuses system-wide installs and the old unit's
``/usr/bin/python3 -m gunicorn`` found no gunicorn. Here the install makes
its own virtual environment, and the test starts the *exact* ``ExecStart``
line of the unit it wrote, from its ``WorkingDirectory`` and with its
``EnvironmentFile``, in a clean environment (no PYTHONPATH, no packages but
the prefix's), behind the shipped nginx, and searches through it.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.gunicorn import REPO, stop_gunicorn
from tests.support.proxy import nginx_binary, nginx_only, socket_path_for_tests

pytestmark = [
    pytest.mark.slow,  # real nginx and gunicorn
    pytest.mark.skipif(nginx_binary() is None, reason="nginx not installed: run scripts/install.sh"),
]


def _unit(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            fields[key.strip()] = value.strip()
    return fields


def _environment_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    """The install command from the README, run once into a temporary prefix."""
    target = tmp_path_factory.mktemp("deploy") / "opt-fashion-search"
    done = subprocess.run(
        ["bash", "scripts/install.sh", "--deploy", str(target)], cwd=REPO, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return target


def test_install_writes_a_self_contained_prefix(prefix):
    unit = _unit(prefix / "fashion-search.service")
    assert unit["ExecStart"] == f"{prefix}/venv/bin/gunicorn -c gunicorn.conf.py app:app"
    assert unit["WorkingDirectory"] == f"{prefix}/app"
    assert unit["EnvironmentFile"] == f"{prefix}/fashion-search.env"
    assert not [value for value in unit.values() if "/opt/fashion-search" in value]
    assert (prefix / "app" / "app.py").is_file() and not list((prefix / "app").rglob("__pycache__"))
    assert (prefix / "nginx" / "fashion-search.conf").read_text() == (REPO / "deploy" / "nginx.conf").read_text()
    settings = _environment_file(prefix / "fashion-search.env")
    # without --system everything lies under the prefix (tests/test_deploy_prefix.py checks every path)
    assert settings["BIND"] == f"unix:{prefix}/run/gunicorn.sock"
    assert settings["FASHION_INDEX_DIR"] == f"{prefix}/var/index"  # under the unit's writable paths
    assert unit["ReadWritePaths"] == f"{prefix}/var {prefix}/run"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_passes_systemd_analyze_verify(prefix):
    done = subprocess.run(
        ["systemd-analyze", "verify", str(prefix / "fashion-search.service")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_a_second_run_is_an_upgrade_that_keeps_the_settings(prefix):
    settings = prefix / "fashion-search.env"
    settings.write_text(settings.read_text() + "FASHION_TOP_K=7\n")
    done = subprocess.run(
        ["bash", "scripts/install.sh", "--deploy", str(prefix)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert _environment_file(settings)["FASHION_TOP_K"] == "7"
    assert not (prefix / "app.old").exists() and not (prefix / "app.new").exists()


def _healthy(proxy) -> bool:
    try:
        return proxy.request("GET", "/healthz", timeout=10)[0] == 200
    except (OSError, http.client.HTTPException):  # no answer yet (a timeout is an OSError)
        return False


def test_the_units_exact_exec_start_serves_searches_behind_nginx(prefix, built_index, demo_catalogue, tmp_path):
    unit = _unit(prefix / "fashion-search.service")
    socket_path = socket_path_for_tests()
    index_dir = tmp_path / "index"
    shutil.copytree(built_index.index_dir, index_dir, symlinks=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    env.update(_environment_file(Path(unit["EnvironmentFile"])))
    # what differs from a real host: paths this test may write, and the test index's random weights
    env.update(
        BIND=f"unix:{socket_path}",
        FASHION_CATALOGUE=str(built_index.catalogue),
        FASHION_INDEX_DIR=str(index_dir),
        KERAS_HOME=str(tmp_path / "keras"),
        FASHION_WEIGHTS="none",
        FASHION_WORKERS="1",
    )
    with open(tmp_path / "gunicorn.log", "wb") as log:
        server = subprocess.Popen(
            shlex.split(unit["ExecStart"]), cwd=unit["WorkingDirectory"], env=env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        with nginx_only(tmp_path / "nginx", socket_path) as proxy:
            deadline = time.monotonic() + 300
            while not _healthy(proxy):  # a worker loads its index before it answers: it may take a while
                assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
                assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()[-3000:]
                time.sleep(1)
            boundary = uuid.uuid4().hex
            body = (
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"42.jpg\"\r\n"
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode() + (demo_catalogue / "42.jpg").read_bytes() + f"\r\n--{boundary}--\r\n".encode()
            status, _, payload = proxy.request(
                "POST", "/api/search", body=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            assert status == 200, payload[:500]
            assert json.loads(payload)["queries"][0]["results"][0]["id"] == "42"
    finally:
        stop_gunicorn(server)
    # the server ran from the prefix's own packages, not the test's
    log = (tmp_path / "gunicorn.log").read_text()
    assert "Booting worker" in log and str(REPO) not in log
    assert os.path.realpath(shlex.split(unit["ExecStart"])[0]).startswith(str(prefix))
