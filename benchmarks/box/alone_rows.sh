#!/usr/bin/env bash
# GPU box runner for issue #13's rows: each PRESET (registered ns-train methods, default "semsplat semsplat-fast")
# trains SCENES (default "townA townB") one scene at a time on GPU 0 with nothing else on the machine (one
# semsplat-batch worker, every CPU core its own), making its pseudo labels inside ns-train as a user's run does.
# Rows (with end_to_end_s and stage times) go to /tmp/work/results/semsplat_alone.json, one per (scene, preset);
# then each trained run's label path is timed against the general render it replaced
# (python -m semsplat_ns.eval.label_path_timing), alone too, into /tmp/work/results/label_path_timing_<preset>_<scene>.json.
#   bash benchmarks/box/launch.sh benchmarks/box/alone_rows.sh "townA townB" "semsplat semsplat-fast"
set -u
work=${WORK:-/tmp/work}
mkdir -p $work/results $work/batch $work/scenes
read -r -a scenes <<< "${1:-townA townB}"
read -r -a presets <<< "${2:-semsplat semsplat-fast}"
source benchmarks/box/lib.sh
export CUDA_VISIBLE_DEVICES=${ALONE_GPU:-0}
steps=$(python -c 'from semsplat_ns.schedule import PRESET_STEPS; print(PRESET_STEPS)' | tail -n 1)
for preset in "${presets[@]}"; do
  n=$steps
  [ "$preset" = semsplat-30k ] && n=30000
  say "$preset alone on GPU $CUDA_VISIBLE_DEVICES: ${scenes[*]} ($n steps)"
  fresh_copies "$preset"
  batch "$preset" "$preset" "$(nproc)" "$n" --steps-per-save "$n" --steps-per-eval-image $((10 * n))
  rows "$preset" "$preset" semsplat_alone.json
  for s in "${scenes[@]}"; do
    config=$(find "$work/batch/$preset/$s/train" -name config.yml | head -n 1)
    [ -n "$config" ] || { say "$preset $s: no trained run to time"; continue; }
    python -m semsplat_ns.eval.label_path_timing --load-config "$config" --repeats 3 \
      > "$work/results/label_path_timing_${preset}_$s.json" 2>> "$work/batch_$preset.log"
    say "label path timing $preset $s rc $?"
  done
done
say "runner done"
touch $work/done
