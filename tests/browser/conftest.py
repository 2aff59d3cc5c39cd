"""The browser tier: the page at / in Debian's headless Chromium, driven by selenium.

Needs the Debian packages chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver;
found on PATH, or named by SEGSERVE_CHROMIUM / SEGSERVE_CHROMEDRIVER) and selenium (the dev
extra). Selenium is given both paths, so Selenium Manager never runs and nothing is
downloaded. Without them every test here is skipped with the reason; with
SEGSERVE_REQUIRE_BROWSER=1 (set by .ci/run) they fail instead, so CI cannot skip them quietly.

The service is a real `segserve serve` process (tests/e2e/process.py) with an API key and two
cheap real models: an LR-ASPP checkpoint written here (seeded random parameters whose
classifier reads the low-level features, so its class map follows the image's texture in
several classes instead of one class everywhere, as an untrained network gives), and an
untrained Mask R-CNN at a small input size.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.e2e.process import INSTANCE, serve_until_ready

REQUIRE_ENV = "SEGSERVE_REQUIRE_BROWSER"
MISSING_BROWSER = "chromium/chromedriver not installed: apt-get install chromium chromium-driver"
MISSING_SELENIUM = "selenium not installed: pip install -e '.[dev]'"

API_KEY = "browser-test-key"
CATEGORIES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle"]
CHECKPOINT = "lraspp-texture.pth"
SEMANTIC = f"""task = "semantic"
architecture = "lraspp_mobilenet_v3_large"
checkpoint = "{CHECKPOINT}"
categories = {CATEGORIES!r}
""".replace("'", '"')
# Chromium as the machine notes run it: no GPU, no sandbox (root), and none of the background
# connections that a closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--force-device-scale-factor=1",
    "--force-color-profile=srgb",
]


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0", "false"):
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: the browser tests must run)")
    pytest.skip(reason)


@dataclass(frozen=True)
class BrowserTools:
    chromium: str
    chromedriver: str


def _tool(env: str, name: str) -> str | None:
    named = os.environ.get(env)
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which(name)


@pytest.fixture(scope="session")
def browser_tools() -> BrowserTools:
    chromium = _tool("SEGSERVE_CHROMIUM", "chromium")
    chromedriver = _tool("SEGSERVE_CHROMEDRIVER", "chromedriver")
    if chromium is None or chromedriver is None:
        _unavailable(MISSING_BROWSER)
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable(MISSING_SELENIUM)
    assert chromium is not None and chromedriver is not None
    return BrowserTools(chromium, chromedriver)


@pytest.fixture(scope="module")
def driver(browser_tools: BrowserTools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Belt and braces: with both paths given selenium skips Selenium Manager anyway.
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_tools.chromium
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=browser_tools.chromedriver, log_output=str(profile.parent / "driver.log")
    )
    chrome = webdriver.Chrome(options=options, service=service)
    chrome.downloads_dir = downloads  # type: ignore[attr-defined]
    try:
        yield chrome
    finally:
        chrome.quit()


def write_checkpoint(path: Path) -> None:
    """LR-ASPP with seeded random parameters; its classifier reads only the low-level
    features (stride 8), with random weights and no bias, so that the argmax varies with the
    image (an untrained network's answer is one class everywhere)."""
    import torch
    from torchvision import models as tv_models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tv_models.get_model(
            "lraspp_mobilenet_v3_large",
            weights=None,
            weights_backbone=None,
            num_classes=len(CATEGORIES),
        )
        head = model.classifier
        with torch.no_grad():
            head.high_classifier.weight.zero_()
            head.high_classifier.bias.zero_()
            head.low_classifier.bias.zero_()
            head.low_classifier.weight.normal_()
    torch.save(model.state_dict(), path)


def texture_image() -> np.ndarray:
    """160 x 120 RGB: colour ramps, diagonal stripes and two flat rectangles."""
    h, w = 120, 160
    y, x = np.mgrid[0:h, 0:w]
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = x * 255 // w
    image[..., 1] = y * 255 // h
    image[..., 2] = ((x + y) % 64) * 4
    image[30:90, 40:100] = (250, 250, 20)
    image[10:40, 110:150] = (20, 20, 200)
    return image


@dataclass(frozen=True)
class Service:
    base: str
    api_key: str
    image_path: Path
    image: np.ndarray


@pytest.fixture(scope="module")
def service(
    browser_tools: BrowserTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("browser-serve")
    (tmp / "weights").mkdir()
    write_checkpoint(tmp / "weights" / CHECKPOINT)
    image = texture_image()
    image_path = tmp / "texture.png"
    Image.fromarray(image).save(image_path)
    base, proc = serve_until_ready(
        {"seg": SEMANTIC, "inst": INSTANCE},
        tmp,
        api_key=API_KEY,
        warmup="false",
    )
    try:
        yield Service(base, API_KEY, image_path, image)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
