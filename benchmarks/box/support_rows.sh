#!/usr/bin/env bash
# GPU box runner for issues #12 and #13 on a machine of 2 GPUs (start it with launch.sh, MPS=1), in the order
# that keeps the most important rows when the machine is taken back before the end:
#   A. the #12 comparison: METHODS_A (default "semsplat-baseline semsplat") as concurrent
#      semsplat-batch runs, each on its own copy of the SCENES (one scene per GPU, so each GPU trains one scene of
#      every method at once); ns-train makes the prior's pseudo labels itself where a method needs them
#      (--pseudo-backend none), as `ns-train semsplat --data X` does for a user;
#   C. semsplat-fast alone on each GPU (fresh copies: its own 2000-step prior), rows with end_to_end_s;
#   D. the semsplat preset alone on each GPU (fresh copies), the #13 end-to-end row of `ns-train semsplat`.
# Rows: /tmp/work/results/semsplat_prior.json (A, D) and semsplat_fast.json (C), with jobs_sharing_gpu counted
# over the concurrent batches (batch_rows.py --concurrent).
#   bash benchmarks/box/launch.sh benchmarks/box/support_rows.sh "townA townB" "semsplat-baseline semsplat"
# A smoke run off the box: WORK, SCENES (the scene folders' parent), DEVICE=cpu, FAST_STEPS and EXTRA_FLAGS (more
# ns-train flags for every run, e.g. a shorter prior) may be set.
set -u
work=${WORK:-/tmp/work}
mkdir -p $work/results $work/batch $work/scenes
read -r -a scenes <<< "${1:-townA townB}"
read -r -a methods <<< "${2:-semsplat-baseline semsplat}"
steps=${3:-30000}
say() { echo "$(date +%T) $*" >> $work/status.txt; }
fresh_copies() {  # fresh_copies NAME: the scenes without any pseudo labels, under $work/scenes/NAME
  local dest=$work/scenes/$1
  mkdir -p "$dest"
  for s in "${scenes[@]}"; do
    cp -r "${SCENES:-.scenes}/$s" "$dest/$s"
    rm -rf "$dest/$s/train/pseudo" "$dest/$s/train/boundary" "$dest/$s/train/confidence"
  done
}
batch() {  # batch NAME PRESET THREADS STEPS FLAG...: semsplat-batch over the copies of NAME into $work/batch/NAME
  local name=$1 preset=$2 threads=$3 n=$4; shift 4
  local paths=() start=$SECONDS
  for s in "${scenes[@]}"; do paths+=("$work/scenes/$name/$s"); done
  semsplat-batch "${paths[@]}" --preset "$preset" --pseudo-backend none --device "${DEVICE:-cuda}" \
    --max-num-iterations "$n" --threads-per-scene "$threads" --output-dir "$work/batch/$name" \
    --dashboard-address :0 -- "$@" ${EXTRA_FLAGS:-} > "$work/batch_$name.log" 2>&1
  say "batch $name rc $? $((SECONDS - start)) s"
}
rows() {  # rows NAME METHOD RESULTS CONCURRENT...
  local name=$1 method=$2 results=$3; shift 3
  python -m benchmarks.batch_rows --batch "$work/batch/$name" --method "$method" --out "$work/results/$results" \
    --concurrent "$@" >> "$work/batch_$name.log" 2>&1
  say "rows $name rc $?"
}

say "A: ${methods[*]} at once over ${scenes[*]} ($steps steps)"
cores=$(nproc)
per_scene=$(( cores / (${#methods[@]} * ${#scenes[@]}) ))
[ "$per_scene" -ge 1 ] || per_scene=1
for m in "${methods[@]}"; do
  mapfile -t flags < <(python -m benchmarks.methods flags "$m" "$steps")
  [ ${#flags[@]} -gt 0 ] || { say "$m: no flags"; continue; }
  fresh_copies "$m"
  batch "$m" semsplat "$per_scene" "$steps" "${flags[@]}" &
  sleep 20  # the Dask clusters start one after another
done
wait
for m in "${methods[@]}"; do
  others=()
  for o in "${methods[@]}"; do [ "$o" = "$m" ] || others+=("$work/batch/$o"); done
  rows "$m" "$m" semsplat_prior.json "${others[@]}"
done

say "C: semsplat-fast alone on each GPU"
fresh_copies fast
# the preset's own schedule and steps; one checkpoint at the end and no evaluation renders in the loop
fast_steps=${FAST_STEPS:-$(python -c 'from semsplat_ns.config import FAST_STEPS; print(FAST_STEPS)' | tail -n 1)}
alone_threads=$(( cores / ${#scenes[@]} ))
batch fast semsplat-fast "$alone_threads" "$fast_steps" --steps-per-save "$fast_steps" --steps-per-eval-image $((10 * fast_steps))
rows fast semsplat-fast semsplat_fast.json

say "D: semsplat alone on each GPU"
fresh_copies alone
mapfile -t flags < <(python -m benchmarks.methods flags semsplat "$steps")
batch alone semsplat "$alone_threads" "$steps" "${flags[@]}"
rows alone semsplat semsplat_prior.json
say "runner done"
touch $work/done
