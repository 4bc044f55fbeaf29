#!/usr/bin/env bash
# Study S3 (shared/STUDIES.md): LeNet (sigmoid) on MNIST with classes 0-4 cut to 10%; focal loss
# with gamma raised through [0.2 ... 15] over training, against plain CE, a fixed gamma and the
# balanced set. The imbalance is applied once to the data set, not per batch as S3 did (that is
# the pitfall S2 describes). Report: runs/s3/report.md (vs 'imbalanced'). See study_lib.sh.
#   scripts/study_s3.sh                       # 4 rows x 3 seeds, 10 epochs (fine on a CPU too)
#   scripts/study_s3.sh --quick --workers 2   # 3 epochs, a test subset (sigmoid LeNet learns
#                                             # slowly: a train subset would leave it at chance)
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
study_parse s3 "$@"
study_quick train.epochs=3 data.subset.test_per_class=200

cat >"$SWEEP_FILE" <<YAML
name: s3
base: $REPO/configs/s3_mnist_lenet.yaml
seeds: {train: [$SEEDS_TRAIN], data: [$SEEDS_DATA]}
runs:
  - {name: balanced, set: {data.imbalance: {kind: none}, eval.minority_classes: [0, 1, 2, 3, 4]}}
  - {name: imbalanced, set: {remedy: []}}
  - {name: focal2, set: {remedy: [{name: focal, gamma: 2}]}}
  - name: focal-schedule
    set: {remedy: [{name: focal, gamma_schedule: [0.2, 0.5, 0.8, 1, 1.5, 2, 2.5, 3, 4, 5, 10, 15]}]}
YAML
study_run imbalanced
