import io

import numpy as np
import pytest
from PIL import Image

from bench.images import jpeg_bytes, photo_like


def test_same_seed_same_image_other_seed_other_image() -> None:
    a = photo_like(64, 48, seed=3)
    assert np.array_equal(a, photo_like(64, 48, seed=3))
    assert not np.array_equal(a, photo_like(64, 48, seed=4))
    assert jpeg_bytes(a) == jpeg_bytes(photo_like(64, 48, seed=3))


def test_shape_and_photo_like_content() -> None:
    image = photo_like(160, 120, seed=0)
    assert image.shape == (120, 160, 3)
    assert image.dtype == np.uint8
    # Not flat, not saturated noise: real structure with moderate local variation.
    assert image.std() > 15
    neighbour_diff = np.abs(np.diff(image.astype(int), axis=1)).mean()
    assert neighbour_diff < 20


def test_jpeg_decodes_to_the_requested_size() -> None:
    with Image.open(io.BytesIO(jpeg_bytes(photo_like(640, 480)))) as decoded:
        assert decoded.format == "JPEG"
        assert decoded.size == (640, 480)


def test_bad_size_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        photo_like(0, 10)
