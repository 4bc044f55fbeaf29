#!/usr/bin/env bash
# Study S4 (shared/STUDIES.md): ResNet-34 on CIFAR-10 where each class keeps 500-1000 random
# images (data seed); the tricks one at a time on top of the plain baseline (GroupNorm, crop+flip,
# cutout, gridmask, AutoAugment, RandAugment, mixup, CutMix, gradient clipping, weight decay,
# dropout, LR decay), all combined, and each of 'plain' and 'combined' with the class-balanced
# sampler (S4: 26% -> 46%). Report: runs/s4/report.md (differences vs 'plain'). Then S4's
# partial labels, MixMatch on 250 labels vs the labels alone: scripts/study_s4_mixmatch.sh with
# the same options, into OUT_mixmatch (runs/s4_mixmatch/report.md; --no-mixmatch skips it).
# Options: see scripts/study_lib.sh.
#   scripts/study_s4.sh                       # GPU: 16 rows x 3 seeds, 100 epochs each
#   scripts/study_s4.sh --quick --workers 2   # CPU: ResNet-32, 4 epochs, 75-150 images a class
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
MIXMATCH=1
PASS=()
for a in "$@"; do
    if [[ "$a" == --no-mixmatch ]]; then MIXMATCH=0; else PASS+=("$a"); fi
done
study_parse s4 "${PASS[@]+"${PASS[@]}"}"
# --quick: a small backbone (resnet32 takes the same norm/dropout params), a subset of 150
# training images a class of which each keeps 75-150, 50 test images a class, 4 epochs.
study_quick train.epochs=4 model.backbone=resnet32 data.subset.per_class=150 \
    data.subset.test_per_class=50 data.imbalance.low=75 data.imbalance.high=150 \
    logging.tensorboard=false

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
YAML
status=0
study_run plain || status=$?
if ((MIXMATCH)); then  # its own sweep (its own base config), with this one's options
    MM=()
    skip=0
    for a in "${PASS[@]+"${PASS[@]}"}"; do
        if ((skip)); then skip=0; continue; fi
        case "$a" in
            --out) skip=1 ;;
            --out=*) ;;
            *) MM+=("$a") ;;
        esac
    done
    "$REPO/scripts/study_s4_mixmatch.sh" --out "${OUT}_mixmatch" "${MM[@]+"${MM[@]}"}" || status=$?
fi
exit "$status"
