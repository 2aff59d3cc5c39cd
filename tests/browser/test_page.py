"""The page at / in a real browser: it sends the image, draws what the service answered.

The drawing is checked against the service itself: the test asks /segment for the PNG class
map of the same image and computes what the canvas must show at 100% overlay opacity (the
page's slider; a region's pixels are then exactly its colour): the VOC palette colour of each
pixel's class, the image where the class is background. Instances likewise against the
instance id map, each instance in the colour of its legend swatch.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.output.palette import palette_values
from tests.browser.conftest import Service

pytestmark = pytest.mark.browser

PALETTE = np.array(palette_values(), dtype=np.uint8).reshape(256, 3)


# --------------------------------------------------------------------------- helpers


def wait_for(driver: Any, what: str, check: Callable[[Any], Any], timeout: float = 120) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(check)
    except TimeoutException:
        state = driver.execute_script(
            "return [document.body.dataset.state, document.getElementById('status').textContent,"
            " document.getElementById('error').textContent]"
        )
        pytest.fail(f"waited {timeout} s for {what}; page state, status, error: {state}")


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def state(driver: Any) -> str:
    return str(driver.execute_script("return document.body.dataset.state"))


def open_page(driver: Any, service: Service) -> None:
    """Load /, see it ask for the key, type the key, and wait for the models."""
    from selenium.webdriver.common.keys import Keys

    driver.get_log("browser")  # start a clean console log
    driver.get(f"{service.base}/")
    wait_for(driver, "the page to ask for the key", lambda d: state(d) == "error")
    assert "needs an API key" in by_id(driver, "status").text
    key = by_id(driver, "api-key")
    key.send_keys(service.api_key)
    key.send_keys(Keys.TAB)  # "change" fires when the field loses focus
    wait_for(driver, "the models to load", lambda d: state(d) == "ready")


def set_number(driver: Any, element_id: str, value: str) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(value)


def full_opacity(driver: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    by_id(driver, "opacity").send_keys(Keys.END)
    assert by_id(driver, "opacity-value").text == "100%"


def choose_image(driver: Any, service: Service) -> None:
    by_id(driver, "file").send_keys(str(service.image_path))
    h, w = service.image.shape[:2]
    wait_for(driver, "the image", lambda d: f"{w} x {h}" in by_id(d, "file-info").text)


def run(driver: Any) -> None:
    """Press Send and wait for the next drawing."""
    before = int(by_id(driver, "canvas").get_attribute("data-results"))
    wait_for(driver, "Send to be enabled", lambda d: by_id(d, "run").is_enabled())
    by_id(driver, "run").click()
    wait_for(
        driver,
        "the result to be drawn",
        lambda d: int(by_id(d, "canvas").get_attribute("data-results")) == before + 1,
    )
    assert state(driver) == "drawn", by_id(driver, "error").text


def canvas_pixels(driver: Any) -> np.ndarray:
    """The canvas's pixels exactly (RGB), as its PNG download has them."""
    url = driver.execute_script("return document.getElementById('canvas').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def screenshot_pixels(driver: Any) -> np.ndarray:
    """What the browser shows of the canvas."""
    shot = by_id(driver, "canvas").screenshot_as_png
    return np.array(Image.open(io.BytesIO(shot)).convert("RGB"))


def legend(driver: Any) -> list[tuple[str, str, str]]:
    """(label text, value text, swatch rgb) per legend row."""
    rows = driver.execute_script(
        """return [...document.querySelectorAll('#legend tbody tr')].map(tr => [
             tr.querySelector('td.label').textContent,
             tr.querySelector('td.value').textContent,
             getComputedStyle(tr.querySelector('.swatch')).backgroundColor])"""
    )
    return [tuple(row) for row in rows]


def rgb(css: str) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in re.findall(r"\d+", css)[:3])
    return (r, g, b)


def interior(labels: np.ndarray, margin: int) -> np.ndarray:
    """Pixels whose (2 margin + 1)^2 neighbourhood has their own label."""
    h, w = labels.shape
    same = np.zeros_like(labels, dtype=bool)
    same[margin : h - margin, margin : w - margin] = True
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            shifted = np.roll(labels, (dy, dx), axis=(0, 1))
            same &= shifted == labels
    return same


def ask(service: Service, path: str, **params: Any) -> httpx.Response:
    with service.image_path.open("rb") as image:
        response = httpx.post(
            f"{service.base}{path}",
            params=params,
            files={"image": (service.image_path.name, image, "image/png")},
            headers={"X-API-Key": service.api_key},
            timeout=120,
        )
    assert response.status_code == 200, response.text
    return response


def hover(driver: Any, x: int, y: int) -> str:
    """Point at pixel (x, y) of the canvas; the hover line's text after the "(x, y): ".

    WebDriver offsets count from the element's centre, which it rounds its own way: the
    pixel pointed at may be a neighbour, so the caller picks a pixel whose neighbours are
    alike, and the coordinates the page reports must be within one pixel.
    """
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = by_id(driver, "canvas")
    w = int(canvas.get_attribute("width"))
    h = int(canvas.get_attribute("height"))
    ActionChains(driver).move_to_element_with_offset(canvas, x - w // 2, y - h // 2).perform()
    text = str(by_id(driver, "hover").text)
    match = re.fullmatch(r"\((\d+), (\d+)\): (.*)", text)
    assert match, text
    assert abs(int(match[1]) - x) <= 1 and abs(int(match[2]) - y) <= 1, (text, x, y)
    return match[3]


def console_problems(driver: Any) -> list[str]:
    """Severe console entries other than the 401 the page expects before the key is typed."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "status of 401" not in entry["message"]
    ]


def downloaded(driver: Any, name: str) -> bytes:
    path = driver.downloads_dir / name
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_bytes()
        time.sleep(0.1)
    pytest.fail(f"{name} was not downloaded into {driver.downloads_dir}")


# ----------------------------------------------------------------------------- tests


def test_segment_is_drawn_as_the_service_classes_it(driver: Any, service: Service) -> None:
    open_page(driver, service)
    assert by_id(driver, "model").get_attribute("value") == "seg"
    choose_image(driver, service)
    set_number(driver, "tolerance", "0")  # exact polygons
    full_opacity(driver)
    run(driver)

    # The legend lists what the service finds, with each class's area.
    answer = ask(service, "/segment", format="json", tolerance=0).json()
    assert len(answer["segments"]) >= 3, "the texture model should give several classes"
    rows = legend(driver)
    assert [row[0] for row in rows] == [s["label"] for s in answer["segments"]]
    assert [int(row[1].split()[0]) for row in rows] == [s["area"] for s in answer["segments"]]
    assert [rgb(row[2]) for row in rows] == [
        tuple(int(v) for v in PALETTE[s["class_id"]]) for s in answer["segments"]
    ]

    # The drawing is the service's class map in the palette's colours over the image.
    classes = np.array(Image.open(io.BytesIO(ask(service, "/segment", format="png").content)))
    expected = np.where(classes[..., None] > 0, PALETTE[classes], service.image)
    drawn = canvas_pixels(driver)
    assert drawn.shape == expected.shape
    differ = np.any(drawn != expected, axis=-1)
    assert not differ.any(), f"{int(differ.sum())} of {differ.size} pixels differ"
    shown = screenshot_pixels(driver)
    assert shown.shape == expected.shape, "the canvas is shown 1:1"
    assert np.array_equal(shown, expected)

    # Hovering names the class under the pointer and lights its legend row.
    core = interior(classes, 2) & (classes > 0)
    target = int(np.bincount(classes[core]).argmax())
    ys, xs = np.nonzero(core & (classes == target))
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    label = answer["segments"][[s["class_id"] for s in answer["segments"]].index(target)]["label"]
    segment = next(s for s in answer["segments"] if s["class_id"] == target)
    share = 100 * segment["area"] / classes.size
    assert hover(driver, x, y) == f"{label}, {segment['area']} px ({share:.1f}%)"
    assert (
        driver.execute_script("return document.querySelector('#legend tr.hot').dataset.label")
        == label
    )
    bg = np.argwhere(interior(classes, 2) & (classes == 0))
    if len(bg):
        by, bx = (int(v) for v in bg[len(bg) // 2])
        assert hover(driver, bx, by) == "background"

    # Unticking a class in the legend uncovers the image there.
    from selenium.webdriver.common.by import By

    driver.find_element(
        By.CSS_SELECTOR, f'#legend tr[data-label="{label}"] input[type=checkbox]'
    ).click()
    hidden = canvas_pixels(driver)
    mask = classes == target
    assert np.array_equal(hidden[mask], service.image[mask])
    assert np.array_equal(hidden[~mask], expected[~mask])
    by_id(driver, "legend-all").click()
    assert np.array_equal(canvas_pixels(driver), expected)

    # Server-Timing is read from the response and listed.
    stages = driver.execute_script(
        "return [...document.querySelectorAll('#timing tr')].map(tr => tr.dataset.stage)"
    )
    assert {"decode", "queue", "infer", "encode"} <= set(stages)

    # Downloads: the canvas as PNG, the answer as JSON.
    by_id(driver, "download-png").click()
    png = Image.open(io.BytesIO(downloaded(driver, "texture.segment.png"))).convert("RGB")
    assert np.array_equal(np.array(png), expected)
    by_id(driver, "download-json").click()
    assert json.loads(downloaded(driver, "texture.segment.json")) == answer

    # The key went only into headers: no URL the page loaded or shows has it, nothing kept.
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(u.endswith("/models") for u in urls)
    assert not [u for u in [*urls, driver.current_url] if service.api_key in u]
    assert driver.execute_script("return sessionStorage.length") == 0
    assert console_problems(driver) == []  # no CSP violation, no script error

    # An error answer is shown as the service words it, and the drawing stays.
    set_number(driver, "tile", "8")  # below the smallest tile
    by_id(driver, "run").click()
    wait_for(driver, "the error", lambda d: state(d) == "error")
    assert by_id(driver, "error").text.startswith("422 invalid_parameter: tile:")
    assert np.array_equal(canvas_pixels(driver), expected)


def test_instances_are_listed_and_drawn(driver: Any, service: Service) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(driver, service)
    driver.find_element(By.CSS_SELECTOR, 'input[name="endpoint"][value="instances"]').click()
    wait_for(
        driver, "the instance model", lambda d: by_id(d, "model").get_attribute("value") == "inst"
    )
    choose_image(driver, service)
    params = {"score_threshold": "0", "mask_threshold": "0.5", "max_instances": "5"}
    for name, value in params.items():
        set_number(driver, name.replace("_", "-"), value)
    full_opacity(driver)
    by_id(driver, "show-boxes").click()  # boxes off: only the masks are painted
    assert not by_id(driver, "show-boxes").is_selected()

    ids = np.array(
        Image.open(io.BytesIO(ask(service, "/instances", format="png", **params).content))
    )
    for encoding, tolerance in (("rle", "1"), ("polygons", "0")):
        Select(by_id(driver, "mask-encoding")).select_by_value(encoding)
        set_number(driver, "tolerance", tolerance)
        run(driver)
        answer = ask(
            service,
            "/instances",
            format="json",
            mask_encoding=encoding,
            tolerance=tolerance,
            **params,
        ).json()
        assert answer["instances"], "an untrained Mask R-CNN finds something at threshold 0"
        rows = legend(driver)
        assert [(row[0], row[1]) for row in rows] == [
            (f"#{k} {inst['label']}", f"{inst['score']:.3f}")
            for k, inst in enumerate(answer["instances"], start=1)
        ], encoding
        # Each instance's visible pixels (the id map's) are its swatch's colour.
        drawn = canvas_pixels(driver)
        core = interior(ids, 1)
        checked = 0
        for k, row in enumerate(rows, start=1):
            where = core & (ids == k)
            if where.any():
                assert (drawn[where] == rgb(row[2])).all(), (encoding, k)
                checked += 1
        assert checked, "some instance is visible in the id map"
        uncovered = core & (ids == 0)
        assert np.array_equal(drawn[uncovered], service.image[uncovered])
    assert "instance(s)" in by_id(driver, "status").text
    assert console_problems(driver) == []
