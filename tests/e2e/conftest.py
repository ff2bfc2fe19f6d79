"""Fixtures of the browser suite: headless Chromium and a real gunicorn.

The server reuses the session's ``built_index`` (tests/conftest.py), so it is
ready as soon as its workers have loaded the model. Without Chromium the suite
skips with the reason, unless ``FASHION_REQUIRE_BROWSER=1`` (set by .ci/run),
where it fails loudly instead.
"""

from __future__ import annotations

import os

import pytest
from PIL import Image

from .browser import Browser, browser_problem, save_screenshot
from .server import start_server

SERVER_START_S = float(os.environ.get("FASHION_E2E_SERVER_START", "180"))


@pytest.fixture(scope="session")
def browser_ready() -> None:
    """Headless Chromium, chromedriver and selenium are present (fail in CI, skip elsewhere)."""
    problem = browser_problem()
    if problem is None:
        return
    message = (
        f"The real-browser (e2e) tests need headless Chromium: {problem}. "
        "Install it with `apt-get install chromium chromium-driver` and `pip install -r requirements-dev.txt`."
    )
    if os.environ.get("FASHION_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " (FASHION_REQUIRE_BROWSER=1, so this is an error, not a skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def live_server(browser_ready, built_index, tmp_path_factory):
    """gunicorn (2 workers, random weights) serving the demo catalogue's prebuilt index."""
    log_path = tmp_path_factory.mktemp("e2e-server") / "gunicorn.log"
    server = start_server(built_index.catalogue, built_index.index_dir, log_path)
    try:
        server.wait_until_ready(SERVER_START_S)
        status = server.status()
        assert status["state"] == "ready" and not status["rebuilding"], (status, server.log_tail())
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pretrained_server(browser_ready, pretrained_index, tmp_path_factory):
    """gunicorn (1 worker) with EfficientNet-Lite0's real weights over the demo catalogue: what shoppers get."""
    log_path = tmp_path_factory.mktemp("e2e-pretrained") / "gunicorn.log"
    server = start_server(
        pretrained_index.catalogue, pretrained_index.index_dir, log_path, workers=1,
        extra_env={"FASHION_WEIGHTS": "auto"},
    )
    try:
        server.wait_until_ready(SERVER_START_S)
        status = server.status()
        assert status["state"] == "ready" and not status["rebuilding"], (status, server.log_tail())
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _desktop_browser(browser_ready):
    browser = Browser(width=1280, height=900)
    yield browser
    browser.quit()


def _clean_slate(browser: Browser):
    """``browser``'s driver with no cookies and a blank page: each test starts as if the browser were new."""
    drv = browser.driver
    drv.delete_all_cookies()
    drv.get("about:blank")
    return drv


@pytest.fixture
def driver(_desktop_browser):
    """The shared 1280x900 desktop driver, with a clean slate for each test."""
    return _clean_slate(_desktop_browser)


@pytest.fixture(scope="session")
def _phone_browser(browser_ready):
    browser = Browser(width=1280, height=900)
    browser.emulate_phone()
    yield browser
    browser.quit()


@pytest.fixture
def phone(_phone_browser):
    """A shared driver whose pages see a phone: 390 x 844 CSS px, touch input (see ``emulate_phone``)."""
    return _clean_slate(_phone_browser)


@pytest.fixture
def nojs_driver(browser_ready):
    """A separate driver with JavaScript switched off by Chrome preference."""
    browser = Browser(javascript=False)
    yield browser.driver
    browser.quit()


@pytest.fixture
def two_products(live_server, tmp_path):
    """A PNG of two demo products side by side: casual shoes ("4") on the left, a handbag ("13") on the right."""
    both = Image.new("RGB", (600, 300), "white")
    both.paste(Image.open(live_server.catalogue / "4.jpg").convert("RGB"), (0, 0))
    both.paste(Image.open(live_server.catalogue / "13.jpg").convert("RGB"), (300, 0))
    path = tmp_path / "two-products.png"
    both.save(path)
    return path


@pytest.fixture
def demo_image(built_index):
    """A catalogue photo to upload (the first demo image)."""
    return sorted(built_index.catalogue.glob("*.jpg"), key=lambda p: int(p.stem))[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"_e2e_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _screenshot_on_failure(request):
    """When a test fails, save what each of its browsers showed."""
    yield
    report = getattr(request.node, "_e2e_call", None)
    if report is None or not report.failed:
        return
    for name in ("driver", "phone", "nojs_driver"):
        drv = request.node.funcargs.get(name)
        if drv is not None:
            try:
                save_screenshot(drv, f"FAILED-{request.node.name}-{name}", full_page=False)
            except Exception:  # noqa: BLE001 - best effort; the failure itself is what matters
                pass
