"""The smooth stand-in masks of bench/encoding_share.py."""

from __future__ import annotations

import numpy as np

from app.output.polygons import mask_to_rings
from app.results import Instance, InstanceResult
from bench.encoding_share import smoothed


def test_smoothed_keeps_every_instance_and_fills_its_crop_with_one_blob() -> None:
    speckled = np.random.default_rng(0).random((40, 30)) < 0.5
    instances = [
        Instance(1, 0.9, (5.0, 6.0, 35.0, 46.0), speckled, (5, 6)),
        Instance(2, 0.5, (0.0, 0.0, 0.0, 0.0), np.zeros((0, 0), dtype=bool), (0, 0)),
    ]
    result = smoothed(InstanceResult(60, 50, instances))
    assert (result.height, result.width) == (60, 50)
    blob, empty = result.instances
    assert (blob.class_id, blob.score, blob.box, blob.origin) == (1, 0.9, instances[0].box, (5, 6))
    assert blob.mask.shape == (40, 30) and blob.mask.dtype == bool
    assert blob.mask[20, 15] and not blob.mask[0, 0]  # an ellipse: centre in, corners out
    assert 0.7 < blob.mask.mean() < 0.85  # pi/4 of the crop, give or take the rim
    assert [len(rings) for rings in mask_to_rings(blob.mask)] == [1]  # one part, no holes
    assert sum(len(rings) for rings in mask_to_rings(speckled)) > 10  # the stand-in for this
    assert empty.mask.shape == (0, 0)
