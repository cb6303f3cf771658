#!/usr/bin/env bash
# GPU box runner: benchmarks/step_trace.py, one traced training after another, each alone on GPU 0 with every core.
# Each ENTRY is "SCENE METHOD LABEL [REPEATS [TREE]]": a fresh copy of SCENE (no pseudo labels) traced REPEATS times
# (default 1; the first run makes the pseudo labels, the others reuse them) with the code of TREE ("-" or none: this
# copy; a TREE with a file COMMIT stamps its files with that commit), with TRACE_FLAGS (e.g. --phases) added to each
# run. SHARE_PSEUDO=1: the entries of a scene share one copy (the first makes the pseudo labels, the others, of any
# tree, reuse them: for before/after pairs). Files: /tmp/work/results/profile/step_trace_LABEL_rN{,_steps}.json,
# logs /tmp/work/trace_LABEL_rN.log.
#   bash benchmarks/box/launch.sh benchmarks/box/trace_rows.sh "townA semsplat head 2"
set -u
work=${WORK:-/tmp/work}
mkdir -p "$work/results/profile"
here=$PWD
source benchmarks/box/lib.sh  # say
for entry in "$@"; do
  read -r scene method label repeats tree <<< "$entry"
  [ -z "${tree:-}" ] || [ "$tree" = - ] && tree=$here
  copy=$work/scenes/trace_$label
  [ -z "${SHARE_PSEUDO:-}" ] || copy=$work/scenes/trace_shared
  if [ -z "${SHARE_PSEUDO:-}" ] || [ ! -d "$copy/$scene" ]; then
    rm -rf "$copy/$scene" && mkdir -p "$copy" && cp -r "${SCENES:-$here/.scenes}/$scene" "$copy/$scene"
    rm -rf "$copy/$scene/train/pseudo" "$copy/$scene/train/boundary" "$copy/$scene/train/confidence"
  fi
  for r in $(seq 1 "${repeats:-1}"); do
    (
      cd "$tree" || exit 1
      source benchmarks/box/env.sh > /dev/null || exit 1
      export CUDA_VISIBLE_DEVICES=0
      [ "$tree" = "$here" ] || [ ! -f "$tree/COMMIT" ] || export SEMSPLAT_COMMIT=$(cat "$tree/COMMIT")
      say "trace ${label}_r$r: $method $scene, code of $tree"
      # shellcheck disable=SC2086  # TRACE_FLAGS are split as given
      python benchmarks/step_trace.py --scene "$copy/$scene" --method "$method" --label "${label}_r$r" \
        --out "$work/results/profile" --output-dir "$work/trace_runs/$label" ${TRACE_FLAGS:-} \
        > "$work/trace_${label}_r$r.log" 2>&1
      say "trace ${label}_r$r rc $?: $(grep -a 'steps in' "$work/trace_${label}_r$r.log" | tail -n 1)"
    )
  done
done
[ -n "${NO_DONE:-}" ] || { say "runner done"; touch "$work/done"; }
