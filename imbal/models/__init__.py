"""Backbones: `build_model(name, ...)` -> Classifier with .features, .head, .feature_dim.

Importing this package registers every backbone (small.py: lenet, small_cnn; resnet.py: resnet32,
resnet18/34/50, resnext18/50).
"""

from imbal.models import resnet, small  # noqa: F401  (registers the backbones)
from imbal.models.base import MODELS, Classifier, NormedLinear, backbone_params, build_model

__all__ = ["MODELS", "Classifier", "NormedLinear", "backbone_params", "build_model"]
