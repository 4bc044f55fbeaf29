#!/usr/bin/env bash
# Study S5 (shared/STUDIES.md): a long-tailed folder of images (the CIFAR-10 JPEG folder with an
# exponential tail, ratio 100, stands in for the land-use images), ResNet-18/34/50 and
# ResNeXt-18/50 from scratch and ImageNet-pretrained ResNet-18/34/50 and ResNeXt-50 (torchvision's
# weights; no ResNeXt-18 weights exist), each with cross-entropy and with balanced softmax.
# Adam lr 1e-3, MultiStepLR [80, 120, 160] x0.2, 200 epochs, colour jitter (batch transform
# colour_jitter) on top of crop+flip; every run ends with a t-SNE map of its test features
# (eval.embed: RUN/embed/tsne.png). Report: runs/s5/report.md (differences vs 'resnext18-ce').
#   scripts/study_s5.sh --workers 2              # GPU: 18 rows x 3 seeds x 200 epochs
#   scripts/study_s5.sh --quick --workers 2      # CPU: 1 epoch on a subset, no colour jitter, t-SNE
# --quick keeps 20 images a class before the tail, makes it ratio 4 (20 ... 5 images) and holds
# out 20% for validation, so the smallest class still gives the validation split an image; 10
# test images a class. A smoke test of the whole path (figures near chance), not a result.
# Pretrained rows read torchvision's files from TORCH_HOME/hub/checkpoints (default
# ~/.cache/torch/hub/checkpoints): resnet18-f37072fd.pth, resnet34-b627a593.pth,
# resnet50-11ad3fa6.pth, resnext50_32x4d-1a0047aa.pth. Without them the full study is refused
# before it starts (the message names the file and its URL); --quick leaves those rows out.
# S5_PRETRAINED_SIZE: the size pretrained rows resize to on the device (default: the weights'
# 224; --quick: 32).
source "$(dirname "${BASH_SOURCE[0]}")/study_lib.sh"
study_parse s5 "$@"
study_quick train.epochs=1 data.subset.per_class=20 data.subset.test_per_class=10 \
    data.imbalance.ratio=4 data.val_fraction=0.2 train.batch_size=16

PT_SIZE="${S5_PRETRAINED_SIZE:-null}"
COMMON="{eval.embed: true}"  # --quick: the t-SNE map too (100 test points)
if ((QUICK)); then
    PT_SIZE="${S5_PRETRAINED_SIZE:-32}"
else
    COMMON="{train.batch_transforms: [{name: colour_jitter}], eval.embed: true}"
fi
CHECKPOINTS="${TORCH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/torch}/hub/checkpoints"

rows() {  # rows LABEL SETTINGS: the cross-entropy and the balanced-softmax row of one backbone
    echo "  - {name: $1-ce, set: {$2, remedy: []}}"
    echo "  - {name: $1-bsm, set: {$2, remedy: [balanced_softmax]}}"
}

{
    cat <<YAML
name: s5
base: $REPO/configs/s5_cifar_lt_resnext18_bsm.yaml
set: $COMMON
seeds: {train: [$SEEDS_TRAIN], data: [$SEEDS_DATA]}
runs:
YAML
    for net in resnet18 resnet34 resnet50 resnext18 resnext50; do
        rows "$net" "model.backbone: $net"
    done
    for pair in resnet18:resnet18-f37072fd.pth resnet34:resnet34-b627a593.pth \
        resnet50:resnet50-11ad3fa6.pth resnext50_32x4d:resnext50_32x4d-1a0047aa.pth; do
        net="${pair%%:*}" file="${pair#*:}"
        if ((QUICK)) && [[ ! -f "$CHECKPOINTS/$file" ]]; then
            echo "study_s5 --quick: no $CHECKPOINTS/$file, leaving out the pretrained $net rows" >&2
            continue
        fi
        rows "${net%%_*}-pt" "model.backbone: torchvision/$net, model.pretrained: imagenet, model.image_size: $PT_SIZE"
    done
} >"$SWEEP_FILE"
study_run resnext18-ce
