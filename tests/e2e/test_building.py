"""The starting and building page: named steps and live progress, then the search page by itself.

Workers answer at once while the model loads in the background, so the
first page is the starting page (step "Loading the image model"); the same
page, polling, then marks the scanning and embedding steps and shows the bar.

A second gunicorn serves a fresh index dir over a catalogue made of the demo
photos copied into subfolders under distinct names (three times by default,
432 photos: a quiet machine embedded 144 in about 2 s, between two of the
page's polls; ``FASHION_E2E_BUILD_COPIES`` for more). Small batches make the build publish
progress every few images, so the bar can be read several times during the
10-40 s build, and the suite stays short on a busy machine.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from .browser import By, save_screenshot, wait
from .server import start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

COPIES = int(os.environ.get("FASHION_E2E_BUILD_COPIES", "3"))
BATCH_SIZE = os.environ.get("FASHION_E2E_BUILD_BATCH", "8")
BUILD_WAIT_S = float(os.environ.get("FASHION_E2E_BUILD_WAIT", "180"))
START_WAIT_S = float(os.environ.get("FASHION_E2E_SERVER_START", "180"))

_READ_PROGRESS = """
var bar = document.getElementById("build-progress"), text = document.getElementById("build-text");
if (!bar) return null;
return {value: Number(bar.value), max: Number(bar.max), text: text ? text.textContent.trim() : "",
        marks: Array.from(document.querySelectorAll("#build-steps li")).map(function (li) {
          return li.getAttribute("data-step") + ":" + li.className; })};
"""


@pytest.fixture
def big_catalogue(tmp_path, demo_catalogue):
    """The demo photos ``COPIES`` times over, in subfolders, each file under its own name."""
    folder = tmp_path / "big-catalogue"
    photos = sorted(demo_catalogue.glob("*.jpg"))
    for copy in range(COPIES):
        sub = folder / f"copy{copy}"
        sub.mkdir(parents=True)
        for photo in photos:
            shutil.copy2(photo, sub / f"c{copy}-{photo.name}")
    return folder, len(photos) * COPIES


def _progress_beyond(minimum: float, total: int):
    """A wait condition: the bar of ``total`` photos shows more than ``minimum``.

    Returns the reading, or ``{"gone": True}`` when the building page has already
    been replaced (so the wait ends and the test can say why).
    """

    def condition(driver):
        reading = driver.execute_script(_READ_PROGRESS)
        if reading is None:
            return {"gone": True}
        return reading if reading["max"] == total and reading["value"] > minimum else False

    return condition


def test_building_page_shows_progress_then_becomes_the_search_page(browser_ready, driver, big_catalogue, tmp_path):
    catalogue, count = big_catalogue
    # Batches of 8 publish progress four times as often as the default 32.
    server = start_server(
        catalogue, tmp_path / "fresh-index", tmp_path / "gunicorn-building.log",
        extra_env={"FASHION_BATCH_SIZE": BATCH_SIZE},
    )
    try:
        server.wait_until_up(START_WAIT_S)
        started = time.monotonic()
        driver.get(server.url + "/")
        assert driver.find_elements(By.ID, "building"), (
            "expected the starting or building page while the first index is built; got: " + driver.title
        )
        steps = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#build-steps li")]
        assert steps == [
            "Loading the image model",
            "Scanning the catalogue",
            "Reading the product photos",
            "Publishing the search index",
        ], steps
        # One script reads the step and its text together: the page polls the
        # status at once, so the step may move on between two separate reads.
        reading = driver.execute_script(_READ_PROGRESS)
        current = next(mark.split(":")[0] for mark in reading["marks"] if mark.endswith(":current"))
        text = reading["text"]
        # the title is the answering worker's state; a poll may reach the other worker
        assert driver.title.startswith(("Starting", "Preparing the catalogue")), driver.title
        if current == "model":
            assert "Loading the image model" in text, text
            save_screenshot(driver, "05-starting")
        else:  # a fast machine: the model was loaded before the first request or the page's first poll
            assert current in ("scanning", "embedding", "publishing"), current
        driver.execute_script("window.e2eSamePage = true;")  # lost if the page were reloaded

        # 1st reading: the bar has started moving (embedding has begun).
        first = wait(driver, BUILD_WAIT_S).until(_progress_beyond(0, count))
        assert "gone" not in first, "the build finished before any progress could be read; use more copies"
        assert f"{int(first['value'])} of {count} photos" in first["text"], first
        # read with the bar in one script, so that a later poll cannot change them in between
        assert first["marks"][:3] == ["model:done", "scanning:done", "embedding:current"], first
        print(f"first reading after {time.monotonic() - started:.1f} s: {first}")
        save_screenshot(driver, "06-building-progress-1")

        # 2nd reading: the same page (never reloaded by us) shows more progress.
        second = wait(driver, BUILD_WAIT_S).until(_progress_beyond(first["value"], count))
        assert "gone" not in second, f"the build finished before a second reading (first: {first})"
        assert second["value"] > first["value"] and second["text"] != first["text"], (first, second)
        assert driver.execute_script("return window.e2eSamePage === true;"), "progress came from a reload, not polling"
        print(f"second reading after {time.monotonic() - started:.1f} s: {second}")
        save_screenshot(driver, "06-building-progress-2")

        # Then the page turns into the search form by itself.
        wait(driver, BUILD_WAIT_S).until(lambda d: d.find_elements(By.ID, "search-form"))
        assert not driver.find_elements(By.ID, "building")
        assert driver.current_url.rstrip("/") == server.url
        assert f"{count} products" in driver.find_element(By.CSS_SELECTOR, ".catalogue-note").text
        # the page turns as soon as one worker serves; the other may still be refreshing
        server.wait_until_ready(BUILD_WAIT_S)
        assert server.status()["state"] == "ready"
        print(f"search page after {time.monotonic() - started:.1f} s")
        save_screenshot(driver, "06-building-done")
    except Exception:
        print(server.log_tail())
        raise
    finally:
        server.stop()
