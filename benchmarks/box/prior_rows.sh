#!/usr/bin/env bash
# GPU box runner, issue #12 rows (start it with launch.sh): the semsplat methods as semsplat-batch runs
# (batch_rows.sh: prior pseudo labels -> training -> evaluation per scene, one Dask worker per GPU), rows in
# /tmp/work/results/semsplat_prior.json; then the Unet rows (results/unet.json) unless SKIP_UNET is set.
#   bash benchmarks/box/launch.sh benchmarks/box/prior_rows.sh "townA townB" "semsplat semsplat-no-support" 30000
set -u
work=/tmp/work
say() { echo "$(date +%T) $*" >> $work/status.txt; }
SKIP_DONE=1 bash benchmarks/box/batch_rows.sh "$1" "$2" "${3:-30000}" semsplat_prior.json
if [ -z "${SKIP_UNET:-}" ]; then
  read -r -a scenes <<< "$1"
  unet_args=()
  for s in "${scenes[@]}"; do unet_args+=(--data ".scenes/$s"); done
  CUDA_VISIBLE_DEVICES=0 python -m benchmarks.baselines.unet "${unet_args[@]}" --out $work/results/unet.json \
    > $work/unet.log 2>&1
  say "unet rc $?"
fi
say "runner done"
touch $work/done
