"""Every page passes axe-core's WCAG 2.0, 2.1 and 2.2 A and AA rules, on a desktop and on a phone.

The pages: home, results, results with a marked box (its corner handles
showing), browse and an item's "more like this". axe-core 4.x comes from
npm (``scripts/install.sh``); without it these tests fail under
``FASHION_REQUIRE_BROWSER=1`` (CI) and skip elsewhere, like the browser itself.
"""

from __future__ import annotations

import os

import pytest

from . import axe
from .browser import By, Keys, open_page, submit_search, wait, wait_for_results, wait_images_loaded

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCREENS = ("driver", "phone")  # the 1280 px desktop and the 390 px phone fixtures


@pytest.fixture(scope="session")
def axe_source(browser_ready) -> str:
    """axe.min.js, read once; missing is a failure in CI and a skip elsewhere."""
    path = axe.axe_script()
    if path is not None:
        return path.read_text(encoding="utf-8")
    message = f"The accessibility tests need axe-core 4.x from npm: {axe.INSTALL_HINT}."
    if os.environ.get("FASHION_REQUIRE_BROWSER") == "1":
        pytest.fail(message + " (FASHION_REQUIRE_BROWSER=1, so this is an error, not a skip)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(params=SCREENS)
def screen(request):
    return request.getfixturevalue(request.param)


def _assert_accessible(driver, source: str) -> None:
    # lazy images below the fold are part of the page too: load them before checking their contrast
    wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, "main img"))
    driver.execute_script("window.scrollTo(0, 0);")
    version = axe.axe_version(driver, source)
    assert version.startswith("4."), version
    found = axe.violations(driver, source)
    assert not found, f"axe-core {version} on {driver.current_url}:\n{axe.describe(found)}"


def test_home(axe_source, live_server, screen):
    open_page(screen, live_server.url + "/", "#search-form")
    _assert_accessible(screen, axe_source)


def test_results(axe_source, live_server, screen, demo_image):
    submit_search(screen, live_server.url, demo_image)
    _assert_accessible(screen, axe_source)


def test_results_with_a_marked_box_and_its_handles(axe_source, live_server, screen, two_products):
    open_page(screen, live_server.url + "/", "#search-form")
    screen.find_element(By.ID, "image").send_keys(str(two_products))
    box = wait(screen).until(lambda d: d.find_element(By.ID, "crop-box-1"))
    box.click()
    box.send_keys(Keys.SHIFT, Keys.ARROW_LEFT)  # a box narrower than the photo
    screen.find_element(By.ID, "search-button").click()
    wait_for_results(screen)
    # the form below the results opens the photo again on the box it was searched with
    wait(screen).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".crop-area.is-cropped"))
    handles = screen.find_elements(By.CSS_SELECTOR, "#crop-box-1 .crop-handle")
    screen.execute_script("arguments[0].scrollIntoView({block: 'center'});", handles[0])
    assert len(handles) == 4 and all(h.is_displayed() for h in handles)
    _assert_accessible(screen, axe_source)


def test_browse(axe_source, live_server, screen):
    open_page(screen, live_server.url + "/browse", ".browse-grid")
    _assert_accessible(screen, axe_source)


def test_item(axe_source, live_server, screen):
    open_page(screen, live_server.url + "/items/1", ".item-hero")
    _assert_accessible(screen, axe_source)
