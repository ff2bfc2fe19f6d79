"""Settings: every tunable read and validated in one place, gunicorn's included."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from indexer.config import ConfigError, Settings
from tests.support.gunicorn import REPO


def test_defaults():
    settings = Settings.from_env(env={})
    assert (settings.top_k, settings.max_k, settings.max_files) == (5, 50, 4)
    assert (settings.bind, settings.workers, settings.threads) == ("127.0.0.1:8000", 2, 4)
    assert (settings.worker_timeout_s, settings.backlog, settings.log_level) == (120, 64, "info")
    assert (settings.decode_memory_mb, settings.decode_slots) == (256, 2)


def test_decode_budget_from_the_environment():
    settings = Settings.from_env(env={"FASHION_DECODE_MEMORY_MB": "1024", "FASHION_DECODE_SLOTS": "4"})
    assert (settings.decode_budget_bytes, settings.decode_slots) == (1024 * 1024 * 1024, 4)


def test_server_settings_from_the_environment():
    env = {"HOST": "0.0.0.0", "PORT": "9000", "FASHION_WORKERS": "3", "FASHION_THREADS": "8"}
    env["FASHION_LOG_LEVEL"] = "DEBUG"
    settings = Settings.from_env(env=env)
    assert (settings.bind, settings.workers, settings.threads, settings.log_level) == ("0.0.0.0:9000", 3, 8, "debug")
    assert Settings.from_env(env={"BIND": "unix:/run/fashion.sock", "PORT": "1"}).bind == "unix:/run/fashion.sock"


@pytest.mark.parametrize(
    "env, named",
    [
        ({"FASHION_WORKERS": "two"}, "FASHION_WORKERS"),
        ({"FASHION_WORKERS": "0"}, "FASHION_WORKERS"),
        ({"FASHION_THREADS": "-1"}, "FASHION_THREADS"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"FASHION_LOG_LEVEL": "loud"}, "FASHION_LOG_LEVEL"),
        ({"FASHION_QUEUE_TIMEOUT_S": "nan"}, "FASHION_QUEUE_TIMEOUT_S"),
        ({"FASHION_TOP_K": "60"}, "FASHION_TOP_K"),
        ({"FASHION_DECODE_MEMORY_MB": "8"}, "FASHION_DECODE_MEMORY_MB"),
        ({"FASHION_DECODE_SLOTS": "0"}, "FASHION_DECODE_SLOTS"),
        ({"FASHION_COLOUR_WEIGHT": "1.5"}, "FASHION_COLOUR_WEIGHT"),
        ({"FASHION_COLOUR_WEIGHT": "-0.1"}, "FASHION_COLOUR_WEIGHT"),
        ({"FASHION_LOCATE": "maybe"}, "FASHION_LOCATE"),
    ],
)
def test_malformed_values_are_refused_with_the_variable_named(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env=env)


def test_gunicorn_reads_the_same_settings():
    """gunicorn.conf.py takes workers, threads and bind from Settings, and refuses what Settings refuses."""
    script = (
        "import runpy, json; c = runpy.run_path('gunicorn.conf.py');"
        "print(json.dumps([c['bind'], c['workers'], c['threads'], c['timeout']]))"
    )
    env = {"PATH": "/usr/bin:/bin", "BIND": "127.0.0.1:8123", "FASHION_WORKERS": "3", "FASHION_WORKER_TIMEOUT": "30"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '["127.0.0.1:8123", 3, 4, 30]'

    env["FASHION_WORKERS"] = "many"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "FASHION_WORKERS must be a whole number" in done.stderr


@pytest.mark.slow  # starts gunicorn (and the CLI) in subprocesses
@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("FASHION_TOP_K", "abc", "FASHION_TOP_K must be a whole number of at least 1 (default 5), got 'abc'"),
        ("FASHION_RUNTIME", "gpu", "FASHION_RUNTIME must be one of auto, tensorflow, openvino, openvino-int8"),
        ("FASHION_REQUEST_DEADLINE_S", "nan", "FASHION_REQUEST_DEADLINE_S must be a number of at least 1.0"),
    ],
)
def test_a_bad_setting_is_one_line_for_gunicorn_and_the_cli(variable, value, expected):
    """gunicorn printed an 18-line traceback of gunicorn.conf.py around the message."""
    env = {"PATH": os.environ["PATH"], variable: value}
    for command in (
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
        [sys.executable, "-m", "indexer", "build"],
    ):
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr


@pytest.mark.parametrize("token", ["x", "a" * 15])
def test_a_metrics_token_needs_16_characters_and_never_shows_in_the_message(token):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"FASHION_METRICS_TOKEN": token})
    message = str(info.value)
    assert "FASHION_METRICS_TOKEN" in message and "at least 16 characters" in message
    assert f"{len(token)} characters" in message and (len(token) < 5 or token not in message)
    assert Settings.from_env({"FASHION_METRICS_TOKEN": "a" * 16}).metrics_token == "a" * 16
