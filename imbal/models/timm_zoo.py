"""`timm/<name>`: any timm model (`timm.list_models()`, a pretrained tag allowed, e.g.
timm/resnet10t.c3_in1k), built with timm.create_model(num_classes=0, in_chans=<data channels>)
so it ends at the pooled features and imbal's head takes num_classes. timm is optional:
`pip install 'imbal[timm]'`.

Params: dropout (before the head), kwargs (more create_model arguments, e.g. {img_size: 32}
for a ViT, {drop_path_rate: 0.1}). model.pretrained:
- imagenet: the model's pretrained_cfg weights, from the Hugging Face cache (hf_hub_id) or
  torch.hub's (TORCH_HOME/hub/checkpoints/<file of its url>); never downloaded here;
- a path: a weights file for that model (.pth/.bin/.safetensors), loaded by timm
  (pretrained_cfg_overlay file=...), which drops the classifier and adapts the first conv to
  grey images.
With weights, inputs are normalised with pretrained_cfg's mean/std and resized on the device to
its input_size, or to model.image_size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from imbal.errors import UserError
from imbal.models.base import MODELS
from imbal.models.zoo import hub_checkpoint, make_features, user_file
from imbal.registry import did_you_mean

PREFIX = "timm/"


def _timm():
    try:
        import timm
    except ImportError:
        raise UserError("the timm/<name> backbones need timm: pip install 'imbal[timm]'") from None
    return timm


def _hf_cache() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return "HF_HUB_CACHE"
    return constants.HF_HUB_CACHE


def _cached_hf(repo: str, filename: str | None) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for fn in [filename] if filename else ["model.safetensors", "pytorch_model.bin"]:
        found = try_to_load_from_cache(repo, fn)
        if isinstance(found, str):
            return Path(found)
    return None


def locate_weights(name: str, pretrained: str) -> Path:
    """The weights file; a one-line refusal (naming where the file belongs) when it is absent."""
    if pretrained != "imagenet":
        return user_file(pretrained)
    cfg = _timm().models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.file or cfg.hf_hub_id or cfg.url):
        raise UserError(f"timm has no pretrained weights for {name}; give model.pretrained a file")
    if cfg.file and Path(cfg.file).is_file():
        return Path(cfg.file)
    found = _cached_hf(cfg.hf_hub_id, cfg.hf_hub_filename) if cfg.hf_hub_id else None
    if found is None and cfg.url and hub_checkpoint(cfg.url).is_file():
        found = hub_checkpoint(cfg.url)
    if found is None:
        where = (f"put {hub_checkpoint(cfg.url).name} (from {cfg.url}) in "
                 f"{hub_checkpoint(cfg.url).parent}" if cfg.url else
                 f"fetch https://huggingface.co/{cfg.hf_hub_id} into the Hugging Face cache "
                 f"{_hf_cache()} (hf download {cfg.hf_hub_id})")
        raise UserError(f"ImageNet weights for {PREFIX}{name} are not on this machine: {where}, "
                        f"or set model.pretrained to the weights file")
    return found


def resolve(name: str):
    """The builder of timm/<name>; a missing timm or an unknown name is refused in one line."""
    timm = _timm()
    if not timm.is_model(name):
        arch = name.split(".")[0]
        hint = did_you_mean(arch, timm.list_models(f"{arch[:3]}*")) if arch else ""
        raise UserError(f"unknown timm model '{name}'{hint}; the names are timm.list_models()")

    def build(*, in_channels: int, image_size: int, pretrained: str | None = None,
              resize_to: int | None = None, dropout: float = 0.0,
              kwargs: dict[str, Any] | None = None) -> nn.Module:
        args: dict[str, Any] = {"num_classes": 0, "in_chans": in_channels, **(kwargs or {})}
        if pretrained is not None:
            args.update(pretrained=True,
                        pretrained_cfg_overlay={"file": str(locate_weights(name, pretrained))})
        try:
            net = timm.create_model(name, **args)
        except (TypeError, RuntimeError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"{PREFIX}{name}: {first[:200]}") from None
        stats = None
        if pretrained is not None:
            cfg = net.pretrained_cfg
            stats = (cfg["mean"], cfg["std"])
            resize_to = resize_to or cfg["input_size"][-1]
        dim = getattr(net, "head_hidden_size", None) or net.num_features
        return make_features(net, int(dim), resize_to=resize_to, input_stats=stats,
                             in_channels=in_channels, dropout=dropout)

    build.takes_zoo_args = True
    build.locate_weights = lambda pretrained: locate_weights(name, pretrained)
    return build


MODELS.register_family(PREFIX, resolve)
