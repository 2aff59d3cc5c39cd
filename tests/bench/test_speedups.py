import numpy as np

from app.results import Instance, InstanceResult, SemanticResult
from bench.speedups import INSTANCE_VARIANTS, SEMANTIC_VARIANTS, agreement


def _instances(*boxes: tuple[float, float, float, float], labels: list[int]) -> InstanceResult:
    mask = np.ones((2, 2), dtype=bool)
    found = [
        Instance(class_id=c, score=0.9, box=b, mask=mask, origin=(0, 0))
        for c, b in zip(labels, boxes, strict=True)
    ]
    return InstanceResult(height=10, width=10, instances=found)


def test_class_maps_are_compared_pixel_by_pixel() -> None:
    reference = SemanticResult(class_map=np.zeros((2, 5), dtype=np.uint8))
    result = SemanticResult(class_map=np.array([[0] * 5, [0, 0, 0, 1, 1]], dtype=np.uint8))
    equal, how = agreement(result, reference)
    assert equal == 0.8 and how == "80.000% of class-map pixels equal"


def test_instances_are_compared_by_labels_then_boxes() -> None:
    reference = _instances((0, 0, 4, 4), (1, 1, 5, 5), labels=[1, 2])
    moved = _instances((0, 0, 4, 4.25), (1, 1, 5, 5), labels=[1, 2])
    assert agreement(moved, reference) == (1.0, "same 2 labels in order, boxes within 0.25 px")
    swapped = _instances((0, 0, 4, 4), (1, 1, 5, 5), labels=[2, 1])
    assert agreement(swapped, reference)[0] == 0.0


def test_the_last_variant_of_each_is_the_services_default() -> None:
    # bf16 weights for semantic models, threaded RoIAlign for Mask R-CNN: both on in the service.
    assert list(SEMANTIC_VARIANTS.values())[-1] == ("bf16", True, True, True, True)
    assert list(INSTANCE_VARIANTS.values())[-1] == ("fp32", True, True, False, True)
    assert INSTANCE_VARIANTS["fp32 NCHW (before)"][-1] is False
