"""The models behind the service: how each torchvision family is loaded and run.

``protocol`` says what serving needs of a predictor; ``loading`` builds one from the model
repository (``repository``) and its weights (``weights``); ``base``, ``semantic`` and
``instance`` run them.
"""

from __future__ import annotations

from app.predictors.base import TorchPredictor
from app.predictors.instance import MAX_INSTANCES, InstanceParams, InstancePredictor
from app.predictors.loading import load_predictor
from app.predictors.protocol import Predictor
from app.predictors.repository import load_repository
from app.predictors.semantic import SemanticPredictor

__all__ = [
    "MAX_INSTANCES",
    "InstanceParams",
    "InstancePredictor",
    "Predictor",
    "SemanticPredictor",
    "TorchPredictor",
    "load_predictor",
    "load_repository",
]
