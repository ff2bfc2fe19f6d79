"""``scripts/install.sh`` says each step as it starts and, with its elapsed seconds, as it ends.

Nothing is installed: ``--dry-run`` prints the steps, and the other tests run
the script with a PATH holding only stand-ins for ``python``, ``apt-get`` and
``id`` (and ``dirname``), which record their arguments and exit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.gunicorn import REPO

SCRIPT = REPO / "scripts" / "install.sh"
BASH = shutil.which("bash") or "/bin/bash"
DONE = re.compile(r"^==> (.+) done in (\d+) s \(total (\d+) s\)$")


def _run(args, env=None, path=None):
    environ = dict(os.environ if env is None else env)
    if path is not None:
        environ["PATH"] = str(path)
    return subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=environ)


def _stubs(tmp_path: Path, pip_status: int = 0) -> Path:
    """A PATH folder: python/apt-get log their arguments to calls.log; id says root."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name, status in (("python", pip_status), ("apt-get", 0)):
        stub = bin_dir / name
        stub.write_text(f'#!{BASH}\necho "{name} $*" >> {log}\nexit {status}\n')
        stub.chmod(0o755)
    (bin_dir / "id").write_text(f"#!{BASH}\necho 0\n")
    (bin_dir / "id").chmod(0o755)
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))
    return bin_dir


def test_dry_run_prints_every_step_and_installs_nothing():
    result = _run(["--dry-run"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "==> Installing Python packages (runtime and tests)…" in lines
    assert "==> Installing Python packages (Ray extra)…" in lines
    would = [line.strip() for line in lines if line.strip().startswith("would run:")]
    assert would[0].endswith("-r requirements-dev.txt") and "--quiet" not in would[0]
    assert "--progress-bar off" in would[0]  # not a terminal here: no redrawn bar in the log
    done = [DONE.match(line).group(1) for line in lines if DONE.match(line)]
    assert done[:2] == ["Installing Python packages (runtime and tests)", "Installing Python packages (Ray extra)"]
    # the apt steps are either taken (and timed) or said to be skipped
    for step in ("Installing chromium and chromium-driver (apt)", "Installing nginx (apt)"):
        assert step in done or any(line.startswith(f"==> {step}: skipped") for line in lines)
    assert lines[-1].startswith("==> Installed in ")


def test_dry_run_runtime_only():
    result = _run(["--dry-run", "--runtime"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "==> Installing Python packages (runtime)…",
        "    would run: python -m pip install --disable-pip-version-check --progress-bar off -r requirements.txt",
        "==> Installing Python packages (runtime) done in 0 s (total 0 s)",
    ]


def test_steps_run_and_are_timed(tmp_path):
    path = _stubs(tmp_path)
    result = _run([], path=path)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0] == "python -m pip install --disable-pip-version-check --progress-bar off -r requirements-dev.txt"
    assert calls[1].endswith("-r requirements-ray.txt")
    # chromium is not on this PATH, so the apt step runs (through the stand-in)
    assert "apt-get install -y -qq chromium chromium-driver" in calls
    done = [DONE.match(line).group(1) for line in result.stdout.splitlines() if DONE.match(line)]
    assert "Installing chromium and chromium-driver (apt)" in done
    assert done[:2] == ["Installing Python packages (runtime and tests)", "Installing Python packages (Ray extra)"]


def test_a_failing_step_stops_the_script(tmp_path):
    path = _stubs(tmp_path, pip_status=3)
    result = _run([], path=path)
    assert result.returncode == 3
    assert "==> Installing Python packages (runtime and tests)…" in result.stdout
    assert "done in" not in result.stdout
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 1


def test_unknown_option_is_refused():
    result = _run(["--bogus"])
    assert result.returncode == 2
    assert "unknown option '--bogus'" in result.stderr
