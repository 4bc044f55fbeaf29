"""SGD, Adam and AdamW with torch.optim's update rules, and an epoch-wise lr schedule.

Why not torch.optim: building a torch.optim.Optimizer, and each of its steps, imports
torch._dynamo (torch.compile's front end) only to mark those methods as not to be traced: ~1.5 s
on the 2-core benchmark machine, a third of a short run's start-up. imbal never traces the
optimizer (`train.compile` compiles the model's forward only), so it keeps its own.

The updates are torch.optim's multi-tensor ("foreach") ones, op for op: tests compare parameters
and state with torch.optim's after many steps and find identical tensors. state_dict() has
torch.optim's layout (state by parameter index, hyper-parameters per group), so a checkpoint
holds the same thing whichever wrote it. Parameters without a gradient are skipped, as in torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class Optimizer:
    """param_groups / state / zero_grad / step / state_dict as torch.optim has them, which is
    all torch.amp.GradScaler and clip_grad_norm_ use. Subclasses define `_update`."""

    defaults: dict[str, Any]

    def __init__(self, params: Iterable, defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[torch.Tensor, dict[str, Any]] = {}
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        self.param_groups.append({**self.defaults, **group, "params": list(group["params"])})

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params, [p.grad for p in params])

    def _update(self, group: dict[str, Any], params: list[torch.Tensor],
                grads: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: dict(s) for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["param_groups"]
        sizes = [len(g["params"]) for g in self.param_groups]
        if [len(g["params"]) for g in saved] != sizes:
            raise ValueError("loaded optimizer state has a different number of parameters per "
                             f"group ({[len(g['params']) for g in saved]}) than this one ({sizes})")
        by_index = {}
        for group, old in zip(self.param_groups, saved, strict=True):
            group.update({k: v for k, v in old.items() if k != "params"})
            by_index.update(zip(old["params"], group["params"], strict=True))
        self.state = {}
        for i, s in state_dict["state"].items():
            p = by_index[int(i)]
            self.state[p] = {k: _to_param(v, p, k) for k, v in s.items()}


def _to_param(value: Any, p: torch.Tensor, key: str) -> Any:
    """A copy of a state tensor (never shared with the dict it came from) on the parameter's
    device and, if floating, in its dtype; "step" stays a CPU tensor."""
    if not isinstance(value, torch.Tensor):
        return value
    if key == "step":
        return value.to("cpu", copy=True)
    dtype = p.dtype if value.is_floating_point() else value.dtype
    return value.to(device=p.device, dtype=dtype, copy=True)


class SGD(Optimizer):
    def __init__(self, params: Iterable, *, lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening 0")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    def _update(self, group, params, grads):
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if momentum != 0:
            states = [self.state.setdefault(p, {}) for p in params]
            bufs = [s.get("momentum_buffer") for s in states]
            if all(b is not None for b in bufs):
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
            else:  # first step: the buffer starts as the gradient itself
                for i, (s, g) in enumerate(zip(states, grads, strict=True)):
                    if bufs[i] is None:
                        bufs[i] = s["momentum_buffer"] = g.detach().clone()
                    else:
                        bufs[i].mul_(momentum).add_(g, alpha=1 - group["dampening"])
            grads = torch._foreach_add(grads, bufs, alpha=momentum) if group["nesterov"] else bufs
        torch._foreach_add_(params, grads, alpha=-lr)


class Adam(Optimizer):
    """Adam; with decoupled=True, AdamW (weight decay shrinks the weights, not the gradient)."""

    def __init__(self, params: Iterable, *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "decoupled_weight_decay": decoupled})

    def _update(self, group, params, grads):
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        states = []
        for p in params:
            s = self.state.setdefault(p, {})
            if not s:
                s["step"] = torch.tensor(0.0)
                s["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                s["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            states.append(s)
        steps = [s["step"] for s in states]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        torch._foreach_add_(steps, 1.0)
        if wd != 0:
            if group["decoupled_weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                grads = torch._foreach_add(grads, params, alpha=wd)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        counts = [s.item() for s in steps]  # CPU tensors: no device sync
        step_size = [(lr / (1 - beta1 ** n)) * -1 for n in counts]
        bias2_sqrt = [(1 - beta2 ** n) ** 0.5 for n in counts]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


class EpochSchedule:
    """lr of each group = its initial lr × fn(epoch); `step()` once per epoch. Like torch's
    LambdaLR (whose state_dict it also loads), the state is just the epoch counter."""

    def __init__(self, optimizer: Optimizer, fn: Callable[[int], float]):
        self.optimizer, self.fn = optimizer, fn
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        factor = self.fn(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = list(state_dict.get("base_lrs", self.base_lrs))
        self._apply()
