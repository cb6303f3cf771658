#!/usr/bin/env bash
# GPU box runner (start it with launch.sh): for each METHOD, one semsplat-batch run over the SCENES (one Dask
# worker per GPU, scenes queued for free GPUs; pseudo labels -> training -> evaluation -> prediction each), then
# benchmarks/batch_rows.py turns its records into rows of RESULTS_NAME in /tmp/work/results.
#   bash benchmarks/box/batch_rows.sh "townA townB" "semsplat semsplat-paper semsplat-baseline" 30000 semsplat_prior.json
# METHOD is a key of benchmarks/methods.py METHODS (the semsplat preset plus its flags and pseudo-label backend).
# Methods run one after another: they differ in the pseudo labels written into the scene folders.
set -u
# WORK, SCENES (the scene folders' parent) and DEVICE (cuda) may be set for a smoke run off the box.
work=${WORK:-/tmp/work}
mkdir -p $work/results $work/batch
read -r -a scenes <<< "$1"
read -r -a methods <<< "$2"
steps=${3:-30000}
results=${4:-semsplat_batch_rows.json}
say() { echo "$(date +%T) $*" >> $work/status.txt; }
paths=()
for s in "${scenes[@]}"; do paths+=("${SCENES:-.scenes}/$s"); done
for m in "${methods[@]}"; do
  backend=$(python -m benchmarks.methods backend "$m") || { say "$m: unknown method"; continue; }
  mapfile -t flags < <(python -m benchmarks.methods flags "$m" "$steps")
  [ ${#flags[@]} -gt 0 ] || { say "$m: no flags"; continue; }
  say "batch $m ($steps steps, pseudo labels: $backend) over ${scenes[*]}"
  start=$SECONDS
  semsplat-batch "${paths[@]}" --preset semsplat --pseudo-backend "$backend" --device "${DEVICE:-cuda}" \
    --max-num-iterations "$steps" --output-dir "$work/batch/$m" --dashboard-address :0 -- "${flags[@]}" \
    > "$work/batch_$m.log" 2>&1
  say "batch $m rc $? $((SECONDS - start)) s"
  python -m benchmarks.batch_rows --batch "$work/batch/$m" --out "$work/results/$results" >> "$work/batch_$m.log" 2>&1
  say "rows $m rc $?"
done
# SKIP_DONE: a runner that calls this one says when it is done.
[ -n "${SKIP_DONE:-}" ] || { say "runner done"; touch $work/done; }
