"""Decodes run at most SEGSERVE_MAX_CONCURRENT_DECODES at a time; the others wait, then succeed."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest

from app.api import body
from app.imaging import decode_image
from tests.api.conftest import Served, encode, sample_image


class DecodeWatch:
    """Wraps the real decoder, recording how many decodes overlap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def __call__(self, data: bytes, limits: Any) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)  # long enough for every request to have arrived
            return decode_image(data, limits)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize(
    ("settings_overrides", "most"),
    [({"max_concurrent_decodes": 1}, 1), ({"max_concurrent_decodes": 3}, 3)],
)
async def test_decodes_are_limited_and_the_rest_wait(
    served: Served, monkeypatch: pytest.MonkeyPatch, most: int
) -> None:
    watch = DecodeWatch()
    monkeypatch.setattr(body, "decode_image", watch)
    data = encode(sample_image(24, 16))
    responses = await asyncio.gather(
        *(
            served.client.post("/segment", content=data, headers={"Content-Type": "image/png"})
            for _ in range(6)
        )
    )
    assert [r.status_code for r in responses] == [200] * 6
    assert watch.most == most
