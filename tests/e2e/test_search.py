"""The shopper's journey in headless Chromium against a real gunicorn.

Each scenario saves a screenshot into the screenshot folder (``screenshots/``
or ``$FASHION_SCREENSHOTS``).
"""

from __future__ import annotations

import csv
import re

import pytest

from .browser import (
    WAIT_S,
    ActionChains,
    By,
    Keys,
    Select,
    card_facts,
    card_item_id,
    cards,
    horizontal_overflow,
    images_without_alt,
    new_results_page,
    open_page,
    save_screenshot,
    submit_search,
    unlabelled_controls,
    wait,
    wait_images_loaded,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOP_K = 5


def _styles(catalogue) -> dict[str, dict[str, str]]:
    with open(catalogue / "styles.csv", newline="") as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def _item_links(driver) -> list[str]:
    return [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "ol.results .card-image")]


# ------------------------------------------------------------------ 1. home page


def test_home_page_shows_form_and_catalogue(live_server, driver):
    open_page(driver, live_server.url + "/", "#search-form")
    name = live_server.catalogue.name
    assert "Find similar products" in driver.title
    assert name not in driver.title  # the shop's name (FASHION_SHOP_NAME), never the folder's
    note = driver.find_element(By.CSS_SELECTOR, ".catalogue-note").text
    assert "144 products" in note, note
    form = driver.find_element(By.ID, "search-form")
    assert form.get_attribute("method").lower() == "post"
    assert form.get_attribute("enctype") == "multipart/form-data"
    upload = driver.find_element(By.ID, "image")
    assert upload.get_attribute("type") == "file" and upload.is_enabled()
    assert driver.find_element(By.ID, "search-button").is_displayed()
    assert driver.find_element(By.ID, "filter-articleType").is_displayed()
    save_screenshot(driver, "01-home")


# ------------------------------------------------------------------ 2. upload


def test_upload_shows_five_results_whose_images_load(live_server, driver, demo_image):
    submit_search(driver, live_server.url, demo_image)
    assert "Results for your photo" in driver.title
    assert driver.find_element(By.CSS_SELECTOR, ".query-name").text == demo_image.name
    found = cards(driver)
    assert len(found) == TOP_K
    thumbs = [card.find_element(By.CSS_SELECTOR, ".card-image img") for card in found]
    widths = wait_images_loaded(driver, thumbs)
    assert all(width > 0 for width in widths), widths
    # the inlined preview of the uploaded photo renders too
    preview = driver.find_element(By.CSS_SELECTOR, ".query-photo img")
    assert wait_images_loaded(driver, [preview])[0] > 0
    # the photo is in the catalogue, so it finds itself first
    assert _item_links(driver)[0].endswith(f"/items/{demo_image.stem}")
    # a card lists no fact its title already states: the demo's names ("Women Red Solid Tshirt")
    # state the type, the colour and who it is for, so its cards list none of them
    styles = _styles(live_server.catalogue)
    for card in found:
        title = card.find_element(By.CSS_SELECTOR, ".card-name").text
        assert title == styles[card_item_id(card)]["productDisplayName"]
        assert card_facts(driver, card) == {}, title
    driver.execute_script("window.scrollTo(0, 0);")
    save_screenshot(driver, "02-results")


# ------------------------------------------------------------------ 3. filters


def test_filter_applies_to_every_result(live_server, driver, demo_image):
    own_type = _styles(live_server.catalogue)[demo_image.stem]["articleType"]
    open_page(driver, live_server.url + "/", "#search-form")
    options = [o.get_attribute("value") for o in Select(driver.find_element(By.ID, "filter-articleType")).options]
    wanted = next(value for value in options if value and value != own_type)
    submit_search(driver, live_server.url, demo_image, {"articleType": wanted})

    found = cards(driver)
    assert len(found) == TOP_K
    styles = _styles(live_server.catalogue)
    types = [styles[card_item_id(card)]["articleType"] for card in found]
    assert types == [wanted] * TOP_K, types
    pills = [p.text for p in driver.find_elements(By.CSS_SELECTOR, ".active-filters .pill")]
    assert pills == [f"Product type: {wanted}"]
    # the form below the results keeps the filter for the next search
    chosen = Select(driver.find_element(By.ID, "filter-articleType")).first_selected_option
    assert chosen.get_attribute("value") == wanted
    save_screenshot(driver, "03-filtered")


def test_gender_filter_applies_to_every_result(live_server, driver, demo_image):
    submit_search(driver, live_server.url, demo_image, {"gender": "Women"})
    found = cards(driver)
    assert len(found) == TOP_K
    styles = _styles(live_server.catalogue)
    genders = [styles[card_item_id(card)]["gender"] for card in found]
    assert genders == ["Women"] * TOP_K, genders
    save_screenshot(driver, "03-filtered-gender")


# ------------------------------------------------------------------ 4. more like this


def test_more_like_this_gives_a_new_result_set(live_server, driver, demo_image):
    submit_search(driver, live_server.url, demo_image)
    before = _item_links(driver)
    assert len(before) == TOP_K
    card = cards(driver)[1]
    assert card.find_element(By.CSS_SELECTOR, ".rank").text == "#2"
    title = card.find_element(By.CSS_SELECTOR, ".card-name").text
    link = card.find_element(By.CSS_SELECTOR, ".more-link")
    target = link.get_attribute("href")
    assert re.search(r"/items/[^/?#]+$", target), target
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", link)
    link.click()

    wait(driver).until(lambda d: d.current_url == target and d.find_elements(By.CSS_SELECTOR, "ol.results"))
    assert driver.find_element(By.TAG_NAME, "h1").text == "More like this"
    assert driver.find_element(By.CSS_SELECTOR, ".item-title").text == title
    after = _item_links(driver)
    assert len(after) == TOP_K
    assert target not in after, "an item is never its own 'more like this' result"
    assert after != before
    widths = wait_images_loaded(driver, driver.find_elements(By.CSS_SELECTOR, "main img"))
    assert all(width > 0 for width in widths), widths
    driver.execute_script("window.scrollTo(0, 0);")
    save_screenshot(driver, "04-more-like-this")


# ------------------------------------------------------------------ 5. not an image


def test_non_image_upload_shows_friendly_error(live_server, driver, tmp_path):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("This is a text file pretending to be a photo.\n" * 20)
    open_page(driver, live_server.url + "/", "#search-form")
    driver.find_element(By.ID, "image").send_keys(str(fake))
    with new_results_page(driver):
        driver.find_element(By.ID, "search-button").click()

    alert = driver.find_element(By.CSS_SELECTOR, "[role=alert]")
    text = alert.text
    assert "We could not search with that upload" in text, text
    assert "not an image" in text, text
    assert "Traceback" not in driver.page_source
    assert not cards(driver)
    # the form is shown again, pointing at the error, ready for another try
    assert "form-error" in driver.find_element(By.ID, "image").get_attribute("aria-describedby")
    save_screenshot(driver, "05-not-an-image")


# ------------------------------------------------------------------ drag-and-drop and paste

_DROP_OR_PASTE = """
var kind = arguments[0], url = arguments[1], done = arguments[arguments.length - 1];
fetch(url).then(function (r) { return r.blob(); }).then(function (blob) {
  var file = new File([blob], kind + "-photo.jpg", {type: "image/jpeg"});
  var transfer = new DataTransfer();
  transfer.items.add(file);
  var event, how = "constructor";
  if (kind === "drop") {
    event = new DragEvent("drop", {bubbles: true, cancelable: true, dataTransfer: transfer});
    document.getElementById("dropzone").dispatchEvent(event);
  } else {
    event = new ClipboardEvent("paste", {bubbles: true, cancelable: true, clipboardData: transfer});
    if (!event.clipboardData) {  // older engines ignore clipboardData in the constructor
      event = new Event("paste", {bubbles: true, cancelable: true});
      Object.defineProperty(event, "clipboardData", {value: transfer});
      how = "synthetic";
    }
    document.body.dispatchEvent(event);
  }
  done({files: document.getElementById("image").files.length, how: how, prevented: event.defaultPrevented});
}).catch(function (e) { done({error: String(e)}); });
"""


@pytest.mark.parametrize("kind", ["drop", "paste"])
def test_drop_or_paste_fills_the_input_and_previews(live_server, driver, demo_image, kind):
    open_page(driver, live_server.url + "/", "#search-form")
    outcome = driver.execute_async_script(_DROP_OR_PASTE, kind, f"/catalogue/{demo_image.name}")
    assert "error" not in outcome, outcome
    assert outcome["files"] == 1, outcome
    assert outcome["prevented"], "the page should take over the drop/paste"
    preview = wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#previews img"))[0]
    assert preview.get_attribute("alt") == f"Preview of {kind}-photo.jpg"
    assert wait_images_loaded(driver, [preview])[0] > 0
    save_screenshot(driver, f"10-{kind}-preview")

    with new_results_page(driver):
        driver.find_element(By.ID, "search-button").click()
    assert driver.find_element(By.CSS_SELECTOR, ".query-name").text == f"{kind}-photo.jpg"
    assert len(cards(driver)) == TOP_K


# ------------------------------------------------------------------ 7. phone viewport


def test_phone_viewport_has_no_horizontal_scrolling(live_server, driver, demo_image):
    # Headless windows cannot be narrower than 500 px, so emulate the phone's viewport.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True}
    )
    try:
        open_page(driver, live_server.url + "/", "#search-form")
        scroll_width, inner_width = horizontal_overflow(driver)
        assert inner_width == 375, inner_width
        assert scroll_width <= inner_width, f"home page is {scroll_width} px wide in a {inner_width} px viewport"
        save_screenshot(driver, "07-phone-home")

        driver.find_element(By.ID, "image").send_keys(str(demo_image))
        with new_results_page(driver):
            driver.find_element(By.ID, "search-button").click()
        assert len(cards(driver)) == TOP_K
        scroll_width, inner_width = horizontal_overflow(driver)
        assert inner_width == 375, inner_width
        assert scroll_width <= inner_width, f"results page is {scroll_width} px wide in a {inner_width} px viewport"
        save_screenshot(driver, "07-phone-results")

        cards(driver)[0].find_element(By.CSS_SELECTOR, ".more-link").click()
        wait(driver).until(lambda d: "/items/" in d.current_url and d.find_elements(By.CSS_SELECTOR, "ol.results"))
        scroll_width, inner_width = horizontal_overflow(driver)
        assert scroll_width <= inner_width, f"item page is {scroll_width} px wide in a {inner_width} px viewport"
        save_screenshot(driver, "07-phone-item")
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# ------------------------------------------------------------------ 8. without JavaScript


def test_plain_form_post_works_without_javascript(live_server, nojs_driver, demo_image):
    driver = nojs_driver
    open_page(driver, live_server.url + "/", "#search-form")
    driver.find_element(By.ID, "image").send_keys(str(demo_image))
    # app.js would add a preview; with JavaScript off nothing happens
    assert driver.find_elements(By.CSS_SELECTOR, "#previews > *") == []
    driver.find_element(By.ID, "search-button").click()
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "ol.results"))
    assert driver.find_element(By.CSS_SELECTOR, ".query-name").text == demo_image.name
    assert len(cards(driver)) == TOP_K
    save_screenshot(driver, "08-no-javascript-results")


# ------------------------------------------------------------------ 9. accessibility basics


def test_images_have_alt_and_controls_have_labels(live_server, driver, demo_image):
    open_page(driver, live_server.url + "/", "#search-form")
    assert images_without_alt(driver) == []
    assert unlabelled_controls(driver) == []

    submit_search(driver, live_server.url, demo_image)
    assert len(driver.find_elements(By.TAG_NAME, "img")) >= TOP_K + 1
    assert images_without_alt(driver) == []
    assert unlabelled_controls(driver) == []

    cards(driver)[0].find_element(By.CSS_SELECTOR, ".more-link").click()
    wait(driver).until(lambda d: "/items/" in d.current_url and d.find_elements(By.CSS_SELECTOR, "ol.results"))
    assert images_without_alt(driver) == []
    assert unlabelled_controls(driver) == []


def _tab_until(driver, element_id: str, limit: int = 40) -> int:
    """Press TAB until the element with ``element_id`` has focus; return the number of presses."""
    for presses in range(1, limit + 1):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.execute_script("return document.activeElement && document.activeElement.id") == element_id:
            return presses
    raise AssertionError(f"#{element_id} was not reached with {limit} TAB presses")


def test_upload_control_is_reachable_and_usable_by_keyboard(live_server, driver, demo_image):
    open_page(driver, live_server.url + "/", "#search-form")
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);")
    presses = _tab_until(driver, "image")
    focused = driver.switch_to.active_element
    assert focused.get_attribute("type") == "file"
    assert focused.is_enabled() and focused.is_displayed()
    assert presses <= 10, f"the upload control needs {presses} TAB presses"
    save_screenshot(driver, "09-keyboard-focus", full_page=False)

    focused.send_keys(str(demo_image))  # what the file chooser opened with Enter/Space would do
    _tab_until(driver, "search-button")
    with new_results_page(driver):
        driver.switch_to.active_element.send_keys(Keys.ENTER)
    assert len(cards(driver)) == TOP_K, f"no results after keyboard submit (waited up to {WAIT_S:.0f} s)"
