#!/usr/bin/env bash
# GPU box: train two (scene, method) rows concurrently in the foreground; rows and logs go to $OUT.
#   bash benchmarks/box/run_pair.sh STEPS SCENE:METHOD SCENE:METHOD
# Outputs live under /tmp/work: the repo copy on the box is re-synced at every call.
source benchmarks/box/env.sh || exit 1
steps=$1; shift
mkdir -p /tmp/work
pids=()
for job in "$@"; do
  scene=${job%%:*}; method=${job##*:}
  python benchmarks/bench_semsplat.py --scene .scenes/$scene --method $method --steps $steps \
    --out $OUT/${method}_${scene}.json --output-dir /tmp/work/outputs > $OUT/${method}_${scene}.log 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
for f in $OUT/*.log; do echo "== $f"; grep -v -i warn "$f" | grep -E "miou|Error|error" | tail -4; done
