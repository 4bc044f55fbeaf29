# Shared by scripts/study_*.sh (sourced, not run): options, the generated sweep file, the sweep
# and its report.
#
# Every study script takes:
#   --quick            a CPU-sized version: few epochs, a per-class subset of train and test,
#                      2 training seeds, written to runs/<study>_quick
#   --emit DIR         run nothing: write the generated sweep file(s) to DIR/<sweep>.yaml and
#                      their --set overrides, one KEY=VALUE a line, to DIR/<sweep>.set (the
#                      bundled-config test resolves every cell of every study this way)
#   anything else      passed to `imbal sweep` (--workers 2, --dry-run, --out DIR, --overwrite,
#                      --set key=value, --executor slurm --partition gpu --time 600 ...)
# Environment: SEEDS_TRAIN / SEEDS_DATA (comma lists, default "0, 1, 2" / "0"), IMBAL_DATA
# (where MNIST/ and cifar10-jpeg/ live), IMBAL (the command, default `imbal`).
# A re-run skips the runs that already finished, so an interrupted study resumes.

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
ARGS=()
QUICK_SET=()
NO_REPORT=0
EMIT=""

imbal_cmd() {
    if [[ -n "${IMBAL:-}" ]]; then
        $IMBAL "$@"
    elif command -v imbal >/dev/null 2>&1; then
        imbal "$@"
    else
        PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" python -m imbal.cli "$@"
    fi
}

# study_parse NAME "$@": sets QUICK, ARGS (for imbal sweep), OUT, SEEDS_*, SWEEP_FILE.
study_parse() {
    local name="$1"
    shift
    OUT=""
    while (($#)); do
        case "$1" in
            --quick) QUICK=1 ;;
            --out) OUT="$2"; shift ;;
            --out=*) OUT="${1#--out=}" ;;
            --emit) EMIT="$2"; shift ;;
            --dry-run | --no-wait) NO_REPORT=1; ARGS+=("$1") ;;
            *) ARGS+=("$1") ;;
        esac
        shift
    done
    if ((QUICK)); then
        : "${OUT:=runs/${name}_quick}"
        SEEDS_TRAIN="${SEEDS_TRAIN:-0, 1}"
    else
        : "${OUT:=runs/${name}}"
        SEEDS_TRAIN="${SEEDS_TRAIN:-0, 1, 2}"
    fi
    SEEDS_DATA="${SEEDS_DATA:-0}"
    TMP_DIR="$(mktemp -d)"
    trap 'rm -rf "$TMP_DIR"' EXIT
    SWEEP_FILE="$TMP_DIR/$name.yaml"
}

# study_quick KEY=VALUE...: overrides for every run in --quick mode only.
study_quick() {
    if ((QUICK)); then
        local kv
        for kv in "$@"; do QUICK_SET+=(--set "$kv"); done
    fi
}

# study_run BASELINE: run the sweep in $SWEEP_FILE, then write OUT/report.md and OUT/plots/.
study_run() {
    local baseline="$1" status=0
    if [[ -n "$EMIT" ]]; then
        study_emit
        return 0
    fi
    imbal_cmd sweep "$SWEEP_FILE" --out "$OUT" "${QUICK_SET[@]}" "${ARGS[@]}" || status=$?
    if ((NO_REPORT)) || [[ ! -f "$OUT/sweep.json" ]]; then
        return "$status"  # a dry run, a submission without waiting, or a refused sweep file
    fi
    cp "$SWEEP_FILE" "$OUT/sweep.yaml"
    imbal_cmd report "$OUT" --baseline "$baseline" --out "$OUT/report.md" --plots "$OUT/plots"
    imbal_cmd report "$OUT" --baseline "$baseline" --format csv --out "$OUT/report.csv"
    cat "$OUT/report.md"
    if ((status)); then
        echo "some runs failed (listed above; errors in $OUT/<run>/error.txt)" >&2
    fi
    return "$status"
}

# study_emit: the sweep file and its --set items (quick mode's and the command line's) into $EMIT.
study_emit() {
    local base i
    base="$EMIT/$(basename "$SWEEP_FILE" .yaml)"
    mkdir -p "$EMIT"
    cp "$SWEEP_FILE" "$base.yaml"
    : >"$base.set"
    local all=("${QUICK_SET[@]}" "${ARGS[@]}")
    for ((i = 0; i < ${#all[@]}; i++)); do
        case "${all[i]}" in
            --set) printf '%s\n' "${all[i + 1]}" >>"$base.set"; i=$((i + 1)) ;;
            --set=*) printf '%s\n' "${all[i]#--set=}" >>"$base.set" ;;
        esac
    done
}
