"""The fixed 256-colour palette of class maps and overlays (index 0, background, is black)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def palette_values() -> tuple[int, ...]:
    """The palette as one flat tuple (R, G, B of index 0, then 1, ...), computed once."""
    # The PASCAL VOC colormap: the bits of the index spread over the high bits of R, G and B.
    # Injective, so all 256 colours differ, and index 0 is black.
    values: list[int] = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(7, -1, -1):
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        values += (r, g, b)
    return tuple(values)


def palette() -> list[int]:
    """The fixed 256-colour palette (768 ints, RGB per index); index 0 (background) is black."""
    return list(palette_values())


def colour(class_id: int) -> tuple[int, int, int]:
    """The (R, G, B) of ``class_id`` (ids past 255 wrap round)."""
    p = palette_values()
    i = 3 * (class_id % 256)
    return (p[i], p[i + 1], p[i + 2])
