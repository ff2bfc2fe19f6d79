"""Headless Chromium for the e2e suite: starting drivers, waiting, reading pages, screenshots.

Selenium is imported lazily-tolerant: when it is missing this module still
imports (so collection works) and the ``browser_ready`` fixture reports the
problem, failing under ``FASHION_REQUIRE_BROWSER=1`` and skipping otherwise.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from .server import REPO

os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything

try:
    from selenium import webdriver
    from selenium.common.exceptions import (
        InvalidSessionIdException,
        NoSuchElementException,
        NoSuchWindowException,
        StaleElementReferenceException,
        WebDriverException,
    )
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    SELENIUM_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the browser_ready fixture
    webdriver = ActionChains = By = Keys = EC = Select = WebDriverWait = None
    interaction = ActionBuilder = PointerInput = None
    NoSuchElementException = StaleElementReferenceException = WebDriverException = None
    InvalidSessionIdException = NoSuchWindowException = None
    SELENIUM_ERROR = str(exc)

CHROMIUM = os.environ.get("FASHION_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FASHION_CHROMEDRIVER", "/usr/bin/chromedriver")

#: Generous bounds: the machine may be busy with other CPU-heavy tests.
WAIT_S = float(os.environ.get("FASHION_E2E_WAIT", "60"))

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
)


#: A phone's screen in CSS pixels (an iPhone 12 to 15): narrower than the 500 px headless Chromium's window allows.
PHONE = (390, 844)


def browser_problem() -> str | None:
    """Why the browser suite cannot run here, or None."""
    problems = []
    if SELENIUM_ERROR:
        problems.append(f"selenium is not importable ({SELENIUM_ERROR})")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            problems.append(f"{path} is missing")
    return "; ".join(problems) or None


def screenshot_dir() -> Path:
    """``$FASHION_SCREENSHOTS`` or ``screenshots/`` at the repo root (gitignored)."""
    folder = Path(os.environ.get("FASHION_SCREENSHOTS") or REPO / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Browser:
    """A Chrome driver plus its throwaway profile directory."""

    def __init__(self, *, javascript: bool = True, width: int = 1280, height: int = 900, extra_args=()):
        self.profile = tempfile.mkdtemp(prefix="fashion-e2e-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in CHROMIUM_ARGS:
            options.add_argument(arg)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.add_argument(f"--window-size={width},{height}")
        for arg in extra_args:
            options.add_argument(arg)
        if not javascript:
            options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        try:
            self.driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
        except Exception:
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(WAIT_S)
        self.driver.set_script_timeout(WAIT_S)

    def emulate_phone(self, width: int = PHONE[0], height: int = PHONE[1], scale: float = 1) -> None:
        """Show pages as a phone does: a ``width`` px touch screen that honours the viewport meta tag."""
        emulate_phone(self.driver, width, height, scale)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def emulate_phone(driver, width: int = PHONE[0], height: int = PHONE[1], scale: float = 1) -> None:
    """Make ``driver``'s pages see a phone: ``width`` x ``height`` CSS px, touch input, mobile viewport.

    Headless Chromium will not make its window narrower than 500 px, so the
    screen is emulated through DevTools instead; touch actions then arrive
    as pointer events of type "touch".
    """
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": True},
    )
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})


def wait(driver, timeout: float = WAIT_S):
    """A wait that polls through page loads.

    A condition that finds an element and then reads it can race a navigation:
    the element goes stale between the two calls. That means "not yet", so the
    wait polls again instead of failing.
    """
    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.2,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )


def save_screenshot(driver, name: str, full_page: bool = True) -> Path:
    """Save a PNG of the page (whole page by default) into the screenshot folder."""
    path = screenshot_dir() / f"{name}.png"
    if full_page:
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
        data = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path.write_bytes(base64.b64decode(data["data"]))
    else:
        driver.save_screenshot(str(path))
    return path


# ------------------------------------------------------------------ page helpers


def open_page(driver, url: str, ready_css: str = "main"):
    driver.get(url)
    wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, ready_css)))


def submit_search(driver, base_url: str, image: Path, filters: dict[str, str] | None = None) -> None:
    """Open the home page, choose ``image`` in the file input, set filters, submit and wait for results."""
    open_page(driver, base_url + "/", "#search-form")
    driver.find_element(By.ID, "image").send_keys(str(image))
    for name, value in (filters or {}).items():
        Select(driver.find_element(By.ID, f"filter-{name}")).select_by_value(value)
    with new_results_page(driver):
        driver.find_element(By.ID, "search-button").click()


def page_complete(driver) -> bool:
    """True once the current page is fully parsed and loaded."""
    return driver.execute_script("return document.readyState") == "complete"


@contextmanager
def new_results_page(driver):
    """Around a click or key press that submits a search: afterwards, wait for the *next* results page.

    Submitting from a results page leaves the old page up until the server
    answers, and it already holds results, so waiting for results alone could
    return on it and the next lookup would race the navigation.
    """
    # A token on the old document's window, not a reference to one of its
    # nodes: Chromium can answer a query on a node of a page being torn down
    # with a generic inspector error instead of "stale element".
    token = uuid.uuid4().hex
    driver.execute_script("window.__fashionTestPage = arguments[0];", token)
    yield
    wait(driver).until(lambda d: _left_page(d, token))
    wait_for_results(driver)


def _left_page(driver, token: str) -> bool:
    """True once the current document's window no longer holds ``token``.

    While the navigation is under way the old document may still answer (with
    the token) or the call may fail; both mean "not yet", and the wait polls again.
    """
    try:
        return driver.execute_script("return window.__fashionTestPage || null;") != token
    except (InvalidSessionIdException, NoSuchWindowException):
        raise  # the browser is gone: say so now, not as a wait that timed out
    except WebDriverException:
        return False


def wait_for_results(driver) -> None:
    """Wait for a results page (a results list or the 'no match' note)."""
    wait(driver).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "ol.results, p.empty, [role=alert]") and page_complete(d)
    )


def cards(driver):
    return driver.find_elements(By.CSS_SELECTOR, "ol.results > li.card")


def card_item_id(card) -> str:
    """The catalogue id of the product on a result card (from its "more like this" link)."""
    href = card.find_element(By.CSS_SELECTOR, ".card-image").get_attribute("href")
    return href.split("?")[0].rstrip("/").rsplit("/", 1)[-1]


def card_facts(driver, card) -> dict[str, str]:
    """The <dt>/<dd> pairs shown on a result card, e.g. {"Type": "Tshirts", "For": "Men"}."""
    return driver.execute_script(
        "var out = {}; arguments[0].querySelectorAll('.facts > div').forEach(function (row) {"
        "  out[row.querySelector('dt').textContent.trim()] = row.querySelector('dd').textContent.trim(); });"
        "return out;",
        card,
    )


def wait_images_loaded(driver, images) -> list[int]:
    """Scroll each image into view (they are lazy), wait until it is complete; return naturalWidths."""
    widths = []
    for img in images:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", img)
        wait(driver).until(lambda d, img=img: d.execute_script("return arguments[0].complete;", img))
        widths.append(driver.execute_script("return arguments[0].naturalWidth;", img))
    return widths


def horizontal_overflow(driver) -> tuple[int, int]:
    """(document scrollWidth, window innerWidth)."""
    return tuple(driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth];"))


def images_without_alt(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.images).filter(function (img) {"
        "  return !(img.getAttribute('alt') || '').trim(); }).map(function (img) { return img.outerHTML; });"
    )


def unlabelled_controls(driver) -> list[str]:
    """Visible inputs, selects and textareas without a label, aria-label or aria-labelledby."""
    return driver.execute_script(
        """
        function visible(el) { return !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length); }
        function labelled(el) {
          if ((el.getAttribute('aria-label') || '').trim()) return true;
          var by = el.getAttribute('aria-labelledby');
          if (by && by.split(/\\s+/).some(function (id) {
                var ref = document.getElementById(id); return ref && ref.textContent.trim(); })) return true;
          if (el.id) {
            var forLabel = document.querySelector('label[for="' + CSS.escape(el.id) + '"]');
            if (forLabel && forLabel.textContent.trim()) return true;
          }
          var wrap = el.closest('label');
          return !!(wrap && wrap.textContent.trim());
        }
        return Array.from(document.querySelectorAll('input, select, textarea'))
          .filter(function (el) { return el.type !== 'hidden' && visible(el) && !labelled(el); })
          .map(function (el) { return el.outerHTML; });
        """
    )


def drag(driver, points, *, touch: bool = False, steps: int = 8, press: bool = True, release: bool = True) -> None:
    """Press at ``points[0]``, move through the others (``steps`` moves each leg) and let go at the last.

    Points are viewport CSS pixels. ``touch`` drags with a finger (pointer
    events of type "touch", as on a phone), otherwise with the mouse. One
    point alone is a tap. A drag can stop with the pointer still down
    (``release=False``) so the page can be examined or changed mid-drag; a
    mouse then goes on with ``press=False``, a finger (chromedriver does not
    carry a touch over to the next action) lifts with ``release_pointers``.
    """
    kind, name = (interaction.POINTER_TOUCH, "finger") if touch else (interaction.POINTER_MOUSE, "mouse")
    pointer = PointerInput(kind, name)
    actions = ActionBuilder(driver, mouse=pointer, duration=20)
    (x, y), rest = points[0], points[1:]
    actions.pointer_action.move_to_location(round(x), round(y))
    if press:
        actions.pointer_action.pointer_down()
    for to_x, to_y in rest:
        for step in range(1, steps + 1):
            actions.pointer_action.move_to_location(
                round(x + (to_x - x) * step / steps), round(y + (to_y - y) * step / steps)
            )
        x, y = to_x, to_y
    if release:
        actions.pointer_action.pointer_up()
    actions.perform()


def release_pointers(driver) -> None:
    """Let go of whatever a drag left pressed (WebDriver's "release actions")."""
    ActionBuilder(driver).clear_actions()


def viewport_rect(driver, element) -> dict[str, float]:
    """``element``'s bounding box in viewport CSS pixels: left, top, width, height."""
    return driver.execute_script(
        "var r = arguments[0].getBoundingClientRect();"
        "return {left: r.left, top: r.top, width: r.width, height: r.height};",
        element,
    )
