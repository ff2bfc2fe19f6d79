"""The fast tier's guard (``tests/support/tiers.py``) fails a run that loads TensorFlow without a ``slow`` test.

``python -m pytest -m "not slow"`` must never import TensorFlow, Keras or
OpenVINO. Each case runs pytest in a subprocess on a small generated test
file, with the guard plugin and a stand-in package named ``tensorflow``
(the guard looks at ``sys.modules`` only, so the real one, seconds to
import, is not needed to prove it fires).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from indexer.config import PROJECT_ROOT


def run_pytest(folder: Path, source: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``source`` as ``test_case.py`` in ``folder`` under pytest with only the guard plugin loaded."""
    (folder / "test_case.py").write_text(textwrap.dedent(source))
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: needs a real model\n")
    stub = folder / "stub" / "tensorflow"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "__init__.py").write_text('"""Stands in for TensorFlow: the guard only sees the name."""\n')
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(folder / "stub"), str(PROJECT_ROOT)]),
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",  # this project's conftest and installed plugins stay out
    )
    command = [sys.executable, "-m", "pytest", "-p", "tests.support.tiers", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


FAST_TEST_IMPORTS_TENSORFLOW = """
    def test_embeds_with_the_real_model():
        import tensorflow  # noqa: F401

    def test_after_it():
        pass
"""


def test_a_fast_test_that_imports_tensorflow_fails_and_is_named(tmp_path):
    done = run_pytest(tmp_path, FAST_TEST_IMPORTS_TENSORFLOW, "-m", "not slow")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "test_case.py::test_embeds_with_the_real_model is not marked slow but its call imported tensorflow" in (
        done.stdout
    )
    assert "1 failed, 1 passed" in done.stdout  # the next test is not blamed for it
    assert "fast tier broken" in done.stdout  # and the run says why it fails as a whole


def test_a_slow_test_may_import_tensorflow(tmp_path):
    """Control: the same import in a test marked slow, in a run that selects it, passes."""
    source = "\n    import pytest\n" + FAST_TEST_IMPORTS_TENSORFLOW.replace(
        "    def test_embeds", "    @pytest.mark.slow\n    def test_embeds"
    )
    done = run_pytest(tmp_path, source)
    assert done.returncode == pytest.ExitCode.OK, done.stdout
    assert "2 passed" in done.stdout and "fast tier broken" not in done.stdout


def test_a_test_module_that_imports_tensorflow_fails_a_fast_run(tmp_path):
    """Every run imports every test module, so an import at module level loads TensorFlow in the fast tier too."""
    source = """
        import tensorflow  # noqa: F401

        def test_something_fast():
            pass
    """
    done = run_pytest(tmp_path, source, "-m", "not slow")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "1 passed" in done.stdout
    assert "tensorflow got imported while the test modules were imported (collection)" in done.stdout

