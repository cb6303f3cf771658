#!/usr/bin/env bash
# GPU box runner: benchmarks/profile_train_step.py for several trees at once (a before/after pair of ms/step from one
# machine), each ALONE on its GPU with SHARE cores (default 16) and its own fresh copy of the scene (each makes its
# own pseudo labels first, so no two share a cache). Each ENTRY is "GPU SCENE LABEL [TREE [ARG ...]]": TREE an
# absolute path to another copy of the repo ("-" or none: this copy), ARGs more profile_train_step.py arguments
# (default: --variant semsplat --iterations 2000). Files: /tmp/work/results/profile/*_LABEL.*.
#   cp -r . /tmp/before && (cd /tmp/before && patch -R -p1 < before.patch)
#   bash benchmarks/box/launch.sh benchmarks/box/profile_grid.sh "2 townA after" "3 townA before /tmp/before"
set -u
work=${WORK:-/tmp/work}
mkdir -p "$work/results/profile"
here=$PWD
source benchmarks/box/lib.sh  # say
share=${SHARE:-16}

run_entry() {  # run_entry "GPU SCENE LABEL [TREE [ARG ...]]"
  local gpu scene label tree extra
  read -r gpu scene label tree extra <<< "$1"
  [ -z "${tree:-}" ] || [ "$tree" = - ] && tree=$here
  local copy=$work/scenes/profile_$label
  rm -rf "$copy" && mkdir -p "$copy" && cp -r "${SCENES:-$here/.scenes}/$scene" "$copy/$scene"
  rm -rf "$copy/$scene/train/pseudo" "$copy/$scene/train/boundary" "$copy/$scene/train/confidence"
  (
    cd "$tree" || exit 1
    source benchmarks/box/env.sh > /dev/null || exit 1
    export CUDA_VISIBLE_DEVICES=$gpu OMP_NUM_THREADS=$share
    say "profile $label: $scene on GPU $gpu, $share cores, code of $tree"
    # shellcheck disable=SC2086  # ARGs are split as given
    python benchmarks/profile_train_step.py --scene "$copy/$scene" --label "$label" --out "$work/results/profile" \
      --output-dir "$work/profile_runs/$label" ${extra:---variant semsplat --iterations 2000} \
      > "$work/profile_$label.log" 2>&1
    say "profile $label rc $?"
  )
}
for entry in "$@"; do run_entry "$entry" & sleep 5; done
wait
[ -n "${NO_DONE:-}" ] || { say "runner done"; touch "$work/done"; }
