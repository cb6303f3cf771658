#!/usr/bin/env bash
# GPU box runner for issue #15's semsplat-batch row (start it with launch.sh on a machine with 2 or 4 GPUs):
# the first SCENE alone on GPU 0 (the reference), then every SCENE on every GPU, both with METHOD's settings;
# benchmarks/batch_rows.py writes the scenes' rows and the row of method semsplat-batch (n_scenes, n_gpus,
# speedup_ratio = batch wall / reference wall) to /tmp/work/results/semsplat_batch.json.
#   bash benchmarks/box/speedup_row.sh "townA townB townC townD" semsplat 30000
set -u
# WORK, SCENES (the scene folders' parent) and DEVICE (cuda) may be set for a smoke run off the box.
work=${WORK:-/tmp/work}
mkdir -p $work/results $work/speedup
read -r -a scenes <<< "$1"
method=${2:-semsplat}
steps=${3:-30000}
say() { echo "$(date +%T) $*" >> $work/status.txt; }
paths=()
for s in "${scenes[@]}"; do paths+=("${SCENES:-.scenes}/$s"); done
backend=$(python -m benchmarks.methods backend "$method") || { say "$method: unknown method"; touch $work/done; exit 2; }
mapfile -t flags < <(python -m benchmarks.methods flags "$method" "$steps")
[ ${#flags[@]} -gt 0 ] || { say "$method: no flags"; touch $work/done; exit 2; }
run() {  # run NAME SCENE...: one semsplat-batch run into $work/speedup/NAME
  local name=$1; shift
  local start=$SECONDS
  semsplat-batch "$@" --preset semsplat --pseudo-backend "$backend" --device "${DEVICE:-cuda}" \
    --max-num-iterations "$steps" --output-dir "$work/speedup/$name" --dashboard-address :0 -- "${flags[@]}" \
    > "$work/speedup_$name.log" 2>&1
  say "$name rc $? $((SECONDS - start)) s"
}
say "reference: ${scenes[0]} alone on GPU 0 ($method, $steps steps)"
CUDA_VISIBLE_DEVICES=0 run alone "${paths[0]}"
say "batch: ${scenes[*]} on $(nvidia-smi -L | wc -l) GPUs"
run batch "${paths[@]}"
python -m benchmarks.batch_rows --batch $work/speedup/batch --reference $work/speedup/alone \
  --out $work/results/semsplat_batch.json >> $work/speedup_batch.log 2>&1
say "rows rc $?"
say "runner done"
touch $work/done
