"""Regenerate the README screenshots in ``docs/``: the header image and the "first five minutes" walkthrough.

    python -m tests.e2e.readme_screenshot [--out-dir docs] [--query 1]

Generates the demo catalogue into a temporary folder, serves it with a real
gunicorn on a fresh index dir (the default model's real weights, which come
with the install) and
drives headless Chromium at 1280 px through a first visit: the starting
page, the upload form, marking one product in a photo of two, the results,
a street-style photo whose product the site finds itself, the "Colour
first" choice, and browsing. Each capture is cropped to what matters and saved as a
palette PNG small enough for the repository.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from PIL import Image

from tests.test_locate import composite

from .browser import (
    ActionChains,
    Browser,
    By,
    Keys,
    browser_problem,
    cards,
    open_page,
    wait,
    wait_for_results,
    wait_images_loaded,
)
from .server import REPO, start_server

WIDTH = 1280


def _save(driver, out: Path, bottom_css: str | None = None, margin: int = 16) -> Path:
    driver.execute_script("window.scrollTo(0, 0);")
    png = driver.get_screenshot_as_png()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    bottom = image.height
    if bottom_css:
        element = driver.find_element(By.CSS_SELECTOR, bottom_css)
        bottom = min(image.height, int(element.rect["y"] + element.rect["height"] + margin))
    image = image.crop((0, 0, min(WIDTH, image.width), bottom))
    image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
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
            box = wait(driver).until(lambda d: d.find_element(By.ID, "crop-box-1"))
            box.click()
            actions = ActionChains(driver)
            for _ in range(10):
                actions.key_down(Keys.SHIFT).send_keys(Keys.ARROW_LEFT).key_up(Keys.SHIFT)
            actions.perform()
            box.send_keys(*([Keys.ARROW_RIGHT] * 10))
            written.append(_save(driver, out_dir / "crop.png", "#search-button"))
            driver.find_element(By.ID, "search-button").click()
            wait_for_results(driver)
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, ".query-row img"))
            written.append(_save(driver, out_dir / "crop-results.png", ".query-row"))

            open_page(driver, server.url + "/", "#search-form")
            driver.find_element(By.ID, "image").send_keys(str(catalogue / f"{query_id}.jpg"))
            driver.find_element(By.ID, "search-button").click()
            wait_for_results(driver)
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, "main img"))
            if len(cards(driver)) != 5:
                raise SystemExit("expected 5 results on the page")
            written.append(_save(driver, out_dir / "results.png", ".query-row"))

            street = Path(tmp) / "street.jpg"
            street.write_bytes(composite(catalogue / "13.jpg", seed=13)[0])
            open_page(driver, server.url + "/", "#search-form")
            driver.find_element(By.ID, "image").send_keys(str(street))
            driver.find_element(By.ID, "search-button").click()
            wait_for_results(driver)
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, ".query-row img"))
            written.append(_save(driver, out_dir / "located.png", ".query-row"))

            open_page(driver, server.url + "/", "#search-form")
            driver.find_element(By.ID, "image").send_keys(str(catalogue / f"{query_id}.jpg"))
            driver.find_element(
                By.XPATH, "//label[contains(@class, 'match-step')][normalize-space()='Colour first']"
            ).click()
            driver.find_element(By.ID, "search-button").click()
            wait_for_results(driver)
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, "main img"))
            written.append(_save(driver, out_dir / "colour.png", ".query-row"))

            open_page(driver, server.url + "/browse?gender=Women", ".browse-grid")
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, ".browse-grid img")[:12])
            written.append(_save(driver, out_dir / "browse.png", ".browse-grid > li:nth-child(6)"))
        finally:
            if browser is not None:
                browser.quit()
            server.stop()
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--query", default="1", help="id of the demo photo to search with")
    args = parser.parse_args(argv)
    for path in capture(args.out_dir, args.query):
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
