#!/usr/bin/env bash
# Study S3 (shared/STUDIES.md): LeNet (sigmoid, S3's Xavier-uniform init) on MNIST with classes
# 0-4 cut to 10%; focal loss with gamma raised through [0.2 ... 15], against plain CE, a fixed
# gamma and the balanced set. Two ways of imbalancing:
#   - once, to the data set (the sound way): balanced, imbalanced, focal2, focal-schedule (the
#     list spread over the run's epochs), focal-120 (S3's schedule: each gamma for EPOCHS epochs,
#     one model, 12 x EPOCHS epochs) and ce-120 (CE for as long: how much is training time);
#   - per batch, as S3 ran it (a batch keeps 0-4 only when batch_id % 10 == 0, see
#     data.imbalance.apply): imbalanced-per-batch (S3's 'imbalanced' row, paper 92.0) and
#     focal-as-run (S3's focal row, paper 98.0; configs/s3_mnist_lenet_as_run.yaml).
# Report: runs/s3/report.md (vs 'imbalanced'). See study_lib.sh.
#   scripts/study_s3.sh                       # 8 rows x 3 seeds; EPOCHS=10, three rows of 120
#   scripts/study_s3.sh --quick --workers 2   # EPOCHS=2 (24 for the long rows), a test subset
#                                             # (sigmoid LeNet learns slowly: a train subset
#                                             # would leave it at chance)
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
study_parse s3 "$@"
EPOCHS=10
if ((QUICK)); then EPOCHS=2; fi
study_quick data.subset.test_per_class=200

GAMMAS=(0.2 0.5 0.8 1 1.5 2 2.5 3 4 5 10 15)
LIST="[$(IFS=,; echo "${GAMMAS[*]}" | sed 's/,/, /g')]"
# S3's schedule as stages: EPOCHS (train.epochs) for each gamma, the optimizer continued.
STAGES=""
for g in "${GAMMAS[@]}"; do
    cont=""
    [[ -n "$STAGES" ]] && cont=", optimizer: continue"
    STAGES+="${STAGES:+, }{name: gamma$g, remedy: [{name: focal, gamma: $g}]$cont}"
done
PER_BATCH='data.imbalance.apply: per_batch'

cat >"$SWEEP_FILE" <<YAML
name: s3
base: $REPO/configs/s3_mnist_lenet.yaml
seeds: {train: [$SEEDS_TRAIN], data: [$SEEDS_DATA]}
set: {train.epochs: $EPOCHS}
runs:
  - {name: balanced, set: {data.imbalance: {kind: none}, eval.minority_classes: [0, 1, 2, 3, 4]}}
  - {name: imbalanced, set: {remedy: []}}
  - {name: focal2, set: {remedy: [{name: focal, gamma: 2}]}}
  - {name: focal-schedule, set: {remedy: [{name: focal, gamma_schedule: $LIST}]}}
  - {name: focal-120, set: {stages: [$STAGES]}}
  - {name: ce-120, set: {remedy: [], train.epochs: $((12 * EPOCHS))}}
  - {name: imbalanced-per-batch, set: {remedy: [], $PER_BATCH}}
  - {name: focal-as-run, set: {$PER_BATCH, stages: [$STAGES]}}
YAML
study_run imbalanced
