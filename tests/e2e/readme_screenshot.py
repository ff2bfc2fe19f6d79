"""Regenerate the README screenshots in ``docs/``: the header image and the "first five minutes" walkthrough.

    python -m tests.e2e.readme_screenshot [--out-dir docs] [--query 1]

Generates the demo catalogue into a temporary folder, serves it with a real
gunicorn on a fresh index dir (the default model's real weights, which come
with the install) and
drives headless Chromium at 1280 px through a first visit: the starting
page, the upload form, marking one product in a photo of two, the results,
a shopper's photo of a handbag on a busy parquet floor whose product the
site finds itself, the "Colour first" choice, and browsing; then, on a
390 px phone screen, the same busy photo's results and a finger dragging
the found box's corner handle. Each capture is cropped to what matters and
saved as a palette PNG small enough for the repository.
"""

from __future__ import annotations

import argparse
import base64
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.shopper_scenes import make_shopper_photo

from .browser import (
    PHONE,
    Browser,
    By,
    browser_problem,
    cards,
    drag,
    new_results_page,
    open_page,
    viewport_rect,
    wait,
    wait_images_loaded,
)
from .server import REPO, start_server

WIDTH = 1280


def _page_rect(driver, css: str) -> dict:
    """``css``'s first element's top and bottom in page (not window) CSS pixels."""
    return driver.execute_script(
        "var r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {top: r.top + window.scrollY, bottom: r.bottom + window.scrollY};",
        css,
    )


def _save(driver, out: Path, bottom_css: str | None = None, margin: int = 16, top_css: str | None = None) -> Path:
    """The page from its top (or from ``top_css``) down to ``bottom_css`` (else one window), as a palette PNG.

    Captured beyond the window, so a part taller than the screen is whole.
    """
    driver.execute_script("window.scrollTo(0, 0);")
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight];")
    top = max(0, int(_page_rect(driver, top_css)["top"] - margin)) if top_css else 0
    bottom = int(_page_rect(driver, bottom_css)["bottom"] + margin) if bottom_css else top + height
    clip = {"x": 0, "y": top, "width": min(WIDTH, width), "height": bottom - top, "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    return out


def _two_products(catalogue: Path, out: Path) -> Path:
    both = Image.new("RGB", (600, 300), "white")
    both.paste(Image.open(catalogue / "4.jpg").convert("RGB"), (0, 0))
    both.paste(Image.open(catalogue / "13.jpg").convert("RGB"), (300, 0))
    both.save(out)
    return out


def capture(out_dir: Path, query_id: str) -> list[Path]:
    """Take every README screenshot; returns the files written."""
    from indexer.demo import generate_demo_catalogue

    problem = browser_problem()
    if problem:
        raise SystemExit(f"cannot take the screenshots: {problem}")
    written = []
    with tempfile.TemporaryDirectory(prefix="fashion-readme-") as tmp:
        catalogue = Path(tmp) / "demo-catalogue"
        generate_demo_catalogue(catalogue)
        photo = _two_products(catalogue, Path(tmp) / "outfit.png")
        server = start_server(
            catalogue, Path(tmp) / "index", Path(tmp) / "gunicorn.log", extra_env={"FASHION_WEIGHTS": "auto"}
        )
        browser = None
        try:
            browser = Browser(width=WIDTH, height=900, extra_args=["--hide-scrollbars"])
            driver = browser.driver
            server.wait_until_up(300)
            driver.get(server.url + "/")
            if driver.find_elements(By.ID, "building"):
                written.append(_save(driver, out_dir / "start.png", "#building"))
            server.wait_until_ready(600)

            open_page(driver, server.url + "/", "#search-form")
            driver.find_element(By.ID, "image").send_keys(str(photo))
            # the mouse drags the box's top-left handle to the middle of the top edge: the handbag alone
            img = _loaded_editor(driver)
            rect = viewport_rect(driver, img)
            drag(driver, [(rect["left"], rect["top"]), (rect["left"] + rect["width"] / 2, rect["top"])])
            written.append(_save(driver, out_dir / "crop.png", ".crop-editor"))
            with new_results_page(driver):
                driver.find_element(By.ID, "search-button").click()
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, ".query-row img"))
            written.append(_save(driver, out_dir / "crop-results.png", ".query-row"))

            open_page(driver, server.url + "/", "#search-form")
            driver.find_element(By.ID, "image").send_keys(str(catalogue / f"{query_id}.jpg"))
            with new_results_page(driver):
                driver.find_element(By.ID, "search-button").click()
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, "main img"))
            if len(cards(driver)) != 5:
                raise SystemExit("expected 5 results on the page")
            written.append(_save(driver, out_dir / "results.png", ".query-row"))

            street, truth = _busy_photo(catalogue, Path(tmp) / "parquet.jpg")
            _search_with(driver, server.url, street)
            written.append(_save(driver, out_dir / "located.png", ".query-row"))

            open_page(driver, server.url + "/", "#search-form")
            driver.find_element(By.ID, "image").send_keys(str(catalogue / f"{query_id}.jpg"))
            driver.find_element(
                By.XPATH, "//label[contains(@class, 'match-step')][normalize-space()='Colour first']"
            ).click()
            with new_results_page(driver):
                driver.find_element(By.ID, "search-button").click()
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, "main img"))
            written.append(_save(driver, out_dir / "colour.png", ".query-row"))

            open_page(driver, server.url + "/browse?gender=Women", ".browse-grid")
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, ".browse-grid img")[:12])
            written.append(_save(driver, out_dir / "browse.png", ".browse-grid > li:nth-child(6)"))

            browser.quit()
            browser = Browser(width=WIDTH, height=900, extra_args=["--hide-scrollbars"])
            browser.emulate_phone(*PHONE)
            written.extend(_phone(browser.driver, server.url, street, truth, out_dir))
        finally:
            if browser is not None:
                browser.quit()
            server.stop()
    return written


def _busy_photo(catalogue: Path, out: Path) -> tuple[Path, tuple[float, ...]]:
    """A shopper's photo of the demo handbag on a parquet floor (a held-back scene), and its true box."""
    packshot = np.asarray(Image.open(catalogue / "13.jpg").convert("RGB"))
    data, truth = make_shopper_photo(np.random.default_rng(0), packshot, "wood")
    out.write_bytes(data)
    return out, truth


def _search_with(driver, url: str, photo: Path) -> None:
    open_page(driver, url + "/", "#search-form")
    driver.find_element(By.ID, "image").send_keys(str(photo))
    with new_results_page(driver):
        driver.find_element(By.ID, "search-button").click()
    wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, ".query-row img"))


def _loaded_editor(driver):
    """The crop tool's photo once loaded and sized (app.js sets its width), scrolled into view."""
    img = wait(driver).until(lambda d: d.find_element(By.CSS_SELECTOR, ".crop-area img"))
    wait(driver).until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].style.width", img))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", img)
    return img


def _phone(driver, url: str, photo: Path, truth: tuple[float, ...], out_dir: Path) -> list[Path]:
    """At 390 px: the found box across the screen above the results, then a finger tightening it."""
    _search_with(driver, url, photo)
    shots = [_save(driver, out_dir / "located-phone.png", ".results > li:nth-child(2)")]
    # the form below opens the photo on the found box; the top-left handle is dragged onto the bag's corner
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".crop-area.is-cropped"))
    img = _loaded_editor(driver)
    field = driver.find_element(By.CSS_SELECTOR, "#crop-fields input[name=crop]")
    x, y, _w, _h = (float(v) for v in field.get_attribute("value").split(","))
    rect = viewport_rect(driver, img)
    corner = (rect["left"] + x * rect["width"], rect["top"] + y * rect["height"])
    target = (rect["left"] + truth[0] * rect["width"], rect["top"] + truth[1] * rect["height"])
    drag(driver, [corner, target], touch=True)
    shots.append(_save(driver, out_dir / "adjust-phone.png", ".crop-editor", top_css=".again"))
    return shots


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--query", default="1", help="id of the demo photo to search with")
    args = parser.parse_args(argv)
    for path in capture(args.out_dir, args.query):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
