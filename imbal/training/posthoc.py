"""Post-hoc adjustments of a trained run's classifier, chosen on validation (`imbal eval`).

POSTHOC is a registry of adjustments. Each is a class with a `flag` (the eval option), a
default grid of its parameter, and `logits(feats, tau) -> N×C`: the classifier's logits from
the backbone's features under parameter tau. `sweep` computes the features of the validation and
test splits once, scores every tau of the grid on validation (eval.select: balanced_acc or
top1; ties: the smallest tau), and reports the chosen tau's test figures:

- logit_adjust (Menon et al. 2021, post-hoc form): logits - tau * log prior, the prior being
  the training counts of the run's chosen stage; grid 0, 0.25, ..., 2.
- tau_norm (Kang et al. 2020): each classifier row rescaled, w_c / ||w_c||^tau (the bias kept),
  on a linear head (an LWS head keeps its scales); grid 0, 0.1, ..., 2.

The run's own evaluation offset (logit_adjust's posthoc mode) is part of the logits adjusted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imbal.errors import UserError
from imbal.metrics import confusion_update, summarize
from imbal.registry import Registry
from imbal.remedies.weights import log_prior

POSTHOC = Registry("post-hoc adjustment")


def _grid(stop: float, step: float) -> list[float]:
    return [round(i * step, 6) for i in range(int(round(stop / step)) + 1)]


def linear_head(head: nn.Module) -> tuple[nn.Linear, torch.Tensor | None]:
    """(the linear layer, the per-class scales of an LWS head or None)."""
    if isinstance(head, nn.Linear):
        return head, None
    inner = getattr(head, "inner", None)
    if isinstance(inner, nn.Linear):
        return inner, head.scale
    raise UserError(f"tau-normalisation needs a linear classifier head; this run's is "
                    f"{type(head).__name__}")


@POSTHOC.register("logit_adjust")
class LogitAdjustPosthoc:
    flag, grid = "--logit-adjust", _grid(2.0, 0.25)

    def __init__(self, setup):
        self.head, self.offset = setup.trainer.model.head, setup.trainer.eval_offset
        counts = setup.plans[setup.selection.index].class_counts
        self.prior = log_prior(torch.tensor(counts, device=setup.device))

    def logits(self, feats: torch.Tensor, tau: float) -> torch.Tensor:
        z = self.head(feats).float()
        z = z if self.offset is None else z + self.offset
        return z - tau * self.prior


@POSTHOC.register("tau_norm")
class TauNorm:
    flag, grid = "--tau-norm", _grid(2.0, 0.1)

    def __init__(self, setup):
        self.linear, self.scale = linear_head(setup.trainer.model.head)
        self.offset = setup.trainer.eval_offset

    def logits(self, feats: torch.Tensor, tau: float) -> torch.Tensor:
        w = self.linear.weight.float()
        w = w / w.norm(dim=1, keepdim=True).pow(tau)
        b = None if self.linear.bias is None else self.linear.bias.float()
        z = F.linear(feats.float(), w, b)
        z = z if self.scale is None else z * self.scale.float()
        return z if self.offset is None else z + self.offset


@torch.inference_mode()
def features(trainer, images: torch.Tensor) -> torch.Tensor:
    trainer.model.eval()
    out = []
    for start in range(0, images.shape[0], trainer.eval_batch_size):
        x = trainer.prepare(images[start:start + trainer.eval_batch_size], train=False)
        with trainer.autocast():
            out.append(trainer.model.features(x).float())
    return torch.cat(out) if out else torch.zeros(0)


def _metrics(z: torch.Tensor, y: torch.Tensor, setup) -> dict:
    c = setup.data.num_classes
    conf = torch.zeros(c, c, dtype=torch.long, device=z.device)
    confusion_update(conf, z.argmax(1), y)
    return summarize(conf.cpu().numpy(), setup.groups)


@torch.inference_mode()
def sweep(name: str, setup, taus: list[float] | None) -> dict:
    """Score adjustment `name` on validation over `taus` (None: its grid), pick the best, and
    give its test figures (see the module docstring)."""
    adj = POSTHOC.get(name)(setup)
    grid = list(adj.grid if taus is None else taus)
    data, select = setup.data, setup.cfg["eval"]["select"]
    has_val = data.val.targets.numel() > 0
    if len(grid) > 1 and not has_val:
        raise UserError(f"{adj.flag}: choosing tau needs a validation split (data.val_fraction "
                        f"> 0); give one value instead, e.g. {adj.flag} 1.0")
    val_scores = []
    if has_val:
        fv = features(setup.trainer, data.val.images)
        val_scores = [_metrics(adj.logits(fv, t), data.val.targets, setup)[select] for t in grid]
    best = max(range(len(grid)), key=lambda i: (val_scores[i], -i)) if has_val else 0
    ft = features(setup.trainer, data.test.images)
    test = _metrics(adj.logits(ft, grid[best]), data.test.targets, setup)
    return {"grid": grid, f"val_{select}": val_scores or None, "tau": grid[best], "test": test}
