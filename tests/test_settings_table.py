"""Each setting is declared once (indexer/config.py's SETTINGS); README.md, --help and errors are drawn from it.

Fast: no TensorFlow, no subprocess.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from indexer import config
from indexer.config import FIELDS, SETTINGS, ConfigError, Settings

REPO = Path(__file__).resolve().parent.parent
REGENERATE = "run `python -m indexer.config --write-readme` to regenerate README.md's table"


def readme_rows() -> dict[str, list[str]]:
    """README.md's Configuration table: variable -> its other cells (markdown)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        names = re.findall(r"`([A-Z_]+)`", cells[0])
        assert len(names) == 1, f"one variable per README row: {line}"
        assert names[0] not in rows, f"{names[0]} is listed twice in README.md"
        rows[names[0]] = cells[1:]
    return rows


def test_readme_lists_exactly_the_declared_settings_with_their_defaults():
    rows = readme_rows()
    declared = [s.name for s in SETTINGS]
    assert sorted(rows) == sorted(declared), REGENERATE
    for s in SETTINGS:
        assert rows[s.name][0] == s.default_text(markdown=True), f"{s.name}: {REGENERATE}"


def test_readme_table_is_the_generated_one():
    """Help, accepted values and order too: the table is printed from SETTINGS, never edited by hand."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert config.markdown_table() in readme, REGENERATE
    assert config.readme_with_table(readme) == readme


def test_the_tuning_settings_are_in_the_readme():
    rows = readme_rows()
    assert rows["FASHION_TUNING"][0] == "`on`" and "catalogue-tuned" in rows["FASHION_TUNING"][-1]
    assert rows["FASHION_TUNING_PRODUCTS"][0] == "`800`"


def test_python_m_indexer_config_prints_the_table(capsys):
    assert config.main([]) == 0
    assert capsys.readouterr().out == config.markdown_table()


def test_settings_declared_once():
    """Variables and fields are unique, and every Settings field but two is a declared setting."""
    names = [s.name for s in SETTINGS]
    fields = [s.field for s in SETTINGS if s.field]
    assert len(set(names)) == len(names) and len(set(fields)) == len(fields)
    assert all(s.help and "\n" not in s.help and not s.help.endswith(".") for s in SETTINGS)
    undeclared = {f.name for f in dataclasses.fields(Settings)} - set(fields)
    assert undeclared == {"is_demo", "random_seed"}


def test_dataclass_defaults_are_the_tables():
    by_field = {f.name: f.default for f in dataclasses.fields(Settings)}
    for s in SETTINGS:
        if s.field and s.field not in ("catalogue", "index_dir", "bind"):
            assert by_field[s.field] == s.default, s.name
    assert by_field["bind"] == "127.0.0.1:8000"


def test_an_empty_environment_gives_the_defaults():
    settings = Settings.from_env(env={})
    for s in SETTINGS:
        if s.field and s.field not in ("catalogue", "index_dir", "bind"):
            expected = Path(s.default).resolve() if s.kind is Path else s.default
            assert getattr(settings, s.field) == expected, s.name
    assert settings.index_dir == config.default_index_dir(settings.catalogue)  # the catalogue's own folder
    assert settings.bind == "127.0.0.1:8000"
    assert (settings.tuning, settings.tuning_products) == (True, 800)


def test_empty_means_the_default():
    env = {s.name: "" for s in SETTINGS}
    assert Settings.from_env(env=env) == Settings.from_env(env={})


def test_tuning_settings():
    settings = Settings.from_env(env={"FASHION_TUNING": "OFF", "FASHION_TUNING_PRODUCTS": "16"})
    assert (settings.tuning, settings.tuning_products) == (False, 16)
    with pytest.raises(ConfigError, match=r"^FASHION_TUNING_PRODUCTS must be a whole number of at least 16 "):
        Settings.from_env(env={"FASHION_TUNING_PRODUCTS": "15"})
    with pytest.raises(ConfigError, match=r"^FASHION_TUNING must be one of on, off \(default on\)"):
        Settings.from_env(env={"FASHION_TUNING": "yes"})


CHECKED = [s for s in SETTINGS if s.kind in (int, float, bool) or s.choices]


@pytest.mark.parametrize("setting", CHECKED, ids=lambda s: s.name)
@pytest.mark.parametrize("value", ["bogus", " "])
def test_every_refusal_is_one_line_with_the_variable_its_values_and_default(setting, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env={setting.name: value})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{setting.name} must be {setting.accepted()} (default {setting.default_text()}), ")


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.kind in (int, float)], ids=lambda s: s.name)
def test_every_bound_is_enforced(setting):
    """One below the minimum and one above the maximum are refused; the bounds themselves pass."""
    step = 1 if setting.kind is int else 0.001
    env = {"FASHION_MAX_K": "100000", "FASHION_TOP_K": "1"}  # top_k <= max_k holds at every bound
    for bound, outside in ((setting.minimum, -step), (setting.maximum, step)):
        if bound is None:
            continue
        with pytest.raises(ConfigError, match=f"^{setting.name} must be"):
            Settings.from_env(env={**env, setting.name: str(bound + outside)})
        Settings.from_env(env={**env, setting.name: str(bound)})


def test_secrets_are_never_echoed():
    for name in ("FASHION_SECRET_KEY",):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(env={name: "hunter2-hunter2"})
        assert "hunter2" not in str(caught.value) and "15 characters" in str(caught.value)


def test_overrides_are_checked_like_the_environment():
    with pytest.raises(ConfigError, match="^FASHION_COLOUR_WEIGHT must be a number from 0.0 to 1.0"):
        Settings.from_env(env={}, colour_weight=1.5)
    with pytest.raises(ConfigError, match="^FASHION_RUNTIME must be one of"):
        Settings.from_env(env={}, runtime="gpu")
    with pytest.raises(ConfigError, match=r"^FASHION_TOP_K must be a whole number from 1 to FASHION_MAX_K \(7\)"):
        Settings.from_env(env={"FASHION_MAX_K": "7"}, top_k=8)
    assert Settings.from_env(env={}, top_k=7, tuning=False).top_k == 7


def test_cli_help_lists_its_settings_from_the_table():
    from indexer.__main__ import make_parser

    text = make_parser().format_help()
    for s in SETTINGS:
        assert (f"  {s.name} " in text) == s.cli, s.name
    assert "FASHION_TUNING_PRODUCTS" in text and "default 800" in text
    assert "FASHION_WORKERS" not in text  # gunicorn's: in README.md and python -m indexer.config


def test_tf_threads_share_under_gunicorn():
    assert config.tf_threads_per_worker(10**6) == 1
    assert FIELDS["tf_threads"].given({"FASHION_TF_THREADS": "0"})
    assert not FIELDS["tf_threads"].given({"FASHION_TF_THREADS": ""})


# Reading a declared variable anywhere but indexer/config.py would declare it a second time.
ENV_READ = re.compile(
    r"""(?:environ(?:\.get|\.setdefault|\.pop)?\s*[(\[]|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|["']([A-Z][A-Z0-9_]*)["']\s+(?:not\s+)?in\s+(?:os\.)?environ"""
)
NOT_SETTINGS = {  # FASHION_ variables that are not settings
    "FASHION_METRICS_DIR_READY",  # gunicorn.conf.py's own bookkeeping across reloads
    "FASHION_METRICS_DIR_OWNED",
    "FASHION_BENCH_CACHE",  # benchmarks/bench_scale.py's download cache
}


def test_settings_are_read_only_through_the_table():
    declared = {s.name for s in SETTINGS}
    offenders = []
    files = [REPO / "gunicorn.conf.py", REPO / "app.py"]
    for folder in ("indexer", "web", "benchmarks", "scripts"):
        files += sorted((REPO / folder).rglob("*.py"))
    for path in files:
        if path == REPO / "indexer" / "config.py" or not path.exists():
            continue
        for name in (a or b for a, b in ENV_READ.findall(path.read_text(encoding="utf-8"))):
            if name in declared or (name.startswith("FASHION_") and name not in NOT_SETTINGS):
                offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert not offenders, "read these through Settings (or FIELDS[...].read): " + ", ".join(offenders)
