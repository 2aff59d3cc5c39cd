"""Python client for segserve, the image segmentation service (docs/api.md).

    from segserve_client import Client

    with Client("http://localhost:8000") as client:
        result = client.segment("photo.jpg")
        result.class_map          # (H, W) uint8 class indices
        client.instances("photo.jpg").instances[0].mask   # (H, W) bool

Depends only on httpx, numpy and Pillow.
"""

from segserve_client._client import DEFAULT_TIMEOUT_S, AsyncClient, Client, Prediction
from segserve_client._decode import (
    png_to_class_map,
    png_to_id_map,
    polygons_to_mask,
    rle_counts,
    rle_to_mask,
)
from segserve_client._errors import SegserveError
from segserve_client._images import IMAGE_EXTENSIONS, ImageInput, expand_inputs
from segserve_client._results import (
    Instance,
    InstancesResult,
    Result,
    Segment,
    SegmentResult,
    parse_server_timing,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "IMAGE_EXTENSIONS",
    "AsyncClient",
    "Client",
    "ImageInput",
    "Instance",
    "InstancesResult",
    "Prediction",
    "Result",
    "Segment",
    "SegmentResult",
    "SegserveError",
    "__version__",
    "expand_inputs",
    "parse_server_timing",
    "png_to_class_map",
    "png_to_id_map",
    "polygons_to_mask",
    "rle_counts",
    "rle_to_mask",
]
