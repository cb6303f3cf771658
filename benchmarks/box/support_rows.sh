#!/usr/bin/env bash
# GPU box runner for issues #12 and #13 on a machine of 2 GPUs (start it with launch.sh, MPS=1), in the order
# that keeps the most important rows when the machine is taken back before the end:
#   A. the #12 comparison: METHODS_A (default "semsplat-baseline semsplat") as concurrent
#      semsplat-batch runs, each on its own copy of the SCENES (one scene per GPU, so each GPU trains one scene of
#      every method at once); ns-train makes the prior's pseudo labels itself where a method needs them
#      (--pseudo-backend none), as `ns-train semsplat --data X` does for a user;
#   C. semsplat-fast alone on each GPU (fresh copies: its own prior, on 192-pixel crops), rows with end_to_end_s;
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
source benchmarks/box/lib.sh

say "A: ${methods[*]} at once over ${scenes[*]} ($steps steps)"
cores=$(nproc)
per_scene=$(( cores / (${#methods[@]} * ${#scenes[@]}) ))
[ "$per_scene" -ge 1 ] || per_scene=1
for m in "${methods[@]}"; do
  method_batch "$m" "$m" "$per_scene" "$steps" &
  sleep 20  # the Dask clusters start one after another
done
wait
for m in "${methods[@]}"; do
  others=()
  for o in "${methods[@]}"; do [ "$o" = "$m" ] || others+=("$work/batch/$o"); done
  rows "$m" "$m" semsplat_prior.json "${others[@]}"
done

say "C: semsplat-fast alone on each GPU"
alone_threads=$(( cores / ${#scenes[@]} ))
fast_batch fast "$alone_threads"
rows fast semsplat-fast semsplat_fast.json

say "D: semsplat alone on each GPU"
method_batch alone semsplat "$alone_threads" "$steps"
rows alone semsplat semsplat_prior.json
say "runner done"
touch $work/done
