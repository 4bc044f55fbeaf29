#!/usr/bin/env bash
# The published long-tail set (shared/STUDIES.md): ResNet-32 on CIFAR-10, exponential long tail
# ratio 100, 200 epochs: cross-entropy, focal (gamma 1), class-balanced re-weighting (effective
# number, beta 0.9999), LDAM-DRW, balanced softmax, logit-adjusted loss (tau 1). Checkpoints are
# chosen on a validation split, not on the test set. Report: runs/lt/report.md (vs 'ce').
#   scripts/study_lt.sh                          # GPU: 6 rows x 3 seeds x 200 epochs, packed
#                                                # onto every visible GPU (--devices, --per-device)
#   scripts/study_lt.sh --executor slurm --partition gpu --time 600
#   scripts/study_lt.sh --quick --workers 2      # CPU: 3 epochs on a subset
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
study_parse lt "$@"
study_quick train.epochs=3 data.subset.per_class=500 data.subset.test_per_class=100 \
    train.schedule.warmup_epochs=1 "train.schedule.milestones=[2]"

cat >"$SWEEP_FILE" <<YAML
name: lt
base: $REPO/configs/lt_cifar_resnet32.yaml
seeds: {train: [$SEEDS_TRAIN], data: [$SEEDS_DATA]}
runs:
  - {name: ce, set: {remedy: []}}
  - {name: focal, set: {remedy: [{name: focal, gamma: 1.0}]}}
  - {name: cb, set: {remedy: [{name: class_weights, beta: 0.9999}]}}
  - {name: ldam-drw, set: {remedy: [{name: ldam, drw_epoch: 0.8}]}}
  - {name: balanced_softmax, set: {remedy: [{name: balanced_softmax}]}}
  - {name: logit_adjust, set: {remedy: [{name: logit_adjust, tau: 1.0}]}}
YAML
study_run ce
