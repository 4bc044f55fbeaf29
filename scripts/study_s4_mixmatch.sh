#!/usr/bin/env bash
# Study S4's partial labels (shared/STUDIES.md): MixMatch on 250 labels (25 per class, drawn
# with the data seed) against the same budget trained on the 250 labels alone (stages=null:
# one supervised stage, same epochs, optimizer, moving average). Report:
# runs/s4_mixmatch/report.md (vs 'labelled-only'). Options: see scripts/study_lib.sh.
#   scripts/study_s4_mixmatch.sh                      # GPU: CIFAR-10 folder, ResNet-34,
#                                                     # configs/s4_mixmatch.yaml, 3 seeds
#   scripts/study_s4_mixmatch.sh --quick --workers 2  # CPU: MNIST, LeNet, 250 labels,
#                                                     # configs/mnist_mixmatch_250.yaml, 40 epochs
# The data seed draws the 250 labels: SEEDS_DATA="0, 1, 2" varies them too (x SEEDS_TRAIN).
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
study_parse s4_mixmatch "$@"
BASE="$REPO/configs/s4_mixmatch.yaml"
if ((QUICK)); then BASE="$REPO/configs/mnist_mixmatch_250.yaml"; fi
study_quick train.epochs=40 data.subset.test_per_class=50 logging.tensorboard=false

cat >"$SWEEP_FILE" <<YAML
name: s4_mixmatch
base: $BASE
seeds: {train: [$SEEDS_TRAIN], data: [$SEEDS_DATA]}
runs:
  - {name: labelled-only, set: {stages: null}}
  - {name: mixmatch, set: {}}
YAML
study_run labelled-only
