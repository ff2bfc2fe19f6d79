"""Crop in a real browser: mark one product in a photo that shows two, by mouse and by keyboard.

The photo is two demo products side by side (PNG, lossless). Marking one of
them makes that product the first result; the results page shows the
cropped photo. Without JavaScript the whole photo is used (the plain form
test in test_search.py).
"""

from __future__ import annotations

import pytest

from .browser import ActionChains, By, Keys, new_results_page, open_page, save_screenshot, wait

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RIGHT = "13"  # the handbag on the right of the two_products photo (conftest.py)


def _choose(driver, url, photo):
    open_page(driver, url + "/", "#search-form")
    driver.find_element(By.ID, "image").send_keys(str(photo))
    box = wait(driver).until(lambda d: d.find_element(By.ID, "crop-box-1"))
    img = driver.find_element(By.CSS_SELECTOR, ".crop-area img")
    # loaded and sized to the form (app.js sets its width once it has loaded)
    wait(driver).until(lambda d: d.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth && arguments[0].style.width", img))
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", img)
    return box, img


def _crop_value(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#crop-fields input[name=crop]").get_attribute("value")


def _narrow(driver, presses: int) -> None:
    """Shift+Left ``presses`` times on the focused crop box (each narrows it by 5% of the photo)."""
    actions = ActionChains(driver)
    for _ in range(presses):
        actions.key_down(Keys.SHIFT).send_keys(Keys.ARROW_LEFT).key_up(Keys.SHIFT)
    actions.perform()


def _first_card_id(driver) -> str:
    href = driver.find_element(By.CSS_SELECTOR, "ol.results > li.card .card-image").get_attribute("href")
    return href.rstrip("/").rsplit("/", 1)[-1]


def test_crop_by_mouse_finds_the_marked_product(live_server, driver, two_products):
    box, img = _choose(driver, live_server.url, two_products)
    assert _crop_value(driver) == ""  # the whole photo until the shopper marks an area
    width, height = img.size["width"], img.size["height"]
    # press near the top-left corner of the right half, drag past the bottom-right corner (clamped)
    ActionChains(driver).move_to_element_with_offset(img, 1, -height // 2 + 1).click_and_hold().move_by_offset(
        width // 4, height // 4
    ).move_by_offset(width // 4 + 5, height * 3 // 4 + 5).release().perform()
    x, y, w, h = (float(v) for v in _crop_value(driver).split(","))
    assert 0.49 <= x <= 0.52 and y <= 0.02
    assert x + w == pytest.approx(1, abs=1e-3) and y + h == pytest.approx(1, abs=1e-3)
    save_screenshot(driver, "crop-01-marked-by-mouse")
    with new_results_page(driver):
        driver.find_element(By.ID, "search-button").click()
    assert _first_card_id(driver) == RIGHT
    assert "cropped" in driver.find_element(By.CSS_SELECTOR, ".query-name").text
    save_screenshot(driver, "crop-02-results")


def test_crop_by_keyboard_finds_the_marked_product(live_server, driver, two_products):
    box, _img = _choose(driver, live_server.url, two_products)
    box.click()  # a click without a drag keeps the whole photo and focuses the box
    assert _crop_value(driver) == ""
    assert driver.switch_to.active_element == box
    _narrow(driver, 10)
    assert _crop_value(driver) == "0,0,0.5,1"
    box.send_keys(*([Keys.ARROW_RIGHT] * 12))  # moves right, stopping at the edge
    assert _crop_value(driver) == "0.5,0,0.5,1"
    status = driver.find_element(By.CSS_SELECTOR, ".crop-status").text
    assert "marked area" in status
    save_screenshot(driver, "crop-03-marked-by-keyboard")
    box.send_keys(Keys.ESCAPE)  # back to the whole photo
    assert _crop_value(driver) == ""
    _narrow(driver, 10)
    box.send_keys(*([Keys.ARROW_RIGHT] * 10))
    assert _crop_value(driver) == "0.5,0,0.5,1"
    with new_results_page(driver):
        driver.find_element(By.ID, "search-button").send_keys(Keys.ENTER)
    assert _first_card_id(driver) == RIGHT


def test_the_whole_photo_button_undoes_a_crop(live_server, driver, two_products):
    box, _img = _choose(driver, live_server.url, two_products)
    box.click()
    _narrow(driver, 4)
    assert _crop_value(driver) == "0,0,0.8,1"
    reset = driver.find_element(By.CSS_SELECTOR, ".crop-reset")
    assert reset.is_displayed()
    reset.click()
    assert _crop_value(driver) == ""
    assert not reset.is_displayed()


def test_a_text_file_is_flagged_before_the_upload(live_server, driver, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    open_page(driver, live_server.url + "/", "#search-form")
    upload = driver.find_element(By.ID, "image")
    upload.send_keys(str(notes))
    message = driver.execute_script("return arguments[0].validationMessage;", upload)
    assert "notes.txt is not a photo" in message
    driver.find_element(By.ID, "search-button").click()  # the browser refuses to submit
    assert driver.find_elements(By.ID, "search-form") and not driver.find_elements(By.CSS_SELECTOR, "ol.results")


def test_the_crop_tool_uses_the_width_of_the_form(live_server, driver, two_products):
    """It was 220 x 120 px on a 1280 px screen, too small to draw on precisely."""
    _, img = _choose(driver, live_server.url, two_products)
    form = driver.find_element(By.ID, "search-form")
    wait(driver).until(lambda d: img.size["width"] >= form.size["width"] / 2)
    assert img.size["height"] == pytest.approx(img.size["width"] / 2, abs=2)  # the photo keeps its 2:1 shape
    save_screenshot(driver, "06-crop-wide")


def test_a_file_the_browser_cannot_draw_gets_a_note_not_a_broken_image(live_server, driver, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    open_page(driver, live_server.url + "/", "#search-form")
    driver.find_element(By.ID, "image").send_keys(str(broken))
    note = wait(driver).until(lambda d: d.find_element(By.CSS_SELECTOR, ".previews .preview-note"))
    assert "No preview for broken.jpg" in note.text
    assert not driver.find_elements(By.CSS_SELECTOR, ".previews img")
    driver.find_element(By.ID, "search-button").click()  # the server says what is wrong with it
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".alert"))
    assert "broken.jpg" in driver.find_element(By.CSS_SELECTOR, ".alert").text
