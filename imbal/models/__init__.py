"""Backbones: `build_model(name, ...)` -> Classifier with .features, .head, .feature_dim.

Importing this package registers every backbone (small.py: lenet, small_cnn; resnet.py: resnet32,
resnet18/34/50, resnext18/50) and the model-zoo families torchvision/<name>
(torchvision_zoo.py) and timm/<name> (timm_zoo.py; timm itself is imported only when used).
"""

from imbal.models import resnet, small, timm_zoo, torchvision_zoo  # noqa: F401  (registers them)
from imbal.models.base import MODELS, Classifier, NormedLinear, backbone_params, build_model
from imbal.models.zoo import check_model

__all__ = ["MODELS", "Classifier", "NormedLinear", "backbone_params", "build_model", "check_model"]
