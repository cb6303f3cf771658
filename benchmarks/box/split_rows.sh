#!/usr/bin/env bash
# GPU box runner for a machine of 4 GPUs (issues #12 and #13): timing rows and a method comparison at once, on
# separate GPUs (start it with launch.sh, MPS=1):
#   ALONE_GPUS (default 0,1; one scene per GPU, one training at a time on each):
#     D. the semsplat preset alone (the #13 end-to-end row of `ns-train semsplat`), then C. semsplat-fast alone
#        (its own prior, on 192-pixel crops), then each of LATER methods alone;
#   SHARED_GPUS (default 2,3): METHODS as concurrent semsplat-batch runs, each on its own copy of the scenes (one
#     scene per GPU, so each GPU trains that scene of every method at once).
# Every run makes the prior's pseudo labels inside ns-train where its method needs them, as a user's does.
# Rows: /tmp/work/results/semsplat_prior.json and semsplat_fast.json, made as each chain ends, with
# jobs_sharing_gpu counted over all batches (batch_rows.py --concurrent; batches on other GPUs do not count).
#   bash benchmarks/box/launch.sh benchmarks/box/split_rows.sh "townA townB" "semsplat-no-agree semsplat-head-gt" "semsplat-w0.1"
set -u
work=${WORK:-/tmp/work}
mkdir -p $work/results $work/batch $work/scenes
read -r -a scenes <<< "${1:-townA townB}"
read -r -a methods <<< "${2:-}"
read -r -a later <<< "${3:-}"
source benchmarks/box/lib.sh
steps=${4:-$(python -c 'from semsplat_ns.schedule import PRESET_STEPS; print(PRESET_STEPS)' | tail -n 1)}
names=(alone fast "${methods[@]}" "${later[@]}")
peak_jobs=$(( ${#scenes[@]} * (1 + ${#methods[@]}) ))
threads=$(( $(nproc) / peak_jobs ))
[ "$threads" -ge 1 ] || threads=1

rows_of() {  # rows_of NAME: its rows, every other batch counted as concurrent (other GPUs do not count)
  local name=$1 method=$1 results=semsplat_prior.json others=()
  case $name in alone) method=semsplat ;; fast) method=semsplat-fast results=semsplat_fast.json ;; esac
  for o in "${names[@]}"; do [ "$o" = "$name" ] || [ ! -d "$work/batch/$o" ] || others+=("$work/batch/$o"); done
  rows "$name" "$method" "$results" "${others[@]}"
}
alone_chain() {
  export CUDA_VISIBLE_DEVICES=${ALONE_GPUS:-0,1}
  say "D: semsplat alone on GPUs $CUDA_VISIBLE_DEVICES ($steps steps)"
  method_batch alone semsplat "$threads" "$steps" && rows_of alone
  say "C: semsplat-fast alone on GPUs $CUDA_VISIBLE_DEVICES"
  fast_batch fast "$threads" && rows_of fast
  for m in "${later[@]}"; do
    say "$m alone on GPUs $CUDA_VISIBLE_DEVICES"
    method_batch "$m" "$m" "$threads" "$steps" && rows_of "$m"
  done
}
shared_chain() {
  [ ${#methods[@]} -gt 0 ] || return 0
  export CUDA_VISIBLE_DEVICES=${SHARED_GPUS:-2,3}
  say "A: ${methods[*]} at once on GPUs $CUDA_VISIBLE_DEVICES ($steps steps)"
  for m in "${methods[@]}"; do
    method_batch "$m" "$m" "$threads" "$steps" &
    sleep 20  # the Dask clusters start one after another
  done
  wait
  for m in "${methods[@]}"; do rows_of "$m"; done
}
alone_chain &
sleep 10
shared_chain &
wait
say "runner done"
touch $work/done
