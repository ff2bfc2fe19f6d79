"""Shared fixtures: a generated demo catalogue, built indexes, the apps and their client.

Two tiers (``python -m pytest -m "not slow"`` runs the fast one):

* fast: ``fake_embedder`` (``tests/fakes.py``, no TensorFlow), ``fake_index``,
  ``fake_app`` and pytest-flask's ``client`` over it, ``make_fake_app``;
* slow (tests using them are marked ``slow``): the real model with seeded
  random weights (``embedder``, ``built_index``, ``demo_app``,
  ``make_web_app``) or its ImageNet weights (``pretrained_*``). TensorFlow
  is imported inside these fixtures only, never when this file is loaded.

Everything runs with ``FASHION_WEIGHTS=none`` (seeded random weights), so
results are deterministic and no download is attempted.
``tests/support/tiers.py`` fails a fast test that imports TensorFlow anyway.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["FASHION_WEIGHTS"] = "none"
os.environ.setdefault("FASHION_TF_THREADS", "2")
# OpenVINO conversion takes tens of seconds per fresh index dir: tests/test_runtime.py
# converts once per session; everything else (CLI and server subprocesses too) uses TensorFlow.
os.environ.setdefault("FASHION_RUNTIME", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One BLAS thread (read when numpy loads, below; subprocesses inherit it): on a small machine
# shared with other processes OpenBLAS's spinning threads made a 1280 x 1280 eigh (the
# catalogue tuning) 13 times slower than one thread. TensorFlow has its own pools.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Random or fake features teach a catalogue tuning nothing, and its whitening changes every
# distance: indexes are built with the model's own vectors unless a test asks for the tuning
# (tests/test_tuning.py, and pretrained_index, which is built as a shop's would be).
os.environ.setdefault("FASHION_TUNING", "off")
# the decode budget's defaults are what the image tests expect
for _name in ("FASHION_DECODE_MEMORY_MB", "FASHION_DECODE_SLOTS"):
    os.environ.pop(_name, None)

from indexer.config import Settings  # noqa: E402
from indexer.demo import generate_demo_catalogue  # noqa: E402
from tests.fakes import FakeEmbedder  # noqa: E402

pytest_plugins = ("tests.support.tiers",)


@pytest.fixture(scope="session")
def demo_catalogue(tmp_path_factory) -> Path:
    """The demo catalogue (144 images + styles.csv), generated once per session. Read-only."""
    folder = tmp_path_factory.mktemp("demo-catalogue")
    generate_demo_catalogue(folder)
    return folder


@pytest.fixture(scope="session")
def fake_embedder() -> FakeEmbedder:
    """The deterministic TensorFlow-free embedder of the fast tier (``tests/fakes.py``)."""
    return FakeEmbedder()


def _demo_index(tmp_path_factory, demo_catalogue, embedder, name: str, **overrides) -> Settings:
    """Settings of an index over the demo catalogue, built with ``embedder`` into a fresh folder."""
    from indexer.build import build_index

    index_dir = tmp_path_factory.mktemp(name)
    settings = Settings.from_env(catalogue=str(demo_catalogue), index_dir=str(index_dir), **overrides)
    build_index(settings, embedder)
    return settings


@pytest.fixture(scope="session")
def fake_index(tmp_path_factory, demo_catalogue, fake_embedder) -> Settings:
    """Settings of a complete index over the demo catalogue built with ``fake_embedder``. Read-only."""
    return _demo_index(tmp_path_factory, demo_catalogue, fake_embedder, "fake-index")


@pytest.fixture(scope="session")
def embedder():
    """The process-wide embedder with seeded random weights (slow: loads TensorFlow)."""
    from indexer.model import load_embedder

    return load_embedder("none", 1234, int(os.environ["FASHION_TF_THREADS"]))


@pytest.fixture(scope="session")
def pretrained_embedder():
    """EfficientNet-Lite0 with its real ImageNet weights (shipped in a pip package: no download).

    For tests that check what a shopper sees; as deterministic as random weights.
    """
    from indexer.model import load_embedder

    return load_embedder("auto", 1234, int(os.environ["FASHION_TF_THREADS"]))


@pytest.fixture(scope="session")
def pretrained_index(tmp_path_factory, demo_catalogue, pretrained_embedder) -> Settings:
    """Settings of an index over the demo catalogue built with ``pretrained_embedder``. Read-only."""
    return _demo_index(tmp_path_factory, demo_catalogue, pretrained_embedder, "pretrained-index", weights="auto")


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, demo_catalogue, embedder) -> Settings:
    """Settings of a complete index over the demo catalogue, built once. Read-only."""
    return _demo_index(tmp_path_factory, demo_catalogue, embedder, "demo-index")


@pytest.fixture
def small_catalogue(tmp_path, demo_catalogue) -> Path:
    """A writable copy of 24 demo images (3 of each category) with their styles.csv rows."""
    folder = tmp_path / "catalogue"
    folder.mkdir()
    lines = (demo_catalogue / "styles.csv").read_text().splitlines()
    keep = [line for line in lines[1:] if int(line.split(",")[0]) <= 24]
    for line in keep:
        image_id = line.split(",")[0]
        shutil.copy2(demo_catalogue / f"{image_id}.jpg", folder / f"{image_id}.jpg")
    (folder / "styles.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    return folder


@pytest.fixture
def small_settings(tmp_path, small_catalogue) -> Settings:
    """Settings for the writable small catalogue and a fresh index dir."""
    return Settings.from_env(catalogue=str(small_catalogue), index_dir=str(tmp_path / "index"))


class CountingEmbedder:
    """An embedder (the real or the fake one), with a count of the images it embedded.

    Everything but ``embed`` and ``embed_with_features`` is delegated
    unchanged, so a build sees the same weights id and model; those two run
    the wrapped forward pass and add the batch size to ``images``.
    """

    def __init__(self, inner):
        self._inner = inner
        self.images = 0
        self.calls = 0

    def embed(self, batch):
        self.calls += 1
        self.images += 1 if batch.ndim == 3 else len(batch)
        return self._inner.embed(batch)

    def embed_one(self, image):
        return self.embed(image[None])[0]

    def embed_with_features(self, batch):
        self.calls += 1
        self.images += 1 if batch.ndim == 3 else len(batch)
        return self._inner.embed_with_features(batch)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture
def counting_embedder(embedder) -> CountingEmbedder:
    """A fresh counting wrapper around the session embedder (slow)."""
    return CountingEmbedder(embedder)


@pytest.fixture
def fake_counting_embedder(fake_embedder) -> CountingEmbedder:
    """A fresh counting wrapper around ``fake_embedder``."""
    return CountingEmbedder(fake_embedder)


@pytest.fixture
def tiny_settings(small_settings) -> Settings:
    """Like ``small_settings`` but with only 8 images (ids 1-8), for tests that build several times."""
    folder = small_settings.catalogue
    for path in folder.glob("*.jpg"):
        if int(path.stem) > 8:
            path.unlink()
    lines = (folder / "styles.csv").read_text().splitlines()
    keep = [line for line in lines[1:] if int(line.split(",")[0]) <= 8]
    (folder / "styles.csv").write_text("\n".join([lines[0], *keep]) + "\n")
    return small_settings


# ---------------------------------------------------------------- web app (pytest-flask)


def _make_app(settings: Settings, embedder, *, autobuild: bool = False, **config):
    from web import create_app

    return create_app(settings, embedder=embedder, autobuild=autobuild, **({"TESTING": True} | config))


@pytest.fixture(scope="session")
def make_fake_app(fake_embedder):
    """Factory for extra apps on ``fake_embedder``: ``make_fake_app(settings, autobuild=False, **flask_config)``."""
    return lambda settings, **kwargs: _make_app(settings, fake_embedder, **kwargs)


@pytest.fixture(scope="session")
def fake_app(fake_index, make_fake_app):
    """One ready app over ``fake_index`` (no autobuild), shared by the fast web tests.

    Shared: do not register routes on it or change its config; make your own with ``make_fake_app``.
    """
    return make_fake_app(fake_index)


@pytest.fixture(scope="session")
def make_web_app(embedder):
    """Factory for extra apps on the real model: ``make_web_app(settings, autobuild=False, **flask_config)``.

    Every app shares the session embedder, so no second model is loaded (slow).
    """
    return lambda settings, **kwargs: _make_app(settings, embedder, **kwargs)


@pytest.fixture(scope="session")
def pretrained_app(pretrained_index, pretrained_embedder):
    """A ready app over ``pretrained_index``: a fresh install's defaults, real ImageNet features."""
    return _make_app(pretrained_index, pretrained_embedder)


@pytest.fixture(scope="session")
def demo_app(built_index, make_web_app):
    """One ready app over the real-model demo index (no autobuild; slow). Shared: do not change it."""
    return make_web_app(built_index)


@pytest.fixture
def app(fake_app):
    """The app pytest-flask builds its ``client`` fixture from: the fast ``fake_app``.

    A test that needs the real model's answers over HTTP uses ``demo_app`` /
    ``pretrained_app`` and their ``test_client()`` instead.
    """
    return fake_app


@pytest.fixture(autouse=True)
def _restore_decode_budget():
    """Every app sets the process-wide decode budget from its settings; put it back after each test.

    The wait observer too: an app with metrics off (or a bare ``configure_decode_budget``)
    clears it, and the shared app's decode-wait metric would stop counting for later tests.
    """
    from indexer.images import DECODE_BUDGET

    saved = (DECODE_BUDGET.limit_bytes, DECODE_BUDGET.slots, DECODE_BUDGET.wait_s)
    observer = DECODE_BUDGET.on_wait
    yield
    DECODE_BUDGET.resize(*saved)
    DECODE_BUDGET.on_wait = observer
