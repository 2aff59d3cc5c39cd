"""Training datasets: read, check (every problem at once) and describe images and labels."""

from app.training.datasets.images import TRAINING_LIMITS, read_image, read_mask
from app.training.datasets.loader import load_dataset, split_train_val
from app.training.datasets.masks import IGNORE_INDEX
from app.training.datasets.rasterize import instance_masks
from app.training.datasets.samples import (
    Dataset,
    DatasetError,
    InstanceAnnotation,
    InstanceSample,
    Problem,
    Sample,
    SemanticSample,
)

__all__ = [
    "IGNORE_INDEX",
    "TRAINING_LIMITS",
    "Dataset",
    "DatasetError",
    "InstanceAnnotation",
    "InstanceSample",
    "Problem",
    "Sample",
    "SemanticSample",
    "instance_masks",
    "load_dataset",
    "read_image",
    "read_mask",
    "split_train_val",
]
