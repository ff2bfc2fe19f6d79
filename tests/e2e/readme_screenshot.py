"""Regenerate ``docs/results.png``, the results-page screenshot the README embeds.

    python -m tests.e2e.readme_screenshot [--out docs/results.png] [--query 1]

Generates the demo catalogue into a temporary folder, serves it with a real
gunicorn (random weights, so nothing is downloaded), searches with one demo
photo in headless Chromium at 1280 px, crops the page to the header and the
results row, and saves a palette PNG small enough for the repository.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

from PIL import Image

from .browser import Browser, By, browser_problem, cards, submit_search, wait_images_loaded
from .server import REPO, start_server


def capture(out: Path, query_id: str, width: int = 1280) -> Path:
    from indexer.demo import generate_demo_catalogue

    problem = browser_problem()
    if problem:
        raise SystemExit(f"cannot take the screenshot: {problem}")
    with tempfile.TemporaryDirectory(prefix="fashion-readme-") as tmp:
        catalogue = Path(tmp) / "demo-catalogue"
        generate_demo_catalogue(catalogue)
        server = start_server(catalogue, Path(tmp) / "index", Path(tmp) / "gunicorn.log")
        browser = None
        try:
            server.wait_until_ready(300)
            browser = Browser(width=width, height=1000, extra_args=["--hide-scrollbars"])
            driver = browser.driver
            submit_search(driver, server.url, catalogue / f"{query_id}.jpg")
            wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, "main img"))
            if len(cards(driver)) != 5:
                raise SystemExit("expected 5 results on the page")
            driver.execute_script("window.scrollTo(0, 0);")
            row = driver.find_element(By.CSS_SELECTOR, ".query-row")
            bottom = int(row.rect["y"] + row.rect["height"] + 16)
            png = driver.get_screenshot_as_png()
        finally:
            if browser is not None:
                browser.quit()
            server.stop()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.crop((0, 0, min(width, image.width), min(bottom, image.height)))
    image = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.png")
    parser.add_argument("--query", default="1", help="id of the demo photo to search with")
    args = parser.parse_args(argv)
    path = capture(args.out, args.query)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
