"""Backbone registry, the Classifier (features + head) and build_model.

A backbone builder is registered in MODELS as a function with keyword-only arguments
`(*, in_channels, image_size, <params with defaults>) -> nn.Module`; the module maps a float
N×C×H×W batch to N×feature_dim (flattening included) and carries an int `.feature_dim`.
Its keyword parameters (other than in_channels and image_size) are the params a config may set;
build_model reads them from the signature, so an unknown param is refused with the valid list.
Inputs arrive normalised, at the data's size (wrap the features in MinSize(n) for a minimum).
Mix points (manifold mixup's hook): the module may carry `mix_points`, a tuple of names of
its submodules (as in named_modules) whose outputs are hidden representations N×... that may be
mixed between the images of a batch, shallow to deep; `mix_modules(features)` resolves them.
Every built-in backbone lists its own; a backbone without them refuses manifold mixup.
A plugin registers the same way: `from imbal import MODELS; @MODELS.register("name")`.

HEADS maps a head name (a remedy's ctx.head: "linear", "normed") to
`cls(in_features, out_features) -> nn.Module` (features N×feature_dim -> logits N×classes).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imbal.errors import UserError
from imbal.registry import Registry

MODELS = Registry("backbone")
HEADS = Registry("head")

# Arguments that build_model passes itself; everything else in a builder's signature is a param.
# pretrained and resize_to (model.pretrained, model.image_size) go only to the zoo builders
# (imbal/models/zoo.py), and only when set.
_FIXED_ARGS = ("in_channels", "image_size", "pretrained", "resize_to")


def choose(kind: str, name: Any, table: dict[str, Any]) -> Any:
    """Look `name` up in a small table of options (activation, norm), refusing unknown ones."""
    if not isinstance(name, str) or name not in table:
        raise UserError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(table))}")
    return table[name]


def check_probability(name: str, value: Any) -> float:
    """A dropout-like rate in [0, 1); ints from YAML (0) are accepted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise UserError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


class MinSize(nn.Module):
    """Bilinearly upsample inputs smaller than `size` (e.g. 8×8 digits, 16×16 jigsaw tiles).

    Done inside the model so it runs on the device with the batch; inputs already large
    enough pass through untouched. The check reads shapes only (no device sync).
    """

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h >= self.size and w >= self.size:
            return x
        target = (max(h, self.size), max(w, self.size))
        return F.interpolate(x, size=target, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


@torch.no_grad()
def flat_size(modules: list[nn.Module], in_channels: int, image_size: int) -> int:
    """Per-sample numel after running a dummy image through `modules` (for fc input sizes).

    Modules are switched to eval for the pass so BatchNorm running statistics stay untouched.
    """
    x = torch.zeros(1, in_channels, image_size, image_size)
    for m in modules:
        was_training = m.training
        m.eval()
        x = m(x)
        m.train(was_training)
    return x[0].numel()


class NormedLinear(nn.Module):
    """Cosine classifier: output_j = cos(features, w_j), in [-1, 1]; no bias (LDAM's head).

    Computed in float32 with autocast off: normalising half-precision vectors loses the eps
    guard (1e-12 underflows in float16) and the margin losses scale cosines by ~30.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Only the direction of each row matters; uniform init as in the LDAM reference code.
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), dim=1)
            w = F.normalize(self.weight.float(), dim=1)
            return F.linear(x, w)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias=False"


HEADS.register("linear")(nn.Linear)
HEADS.register("normed")(NormedLinear)


class Classifier(nn.Module):
    """features (N×C×H×W -> N×feature_dim) followed by head (feature_dim -> num_classes)."""

    def __init__(self, features: nn.Module, head: nn.Module, feature_dim: int):
        super().__init__()
        self.features = features
        self.head = head
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def mix_modules(features: nn.Module, who: str = "manifold_mixup") -> list[nn.Module]:
    """The submodules named by the backbone's `mix_points` (module docstring), shallow to deep."""
    names = getattr(features, "mix_points", None)
    if not names:
        raise UserError(f"{who}: backbone {type(features).__name__} lists no mix_points (the "
                        f"hidden layers where it may mix); use mixup, or add mix_points to it")
    found = dict(features.named_modules())
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"{type(features).__name__}.mix_points names no submodule {missing[0]!r}")
    return [found[n] for n in names]


def backbone_params(name: str) -> dict[str, Any]:
    """The settable params of a backbone and their defaults."""
    sig = inspect.signature(MODELS.get(name))
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _FIXED_ARGS
    }


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    head: str = "linear",
    pretrained: str | None = None,
    resize_to: int | None = None,
    **params: Any,
) -> Classifier:
    """Build backbone `name` with a `head` ("linear" | "normed") for `num_classes` outputs;
    pretrained / resize_to: see imbal/models/zoo.py (checked there, before any work)."""
    builder = MODELS.get(name)
    make_head = HEADS.get(head)
    valid = backbone_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listed = ", ".join(sorted(valid)) or "none"
        raise UserError(
            f"unknown param(s) {', '.join(unknown)} for backbone '{name}'; valid: {listed}"
        )
    zoo = {k: v for k, v in (("pretrained", pretrained), ("resize_to", resize_to)) if v is not None}
    if zoo and not getattr(builder, "takes_zoo_args", False):
        raise UserError(f"backbone '{name}' takes no {' or '.join(sorted(zoo))} (only the "
                        f"torchvision/<name> and timm/<name> backbones do)")
    features = builder(
        in_channels=_check_count("in_channels", in_channels),
        image_size=_check_count("image_size", image_size),
        **zoo,
        **params,
    )
    feature_dim = int(features.feature_dim)
    return Classifier(
        features, make_head(feature_dim, _check_count("num_classes", num_classes)), feature_dim
    )
