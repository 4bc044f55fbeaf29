#!/usr/bin/env bash
# Study S4 (shared/STUDIES.md): ResNet-34 on CIFAR-10 where each class keeps 500-1000 random
# images (data seed); the tricks one at a time on top of the plain baseline (GroupNorm, crop+flip,
# cutout, gridmask, AutoAugment, RandAugment, mixup, CutMix, gradient clipping, weight decay,
# dropout, LR decay), all combined, and each of 'plain' and 'combined' with the class-balanced
# sampler (S4: 26% -> 46%). Report: runs/s4/report.md (differences vs 'plain').
# Options: see scripts/study_lib.sh.
#   scripts/study_s4.sh                       # GPU: 16 rows x 3 seeds, 100 epochs each
#   scripts/study_s4.sh --quick --workers 2   # CPU: ResNet-32, 1 epoch, 50-100 images a class
#     (SEEDS_TRAIN=0: 16 runs in 15 min 45 s on a shared 2-core CPU at load ~10; 1 epoch
#     leaves every row near chance: it checks the pipeline, not the tricks)
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
study_parse s4 "$@"
# --quick: a small backbone (resnet32 takes the same norm/dropout params), a subset of 100
# training images a class of which each keeps 50-100, 50 test images a class, one epoch.
study_quick train.epochs=1 model.backbone=resnet32 data.subset.per_class=100 \
    data.subset.test_per_class=50 data.imbalance.low=50 data.imbalance.high=100

BT=train.batch_transforms
COMBINED="data.augment: {crop_padding: 4, hflip: true}, model.params.dropout: 0.3, \
$BT: [{name: autoaugment}, {name: cutout, size: 16}], train.grad_clip: 5.0, \
train.optimizer.weight_decay: 0.0005, train.schedule.name: cosine"
cat >"$SWEEP_FILE" <<YAML
name: s4
base: $REPO/configs/s4_cifar_resnet34.yaml
seeds: {train: [$SEEDS_TRAIN], data: [$SEEDS_DATA]}
runs:
  - {name: plain, set: {remedy: []}}
  - {name: sampler, set: {remedy: [oversample]}}
  - {name: groupnorm, set: {model.params.norm: group}}
  - {name: crop+flip, set: {data.augment: {crop_padding: 4, hflip: true}}}
  - {name: cutout, set: {$BT: [{name: cutout, size: 16}]}}
  - {name: gridmask, set: {$BT: [{name: gridmask, d_min: 8, d_max: 16, ratio: 0.5}]}}
  - {name: autoaugment, set: {$BT: [{name: autoaugment, policy: cifar10}]}}
  - {name: randaugment, set: {$BT: [{name: randaugment, n: 2, m: 9}]}}
  - {name: mixup, set: {$BT: [{name: mixup, alpha: 1.0}]}}
  - {name: cutmix, set: {$BT: [{name: cutmix, alpha: 1.0}]}}
  - {name: grad_clip, set: {train.grad_clip: 5.0}}
  - {name: weight_decay, set: {train.optimizer.weight_decay: 0.0005}}
  - {name: dropout, set: {model.params.dropout: 0.3}}
  - {name: lr_decay, set: {train.schedule.name: cosine}}
  - {name: combined, set: {$COMBINED}}
  - {name: combined+sampler, set: {$COMBINED, remedy: [oversample]}}
  # --- MixMatch rows (250 labels; added by the MixMatch work, not here) -----------------------
  # - {name: mixmatch, set: {...}}
  # --- end of MixMatch rows -----------------------------------------------------------------
YAML
study_run plain
