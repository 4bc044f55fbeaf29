#!/usr/bin/env bash
# The long-tail "bag of tricks" (README "Long-tail tricks"): ResNet-32 on CIFAR-10-LT ratio 100
# (CIFAR-100-LT with --cifar100), one row per trick and the best combinations, each against
# plain cross-entropy ('ce'). Re-sampling: progressively-balanced, deferred (DRS). Logits and
# targets: CDT, label-aware smoothing. Mixing: mixup, manifold mixup, remix. Two-stage: cRT, LWS,
# weight balancing (weight decay, then MaxNorm + class-balanced loss). Combinations: DRW + mixup,
# cRT + mixup. Post-hoc (no training of their own): logit adjustment and tau-normalisation of
# every 'ce' run, tau chosen on validation (`imbal eval RUN --logit-adjust --tau-norm`), in
# OUT/posthoc.md. Report: OUT/report.md (vs 'ce'), mean ± std over seeds.
#   scripts/study_tricks.sh --workers 2              # GPU: 13 rows x 3 seeds x 200 epochs
#   scripts/study_tricks.sh --cifar100 --workers 2   # CIFAR-100-LT (torchvision's files)
#   scripts/study_tricks.sh --quick                  # CPU: 3 epochs on a small subset
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
BASE=lt_cifar_resnet32.yaml
NAME=tricks
PASS=()
for a in "$@"; do
    if [[ "$a" == --cifar100 ]]; then BASE=lt_cifar100_resnet32.yaml; NAME=tricks_cifar100
    else PASS+=("$a"); fi
done
study_parse "$NAME" "${PASS[@]+"${PASS[@]}"}"
study_quick train.epochs=3 data.subset.per_class=300 data.subset.test_per_class=40 data.val_fraction=0.2 \
    train.schedule.warmup_epochs=1 "train.schedule.milestones=[2]" train.threads=1
# Stage lengths: the second stage of the two-stage rows, and where DRW's re-weighting starts
# (the paper's epoch 160 of 200; DRW continues the optimizer and its one schedule).
if ((QUICK)); then E2=1; DEFER=2; LATE=1; else E2=10; DEFER=160; LATE=40; fi
STAGE2="epochs: $E2, optimizer: {lr: 0.01, weight_decay: 0.0005}, schedule: {name: cosine, warmup_epochs: 0}"

cat >"$SWEEP_FILE" <<YAML
name: $NAME
base: $REPO/configs/$BASE
seeds: {train: [$SEEDS_TRAIN], data: [$SEEDS_DATA]}
runs:
  - {name: ce, set: {remedy: []}}
  - {name: progressive, set: {remedy: [{name: oversample, mode: progressive}]}}
  - {name: drs, set: {remedy: [{name: oversample, mode: balanced, start_epoch: 0.8}]}}
  - {name: cdt, set: {remedy: [{name: cdt, gamma: 0.2}]}}
  - {name: label_aware_smoothing, set: {remedy: [{name: label_aware_smoothing, head: 0.3, tail: 0.0, shape: concave}]}}
  - {name: mixup, set: {train.batch_transforms: [{name: mixup, alpha: 1.0}]}}
  - {name: manifold_mixup, set: {train.batch_transforms: [{name: manifold_mixup, alpha: 2.0}]}}
  - {name: remix, set: {train.batch_transforms: [{name: remix, alpha: 1.0, kappa: 3.0, tau: 0.5}]}}
  - name: crt
    set: {stages: [{name: represent}, {name: crt, trains: head, reinit_head: true, remedy: [{name: oversample}], $STAGE2}]}
  - name: lws
    set: {stages: [{name: represent}, {name: lws, trains: scales, remedy: [{name: oversample}], $STAGE2}]}
  - name: weight_balancing
    set: {stages: [{name: wd, optimizer: {weight_decay: 0.005}}, {name: maxnorm, trains: head, max_norm: 0.1, remedy: [{name: class_weights, beta: 0.9999}], $STAGE2}]}
  - name: drw+mixup
    set:
      train.batch_transforms: [{name: mixup, alpha: 1.0}]
      stages: [{name: plain, epochs: $DEFER}, {name: drw, epochs: $LATE, optimizer: continue, remedy: [{name: class_weights, beta: 0.9999}]}]
  - name: crt+mixup
    set: {stages: [{name: represent, batch_transforms: [{name: mixup, alpha: 1.0}]}, {name: crt, trains: head, reinit_head: true, batch_transforms: [], remedy: [{name: oversample}], $STAGE2}]}
YAML
status=0
study_run ce || status=$?
if ((NO_REPORT)) || [[ ! -f "$OUT/sweep.json" ]]; then exit "$status"; fi

# Post-hoc rows: logit adjustment and tau-normalisation of each finished 'ce' run.
for run in "$OUT"/ce__*/; do
    [[ -f "$run/results.json" ]] || continue
    [[ -f "$run/eval_best.json" ]] && grep -q tau_norm "$run/eval_best.json" && continue
    imbal_cmd eval "$run" --logit-adjust --tau-norm >/dev/null || status=$?
done
python3 - "$OUT" >"$OUT/posthoc.md" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
rows = {"ce (plain)": [], "logit_adjust (post-hoc)": [], "tau_norm": []}
for path in sorted(glob.glob(f"{out}/ce__*/eval_best.json")):
    e = json.load(open(path))
    rows["ce (plain)"].append((e["test"], None))
    for k in ("logit_adjust", "tau_norm"):
        if k in e:
            rows[f"{k} (post-hoc)" if k == "logit_adjust" else k].append((e[k]["test"], e[k]["tau"]))
def ms(v):
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.2f}"
print("| row | runs | tau (chosen on validation) | top1 | balanced_acc | few_acc |")
print("|---|---|---|---|---|---|")
for name, got in rows.items():
    if not got:
        continue
    taus = ", ".join(str(t) for _, t in got if t is not None) or "-"
    few = [m["few_acc"] for m, _ in got if m.get("few_acc") is not None]
    print(f"| {name} | {len(got)} | {taus} | {ms([m['top1'] for m, _ in got])} | "
          f"{ms([m['balanced_acc'] for m, _ in got])} | {ms(few) if few else '-'} |")
PY
cat "$OUT/posthoc.md"
exit "$status"
