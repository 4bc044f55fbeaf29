"""Per-sample image operations of AutoAugment and RandAugment, on kornia's batched functions.

Every op is `fn(x, m) -> x`: x float N×C×H×W pixel values in [0, 1] (not normalised), m a
float tensor (N,) with each image's own magnitude, already in the op's units (below); the
result stays in [0, 1]. kornia's functions take a magnitude per image, so a whole group of
images is transformed in one call (torchvision's functional ops take one scalar per call).
The photometric ops follow PIL's ImageEnhance/ImageOps definitions, as the AutoAugment paper
and torchvision do (the tests compare them with torchvision.transforms.v2.functional):

    brightness  x * f                       f = 1 + m
    color       blend with the grayscale    f = 1 + m   (1-channel images: unchanged)
    contrast    blend with the grayscale mean            f = 1 + m
    sharpness   blend with a 3×3 smoothed copy (borders kept)   f = 1 + m
    posterize   keep the top m bits of each 8-bit value
    solarize    invert the values >= m
    autocontrast  each channel stretched to [0, 1] (a flat channel is kept)
    equalize    histogram equalisation per channel (8-bit levels)
    invert      1 - x
    rotate      m degrees; shear_x / shear_y: shear factor m; translate_x / translate_y: m pixels
                (nearest neighbour, zero fill as torchvision's default, i.e. black pixels)

MAGNITUDES maps an op to its magnitude at bin b of `bins` (torchvision's augmentation space:
linear from 0 to the op's maximum; posterize 8 -> 4 bits; solarize 1.0 -> 0.0) and whether
its sign is drawn at random (SIGNED).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def kornia_module():
    """kornia, imported on first use (keeps `import imbal.remedies` light for runs without)."""
    import kornia

    return kornia


PixelOp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _color(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    return kornia_module().enhance.adjust_saturation_with_gray_subtraction(x, 1.0 + m).clamp(0, 1)


def _autocontrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, 1.0, 1.0 / (hi - lo).clamp_min(1e-12))
    return ((x - torch.where(flat, 0.0, lo)) * scale).clamp(0, 1)


def _equalize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return kornia_module().enhance.equalize(x).clamp(0, 1)


def _posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return kornia_module().enhance.posterize(x, m.round().to(torch.int64))


def _solarize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= m.view(-1, 1, 1, 1), 1.0 - x, x)


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return kornia_module().enhance.sharpness(x, 1.0 + m).clamp(0, 1)


def _shear(axis: int) -> PixelOp:
    def op(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        s = torch.zeros(x.shape[0], 2, device=x.device, dtype=x.dtype)
        s[:, axis] = m
        return kornia_module().geometry.transform.shear(x, s, mode="nearest", align_corners=False)

    return op


def _translate(axis: int) -> PixelOp:
    def op(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        t = torch.zeros(x.shape[0], 2, device=x.device, dtype=x.dtype)
        t[:, axis] = m
        return kornia_module().geometry.transform.translate(x, t, mode="nearest", align_corners=False)

    return op


def _rotate(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return kornia_module().geometry.transform.rotate(x, m.to(x.dtype), mode="nearest", align_corners=False)


OPS: dict[str, PixelOp] = {
    "identity": lambda x, m: x,
    "brightness": lambda x, m: kornia_module().enhance.adjust_brightness_accumulative(x, 1.0 + m),
    "color": _color,
    "contrast": lambda x, m: kornia_module().enhance.adjust_contrast_with_mean_subtraction(x, 1.0 + m),
    "sharpness": _sharpness,
    "posterize": _posterize,
    "solarize": _solarize,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "invert": lambda x, m: kornia_module().enhance.invert(x),
    "rotate": _rotate,
    "shear_x": _shear(0),
    "shear_y": _shear(1),
    "translate_x": _translate(0),
    "translate_y": _translate(1),
}

SIGNED = {"brightness", "color", "contrast", "sharpness", "rotate", "shear_x", "shear_y",
          "translate_x", "translate_y"}


def magnitude(op: str, b: int, bins: int, size: int) -> float:
    """The op's magnitude at bin b of `bins` (torchvision's augmentation space), for images of
    `size` pixels (translations: up to 150/331 of the image, as the paper's 150 of 331)."""
    t = b / (bins - 1) if bins > 1 else 0.0
    top = {"brightness": 0.9, "color": 0.9, "contrast": 0.9, "sharpness": 0.9, "rotate": 30.0,
           "shear_x": 0.3, "shear_y": 0.3, "translate_x": 150.0 / 331.0 * size,
           "translate_y": 150.0 / 331.0 * size}
    if op in top:
        return top[op] * t
    if op == "posterize":
        return float(8 - int(round(b / ((bins - 1) / 4)))) if bins > 1 else 8.0
    if op == "solarize":
        return 1.0 - t
    return 0.0  # identity, autocontrast, equalize, invert: no magnitude


# AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, appendix; the table torchvision ships):
# 25 sub-policies of two (op, probability, magnitude bin of 10).
CIFAR10_POLICY: list[tuple[tuple[str, float, int], tuple[str, float, int]]] = [
    (("invert", 0.1, 0), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.5, 0), ("equalize", 0.9, 0)),
    (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 0), ("equalize", 0.5, 0)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translate_x", 0.5, 8)),
    (("equalize", 0.3, 0), ("autocontrast", 0.4, 0)),
    (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 0)),
    (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 0), ("equalize", 0.6, 0)),
    (("color", 0.9, 9), ("equalize", 0.6, 0)),
    (("autocontrast", 0.8, 0), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 0)),
    (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.9, 0), ("solarize", 0.8, 3)),
    (("equalize", 0.8, 0), ("invert", 0.1, 0)),
    (("translate_y", 0.7, 9), ("autocontrast", 0.9, 0)),
]

# RandAugment's ops (Cubuk et al. 2020, as torchvision: no invert), drawn uniformly.
RANDAUGMENT_OPS = ["identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate",
                   "brightness", "color", "contrast", "sharpness", "posterize", "solarize",
                   "autocontrast", "equalize"]


def apply_per_sample(x: torch.Tensor, names: list[str], op_idx: torch.Tensor,
                     mags: torch.Tensor) -> torch.Tensor:
    """Image i gets op names[op_idx[i]] with magnitude mags[i]; op_idx -1: untouched.

    Each op runs once, on the images that drew it (a boolean mask turned into indices: one
    host sync per op present in the batch)."""
    out = x.clone()
    present = torch.unique(op_idx).tolist()
    for k in present:
        if k < 0 or names[k] == "identity":
            continue
        idx = torch.nonzero(op_idx == k).squeeze(1)
        out[idx] = OPS[names[k]](x[idx], mags[idx])
    return out
