#!/usr/bin/env bash
# Study S1 (shared/STUDIES.md): ResNet-50 on MNIST with 10% of classes 0-4 kept; the three
# remedies (batch-inverse weights, label smoothing on 0-4, rotation pretraining with 6/9 soft
# targets) and their combinations, plus the balanced set and label smoothing on all classes.
# Report: runs/s1/report.md (differences vs 'imbalanced'). Options: see scripts/study_lib.sh.
#   scripts/study_s1.sh                       # GPU: 10 rows x 3 seeds, 40 epochs each
#   scripts/study_s1.sh --quick --workers 2   # CPU: ResNet-32, 5 epochs on 200 images a class
#     (ResNet-50 trains at ~7 images/s on one core of a 2-core CPU: 400 s a run for 1 epoch on
#     the subset, at chance; ResNet-32 takes the same remedies, like study_s4's --quick)
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
study_parse s1 "$@"
PRE_EPOCHS=5
if ((QUICK)); then PRE_EPOCHS=1; fi
study_quick model.backbone=resnet32 train.epochs=5 data.subset.per_class=200 \
    data.subset.test_per_class=100 logging.tensorboard=false

BW='{name: batch_inverse}'
LS04='{name: label_smoothing, eps: 0.1, classes: [0, 1, 2, 3, 4]}'
LS09='{name: label_smoothing, eps: 0.1, classes: all}'
ROT="pretrain: {task: rotation, epochs: $PRE_EPOCHS, params: {symmetric_classes: [6, 9]}}"
cat >"$SWEEP_FILE" <<YAML
name: s1
base: $REPO/configs/s1_mnist_resnet50.yaml
seeds: {train: [$SEEDS_TRAIN], data: [$SEEDS_DATA]}
runs:
  - {name: balanced, set: {data.imbalance: {kind: none}, eval.minority_classes: [0, 1, 2, 3, 4]}}
  - {name: imbalanced, set: {remedy: []}}
  - {name: batchw, set: {remedy: [$BW]}}
  - {name: ls09, set: {remedy: [$LS09]}}
  - {name: ls04, set: {remedy: [$LS04]}}
  - {name: rotation, set: {remedy: [], $ROT}}
  - {name: batchw+ls04, set: {remedy: [$BW, $LS04]}}
  - {name: batchw+rotation, set: {remedy: [$BW], $ROT}}
  - {name: ls04+rotation, set: {remedy: [$LS04], $ROT}}
  - {name: all3, set: {remedy: [$BW, $LS04], $ROT}}
YAML
study_run imbalanced
