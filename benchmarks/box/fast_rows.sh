#!/usr/bin/env bash
# GPU box runner: semsplat-fast on SCENES (default "townA townB"), one semsplat-batch with one worker per GPU, so on
# a machine of one GPU the scenes train one after another, each alone on the machine (issue #13's rows, with
# end_to_end_s). Start it with launch.sh; rows go to /tmp/work/results/semsplat_fast.json.
#   bash benchmarks/box/launch.sh benchmarks/box/fast_rows.sh "townA townB"
set -u
work=${WORK:-/tmp/work}
mkdir -p $work/results $work/batch $work/scenes
read -r -a scenes <<< "${1:-townA townB}"
source benchmarks/box/lib.sh
say "C: semsplat-fast on ${scenes[*]}"
fast_batch fast "$(nproc)"
rows fast semsplat-fast semsplat_fast.json
say "runner done"
touch $work/done
