#!/usr/bin/env bash
# GPU box runner for issue #13's before/after table: single trainings at once, each ALONE on its own GPU with an
# equal share of the CPU cores (on a 4-GPU machine of 64 cores, each gets the 16 cores of a one-H100 box).
# Each ENTRY is "GPU PRESET SCENE LABEL [TREE [FLAG ...]]": ns-train PRESET (through semsplat-batch, the pseudo labels
# made inside ns-train as a user's are) on a fresh copy of SCENE, with the code of TREE (an absolute path to
# another copy of the repo, e.g. the commit before a change; "-" or none: this copy) and more ns-train FLAGs. A TREE
# with a file COMMIT stamps its rows with that commit instead of $SEMSPLAT_COMMIT:
#   mkdir .before && git archive 28cdb21 semsplat_ns benchmarks pyproject.toml | tar -x -C .before \
#     && rm -r .before/benchmarks/results && echo 28cdb21 > .before/COMMIT   # 1.4 MB: a call carries 64 MiB
# Rows: /tmp/work/results/alone_LABEL.json; then the trained run's evaluation label path is timed alone on its GPU
# (python -m semsplat_ns.eval.label_path_timing) into /tmp/work/results/label_path_timing_LABEL.json, and the run's
# automatic prior (saved under /tmp/work/priors: a saved prior is too large to bring back) is scored alone on the
# test views, per-class IoU included (python -m benchmarks.prior --weights), into /tmp/work/results/prior_LABEL.json.
#   BEFORE=$PWD/../before bash benchmarks/box/launch.sh benchmarks/box/alone_grid.sh \
#     "0 semsplat townA after" "1 semsplat townA before $BEFORE" "2 semsplat townB after" "3 semsplat-fast townA fast"
# One entry alone has the whole machine (every core): a run alone on the box. ROWS_ONLY=1 stops after the rows.
set -u
work=${WORK:-/tmp/work}
mkdir -p "$work/results" "$work/priors"
here=$PWD
source benchmarks/box/lib.sh  # say (the entries source their own tree's copy)
entries=("$@")
[ ${#entries[@]} -gt 0 ] || { echo "alone_grid.sh: no entry" >&2; exit 2; }
share=${SHARE:-$(( $(nproc) / ${#entries[@]} ))}  # SHARE: cores per run when other runners share the machine
[ "$share" -ge 1 ] || share=1

run_entry() {  # run_entry "GPU PRESET SCENE LABEL [TREE [FLAG ...]]"
  local gpu preset scene label tree extra
  read -r gpu preset scene label tree extra <<< "$1"
  [ -z "${tree:-}" ] || [ "$tree" = - ] && tree=$here
  (
    if [ "$share" -lt "$(nproc)" ] && command -v taskset > /dev/null; then
      # runs sharing a machine each get their own cores (GPU g: cores g*share .. g*share+share-1), as a one-GPU box
      # of that many cores would: pycolmap and torch size their thread pools by the machine, not by OMP_NUM_THREADS
      taskset -cp "$((gpu * share))-$((gpu * share + share - 1))" "$BASHPID" > /dev/null
    fi
    cd "$tree" || exit 1
    source benchmarks/box/env.sh > /dev/null || exit 1
    prior=$work/priors/$label.pt
    export CUDA_VISIBLE_DEVICES=$gpu OMP_NUM_THREADS=$share
    # another tree's rows carry its own commit (a file COMMIT written beside its code, e.g. by git archive's caller)
    [ "$tree" = "$here" ] || [ ! -f "$tree/COMMIT" ] || export SEMSPLAT_COMMIT=$(cat "$tree/COMMIT")
    export EXTRA_FLAGS="--pipeline.datamanager.pseudo-prior.save-weights $prior ${extra:-}"
    scenes=("$scene")
    source benchmarks/box/lib.sh
    n=$(python -c "from semsplat_ns import config; print({'semsplat-fast': config.FAST_STEPS, 'semsplat-30k': config.PAPER_STEPS}.get('$preset', config.PRESET_STEPS))" | tail -n 1)
    say "$label: $preset $scene on GPU $gpu, $share cores, code of $tree ${extra:+flags $extra}"
    fresh_copies "$label"
    batch "$label" "$preset" "$share" "$n" --steps-per-save "$n" --steps-per-eval-image $((10 * n))
    rows "$label" "$preset" "alone_$label.json"
    [ -z "${ROWS_ONLY:-}" ] || exit 0  # ROWS_ONLY=1: no label-path timing, no prior scoring (a minute less)
    config=$(find "$work/batch/$label/$scene/train" -name config.yml | head -n 1)
    [ -n "$config" ] || { say "$label: no trained run to time"; exit 1; }
    python -m semsplat_ns.eval.label_path_timing --load-config "$config" --repeats 3 \
      --out "$work/results/label_path_timing_$label.json" >> "$work/batch_$label.log" 2>&1
    say "label path timing $label rc $?"
    if [ -f "$prior" ]; then
      local prior_args=(--method prior)  # the saved weights are scored; their recipe does not matter here
      python -m benchmarks.prior --scene "$work/scenes/$label/$scene" --weights "$prior" "${prior_args[@]}" \
        --out "$work/results/prior_$label.json" >> "$work/batch_$label.log" 2>&1
      say "prior alone $label rc $?"
    fi
  )
}
for entry in "${entries[@]}"; do run_entry "$entry" & sleep 10; done  # Dask clusters start one after another
wait
say "alone grid done"
[ -n "${NO_DONE:-}" ] || { say "runner done"; touch "$work/done"; }
