"""The CLI decides "nothing to do" and "this index cannot answer" before the model loads.

Each case runs ``python -m indexer`` with a ``tensorflow`` (and ``openvino``)
package on ``PYTHONPATH`` that raises when imported: a command that loaded
the model would fail with a traceback instead of answering. Wall times are
measured by ``python -m benchmarks.bench_cli`` (BENCHMARKS.md, "Command line").
"""

from __future__ import annotations

import json

import pytest

from indexer.build import build_index
from indexer.generation import current_generation, read_manifest
from tests.fakes import FakeEmbedder
from tests.test_cli import _where, run_cli

MODEL_LOADS = "Loading the model"


@pytest.fixture
def no_model(tmp_path) -> dict:
    """Environment under which importing TensorFlow or OpenVINO raises."""
    stubs = tmp_path / "no-model"
    for name in ("tensorflow", "openvino"):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(f"raise RuntimeError('{name} must not load here')\n")
    return {"PYTHONPATH": str(stubs), "FASHION_WEIGHTS": "none"}


@pytest.fixture
def seeded_index(tiny_settings):
    """An index with exactly the model key ``FASHION_WEIGHTS=none`` gives (the fake's vectors, seed 1234's key)."""
    build_index(tiny_settings, FakeEmbedder(weights_id=f"random-seed{tiny_settings.random_seed}"))
    return tiny_settings


def test_build_with_nothing_to_do_answers_without_loading_the_model(seeded_index, no_model):
    done = run_cli("build", "-v", *_where(seeded_index), **no_model)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["up_to_date"] is True and report["total"] == 8
    assert MODEL_LOADS not in done.stderr and "Traceback" not in done.stderr


def test_build_with_work_to_do_still_loads_the_model(seeded_index, no_model):
    (seeded_index.catalogue / "1.jpg").unlink()  # a change: the model is needed
    done = run_cli("build", *_where(seeded_index), **no_model)
    assert done.returncode != 0 and MODEL_LOADS in done.stderr  # it got as far as loading (the stub refuses)


def test_search_refuses_an_index_of_other_weights_before_the_model_loads(fake_index, no_model):
    done = run_cli("search", str(fake_index.catalogue / "5.jpg"), *_where(fake_index), **no_model)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "was built with weights_id fake-v1" in lines[0], done.stderr
    assert "FASHION_WEIGHTS=none" in lines[0] and MODEL_LOADS not in done.stderr


def test_search_refuses_an_index_of_another_model_before_the_model_loads(seeded_index, no_model):
    done = run_cli(
        "search", str(seeded_index.catalogue / "5.jpg"), *_where(seeded_index), FASHION_MODEL="resnet50", **no_model
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "FASHION_MODEL=resnet50" in lines[0] and "model " in lines[0], done.stderr


def test_search_refuses_an_index_tuned_otherwise_before_the_model_loads(seeded_index, no_model):
    tuned = bool(read_manifest(current_generation(seeded_index.index_dir)).get("tuning"))
    flipped = "off" if tuned else "on"
    done = run_cli(
        "search", str(seeded_index.catalogue / "5.jpg"), *_where(seeded_index), FASHION_TUNING=flipped, **no_model
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"but it is {flipped} here" in lines[0], done.stderr


@pytest.mark.parametrize(
    ("address", "says"),
    [("127.0.0.1:1", "does not answer"), ("no-such-host.invalid:6379", "does not answer"), ("banana", "host:port")],
)
def test_a_ray_build_with_an_unreachable_address_fails_at_once(seeded_index, no_model, address, says):
    """Ray itself retries an unreachable head for minutes; the CLI says so in one line, even with nothing to do."""
    done = run_cli("build", "--engine", "ray", "--address", address, *_where(seeded_index), timeout=60, **no_model)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and address in done.stderr
    assert MODEL_LOADS not in done.stderr and "Traceback" not in done.stderr
