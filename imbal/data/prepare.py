"""From a data config to the three splits a run uses: imbalance applied once, validation held out.

Order: open the source (labels) -> optional subset (smoke runs), then read only the images kept
-> imbalance on the training split -> stratified validation split taken from the imbalanced
training set. Every random choice uses one generator seeded by the data seed, so which images
are kept never depends on the training seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imbal.data.imbalance import (
    imbalance_params,
    minority_classes,
    split_from_removed,
    stratified_split,
    subsample,
    subset_indices,
    target_counts,
)
from imbal.data.sources import Split, open_source, same_shape, take
from imbal.errors import UserError


@dataclass
class Prepared:
    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split
    pool: Split  # the training images the imbalance chose from (the source's, after any subset)
    removed_idx: torch.Tensor  # which of them it removed (less any taken for validation)
    minority: list[int]
    val_from_kept: list[int] | None = None  # val_from removed: per class, taken from the kept
    per_batch: bool = False  # imbalance.apply per_batch: not applied here, the loop masks batches
    rest_idx: torch.Tensor | None = None  # data.labelled_per_class: the pool's unlabelled rest

    @property
    def rest(self) -> Split:
        """With data.labelled_per_class: the training images not drawn as labels (the
        `unlabelled: rest` stream); empty without it."""
        idx = self.rest_idx if self.rest_idx is not None else torch.zeros(0, dtype=torch.long)
        return _take(self.pool, idx)

    @property
    def removed(self) -> Split:
        """Training images the imbalance removed (unlabelled use by pretext tasks); copied only
        when asked for."""
        return _take(self.pool, self.removed_idx)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]

    def counts(self) -> dict:
        def per_class(s: Split) -> list[int]:
            return torch.bincount(s.targets, minlength=self.num_classes).tolist()

        out = {"classes": self.classes, "train": per_class(self.train), "val": per_class(self.val),
               "test": per_class(self.test),
               "removed": _bincount(self.pool.targets[self.removed_idx], self.num_classes),
               "minority_classes": self.minority}
        if self.rest_idx is not None:  # data.labelled_per_class: the unlabelled rest
            out["unlabelled_rest"] = _bincount(self.pool.targets[self.rest_idx], self.num_classes)
        if self.val_from_kept is not None:  # validation from the removed images
            out["val_from_kept"] = self.val_from_kept
        if self.per_batch:
            out["imbalance_applied"] = "per_batch"
        return out


def _take(split: Split, idx: torch.Tensor) -> Split:
    return Split(images=split.images[idx], targets=split.targets[idx])


def _bincount(targets: torch.Tensor, c: int) -> list[int]:
    return torch.bincount(targets, minlength=c).tolist()


def prepare_data(data: dict, *, data_seed: int, minority_override: list[int] | None = None) -> Prepared:
    """`data` is the config's data section (a plain dict)."""
    name, size = data["source"], data["image_size"]
    ds = open_source(name, root=data["root"], download=data["download"], image_size=size)
    c = len(ds.classes)
    gen = torch.Generator().manual_seed(data_seed)
    # The subset is chosen from the labels alone, so a source that decodes per file (LazySplit)
    # reads only the images kept; the generator is drawn in the same order as ever.
    sub = data["subset"]
    train_idx = test_idx = None
    if sub["per_class"] is not None or sub["total"] is not None:
        train_idx = subset_indices(ds.train.targets, per_class=sub["per_class"],
                                   total=sub["total"], generator=gen)
    if sub["test_per_class"] is not None:
        test_idx = subset_indices(ds.test.targets, per_class=sub["test_per_class"], total=None,
                                  generator=gen)
    train, test = take(name, ds.train, train_idx, size), take(name, ds.test, test_idx, size)
    same_shape(name, train, test)
    imb = data["imbalance"]
    params = imbalance_params(imb)
    counts = target_counts(imb["kind"], _bincount(train.targets, c), class_names=ds.classes,
                           generator=gen, **params)  # gen: a kind that draws its counts (random)
    per_batch = imb.get("apply", "once") == "per_batch"
    if per_batch:  # S3's way: the data set stays whole, the training loop masks batches
        counts = _bincount(train.targets, c)
    kept = subsample(train.targets, counts, gen)
    mask = torch.ones(train.targets.numel(), dtype=torch.bool)
    mask[kept] = False
    from_kept = None
    if data.get("val_from", "kept") == "removed":
        tr, val, from_kept = split_from_removed(train.targets, kept, mask.nonzero().flatten(),
                                                data["val_per_class"], gen, class_names=ds.classes)
        mask[val] = False  # validation images are no longer in the removed pool
    else:
        tr_idx, val_idx = stratified_split(train.targets[kept], data["val_fraction"], gen,
                                           class_names=ds.classes)
        tr, val = kept[tr_idx], kept[val_idx]
    rest_idx = None
    if data.get("labelled_per_class") is not None:
        tr, rest_idx = labelled_subset(train.targets, tr, data["labelled_per_class"], gen, ds.classes)
    minority = (sorted(minority_override) if minority_override is not None
                else minority_classes(imb["kind"], params, counts))
    # One copy per split, straight from the pool (indices composed, no intermediate copies).
    return Prepared(name=ds.name, classes=list(ds.classes), train=_take(train, tr),
                    val=_take(train, val), test=test, pool=train,
                    removed_idx=mask.nonzero().flatten(), minority=minority,
                    val_from_kept=from_kept, per_batch=per_batch,
                    rest_idx=rest_idx)


def labelled_subset(targets: torch.Tensor, train_idx: torch.Tensor, per_class: int,
                    gen: torch.Generator, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(labelled, rest): `per_class` images of every class drawn with the data generator from
    the (imbalanced, validation held out) training images `train_idx` (pool indices); the rest
    of them are the unlabelled stream `unlabelled: rest`. Drawn after everything else, so the
    other splits are those of the same config without labels."""
    sizes = _bincount(targets[train_idx], len(classes))
    short = [(c, n) for c, n in enumerate(sizes) if n < per_class]
    if short:
        c, n = short[0]
        raise UserError(f"data.labelled_per_class {per_class}: class '{classes[c]}' has only {n} "
                        f"training images (after the imbalance and the validation split)")
    pick = subsample(targets[train_idx], [per_class] * len(classes), gen)
    rest = torch.ones(train_idx.numel(), dtype=torch.bool)
    rest[pick] = False
    return train_idx[pick], train_idx[rest]
