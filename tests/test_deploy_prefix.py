"""``scripts/install.sh --deploy PREFIX`` without ``--system``: every path its settings and unit name lies under PREFIX.

The packages are not installed here: a stand-in for ``python3`` (``PYTHON``)
makes "virtual environments" whose ``bin/python`` does nothing, so pip's
download is skipped and the script's own work (code, settings, unit, nginx
files) runs in a second. The install with real packages is
tests/test_install_deploy.py (slow).

The rest of the file is the deploy trusting nothing it finds under PREFIX
(it runs as root): symlinks, other users' folders, a planted interpreter,
files it did not install, and prefixes that are not a plain absolute path.
Tests of the ownership rule need root: they skip otherwise, and fail instead
when ``FASHION_REQUIRE_ROOT=1``.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.gunicorn import REPO

# each test runs the deploy script's shell work (about 0.3 s each, 11 s in all): the whole suite, not the fast tier
pytestmark = pytest.mark.slow

ABSOLUTE = re.compile(r"(?<![\w.$])/[A-Za-z0-9._/-]+")


STAND_IN = """#!/bin/sh
# python3 for the deploy script: "-m venv DIR" makes a venv whose python does nothing ("pip install")
if [ "$1" = -m ] && [ "$2" = venv ]; then
  venv="$3"; [ "$venv" = -- ] && venv="$4"
  mkdir "$venv" "$venv/bin" && printf '#!/bin/sh\\nexit 0\\n' > "$venv/bin/python" && chmod 755 "$venv/bin/python"
  exit
fi
exec {python} "$@"
"""


def _stand_in(folder: Path) -> Path:
    python = folder / "python3-stand-in"
    if not python.exists():
        python.write_text(STAND_IN.format(python=sys.executable))
        python.chmod(0o755)
    return python


@functools.cache
def _outside() -> Path:
    """A folder outside every prefix under test, for the stand-in and the working directory."""
    folder = Path(tempfile.mkdtemp(prefix="deploy-stand-in-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _run(prefix: str, tmp: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    """The deploy command into ``prefix`` (any string), from ``tmp`` so that nothing relative lands in the repo."""
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "install.sh"), "--deploy", prefix, *flags],
        cwd=tmp, env=dict(os.environ, PYTHON=str(_stand_in(tmp)), **env),
        capture_output=True, text=True, timeout=120,
    )


def _deploy(prefix: Path, *flags: str) -> subprocess.CompletedProcess:
    return _run(str(prefix), _outside(), *flags)


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


# --- a deploy that trusts nothing it finds under PREFIX ---------------------------------------------------------


def _refused(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "refusing" in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def _tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def _needs_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("FASHION_REQUIRE_ROOT") == "1":
            pytest.fail("FASHION_REQUIRE_ROOT=1 but this test is not running as root")
        pytest.skip("needs root (set FASHION_REQUIRE_ROOT=1 to make this a failure)")


def test_a_symlinked_component_of_the_prefix_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    _refused(_deploy(tmp_path / "link" / "shop"), "symlink")
    assert _tree(tmp_path / "real") == []


def test_a_symlinked_prefix_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "shop").symlink_to(tmp_path / "real")
    _refused(_deploy(tmp_path / "shop"), "symlink")
    assert _tree(tmp_path / "real") == []


@pytest.mark.parametrize(
    "name", ["fashion-search.env", "fashion-search.service", "nginx/fashion-search.conf", "nginx/nginx.conf"]
)
def test_a_planted_symlink_where_a_file_goes_is_refused_and_its_target_untouched(tmp_path, name):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "opt" / "shop"
    (target / name).parent.mkdir(parents=True)
    (target / name).symlink_to(victim)
    _refused(_deploy(target), name)
    assert victim.read_text() == "precious\n"
    assert not (target / "venv").exists() and not (target / "app").exists()  # refused before changing anything


@pytest.mark.parametrize("name", ["fashion-search.service", "nginx/nginx.conf", "fashion-search.env"])
def test_a_symlink_planted_after_a_deploy_is_refused_too(prefix, tmp_path, name):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (prefix / name).unlink()
    (prefix / name).symlink_to(victim)
    _refused(_deploy(prefix), name)
    assert victim.read_text() == "precious\n"


def test_a_planted_interpreter_is_never_run(tmp_path):
    target = tmp_path / "opt" / "shop"
    sentinel = tmp_path / "ran"
    python = target / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\ntouch {sentinel}\n")
    python.chmod(0o755)
    _refused(_deploy(target), f"{target}/venv", ".fashion-search-deploy")
    assert not sentinel.exists()
    assert python.read_text() == f"#!/bin/sh\ntouch {sentinel}\n"  # not ours: left alone


def test_the_venv_is_made_afresh_so_a_swapped_interpreter_is_not_run(prefix, tmp_path):
    sentinel = tmp_path / "ran"
    python = prefix / "venv" / "bin" / "python"
    python.unlink()
    python.write_text(f"#!/bin/sh\ntouch {sentinel}\n")
    python.chmod(0o755)
    done = _deploy(prefix)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not sentinel.exists()
    assert python.read_text() == "#!/bin/sh\nexit 0\n"  # the stand-in's new venv


def test_an_app_folder_it_did_not_install_is_not_removed(tmp_path):
    target = tmp_path / "opt" / "shop"
    (target / "app").mkdir(parents=True)
    (target / "app" / "keep.txt").write_text("mine\n")
    _refused(_deploy(target), f"{target}/app", ".fashion-search-deploy")
    assert (target / "app" / "keep.txt").read_text() == "mine\n"
    assert not (target / "venv").exists()


def test_files_it_did_not_install_are_not_overwritten_but_its_own_are(prefix):
    marker = prefix / ".fashion-search-deploy"
    lines = marker.read_text().splitlines()
    assert {"venv", "app", "fashion-search.service", "nginx/nginx.conf"} <= set(lines)
    marker.write_text("".join(f"{line}\n" for line in lines if line != "fashion-search.service"))
    (prefix / "fashion-search.service").write_text("someone else's\n")
    _refused(_deploy(prefix), "fashion-search.service")
    assert (prefix / "fashion-search.service").read_text() == "someone else's\n"
    marker.write_text("".join(f"{line}\n" for line in lines))
    done = _deploy(prefix)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ExecStart" in (prefix / "fashion-search.service").read_text()
    assert not [path for path in prefix.iterdir() if path.name.startswith((".app.", ".fashion-search."))]


@pytest.mark.parametrize(
    "prefix_text",
    ["{tmp}/opt/../shop", "{tmp}/opt/./shop", "{tmp}/./shop", "{tmp}/shop/..", "{tmp}//shop", "opt/shop", ""],
    ids=["dotdot", "dot", "dot-first", "dotdot-last", "double-slash", "relative", "empty"],
)
def test_a_prefix_that_is_not_a_plain_absolute_path_is_refused(tmp_path, prefix_text):
    (tmp_path / "opt").mkdir()
    done = _run(prefix_text.format(tmp=tmp_path), tmp_path)
    _refused(done, "PREFIX")
    assert _tree(tmp_path) == ["opt", "python3-stand-in"]  # nothing made, not even the folders


@pytest.mark.parametrize("prefix_text", ["/", "//", "/usr", "/tmp", "/opt", "/root", "/home"])
def test_a_system_folder_is_never_the_prefix(tmp_path, prefix_text):
    _refused(_run(prefix_text, tmp_path), "PREFIX")


def test_a_home_folder_is_never_the_prefix(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    _refused(_run(str(home), tmp_path, HOME=str(home)), "home folder")
    assert _tree(home) == []


@pytest.mark.parametrize("mode", [0o775, 0o777, 0o757])
def test_a_component_writable_by_others_is_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    _refused(_deploy(shared / "shop"), "writable by others")
    assert _tree(shared) == []


def test_a_prefix_writable_by_others_is_refused_even_with_the_sticky_bit(tmp_path):
    target = tmp_path / "shop"
    target.mkdir()
    target.chmod(0o1777)
    _refused(_deploy(target), "writable by others")
    assert _tree(target) == []


def test_a_component_owned_by_another_user_is_refused(tmp_path):
    _needs_root()
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, 65534, 65534)  # nobody
    _refused(_deploy(other / "shop"), "belongs to user 65534")
    assert _tree(other) == []


def test_a_file_owned_by_another_user_is_not_read_as_settings(prefix):
    _needs_root()
    os.chown(prefix / "fashion-search.env", 65534, 65534)
    _refused(_deploy(prefix), "fashion-search.env")
