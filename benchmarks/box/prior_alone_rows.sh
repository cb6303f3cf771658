#!/usr/bin/env bash
# GPU box runner for issue #12's prior rows: benchmarks/prior.py (the prior backend as a user runs it, then the
# prior ALONE scored on the test views, per-class IoU included) on each scene at once, scene k on GPU k; with
# the scenes' full labels in $GT/<scene> (measuring only) the rows also score the fused pseudo labels.
# Rows: /tmp/work/results/prior_<scene>.json (one file per scene: the runs write at once).
#   bash benchmarks/box/launch.sh benchmarks/box/prior_alone_rows.sh "townA townB"
# NO_DONE=1 leaves $work/done to the runner that called this one.
set -u
work=${WORK:-/tmp/work}
mkdir -p $work/results
read -r -a scenes <<< "${1:-townA townB}"
source benchmarks/box/lib.sh
gpus=$(nvidia-smi -L | wc -l)
# The runs share the CPU: each gets its share of the cores (torch's threads, the depth stage's workers). With
# every core each, two runs at once on 64 cores had not finished reprojecting after 15 minutes (6 s alone).
export OMP_NUM_THREADS=$(( $(nproc) / ${#scenes[@]} ))
k=0
for s in "${scenes[@]}"; do
  report=()
  [ -d "${GT:-}/$s" ] && report=(--report "$GT/$s")
  CUDA_VISIBLE_DEVICES=$((k % gpus)) timeout ${PRIOR_TIMEOUT:-600} python -m benchmarks.prior --scene "${SCENES:-.scenes}/$s" \
    --out "$work/results/prior_$s.json" "${report[@]}" > "$work/prior_$s.log" 2>&1 &
  k=$((k + 1))
done
wait
say "prior rows done: $(cd $work/results && ls prior_*.json 2>/dev/null | tr '\n' ' ')"
[ -n "${NO_DONE:-}" ] || { say "runner done"; touch $work/done; }
