#!/usr/bin/env bash
# Study S2 (shared/STUDIES.md): small CNN on CIFAR-10 with classes 0-4 cut to 1/10, imbalance
# applied once to the data set; copy (9 extra copies of minority images), aug (transformed
# copies up to balance), loss (w_j = N / N_j), loss+aug; and jigsaw pretraining on the balanced
# set. Report: runs/s2/report.md (differences vs 'imbalanced'). Options: see study_lib.sh.
#   scripts/study_s2.sh                       # GPU: 8 rows x 3 seeds, 20 epochs each
#   scripts/study_s2.sh --quick --workers 2   # CPU: 2 epochs on a subset
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
study_parse s2 "$@"
PRE_EPOCHS=5
if ((QUICK)); then PRE_EPOCHS=1; fi
study_quick train.epochs=2 data.subset.per_class=200 data.subset.test_per_class=100

AUG='{name: copy, k: balance, transforms: [hflip, vflip, brightness, contrast]}'
LOSS='{name: class_weights}'
BAL='data.imbalance: {kind: none}, eval.minority_classes: [0, 1, 2, 3, 4]'
JIG="pretrain: {task: jigsaw, epochs: $PRE_EPOCHS}"
cat >"$SWEEP_FILE" <<YAML
name: s2
base: $REPO/configs/s2_cifar_small_cnn.yaml
seeds: {train: [$SEEDS_TRAIN], data: [$SEEDS_DATA]}
runs:
  - {name: balanced, set: {$BAL}}
  - {name: imbalanced, set: {remedy: []}}
  - {name: copy, set: {remedy: [{name: copy, k: 9}]}}
  - {name: aug, set: {remedy: [$AUG]}}
  - {name: loss, set: {remedy: [$LOSS]}}
  - {name: loss+aug, set: {remedy: [$LOSS, $AUG]}}
  - {name: jigsaw, set: {remedy: [], $JIG}}
  - {name: balanced+jigsaw, set: {$BAL, $JIG}}
YAML
study_run imbalanced
